"""Reconciliation: each bill line against its events, rated one by one at full precision, to the fen."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from metering.bills import BillLine, ids_sha256, line_match_key, match_key, ordered
from metering.events import UsageEvent
from metering.money import RATING, ZERO, fen_text, text, to_fen
from metering.periods import Period
from metering.rating import Pricing, Prior, Rater, exact_amount


@dataclass(frozen=True)
class Difference:
    """One disagreement between a stored line and its events."""

    bill: str
    line_no: int | None
    check: str
    expected: str
    found: str

    def __str__(self) -> str:
        where = f"{self.bill} line {self.line_no}" if self.line_no is not None else self.bill
        return f"{where}: {self.check} expected {self.expected}, found {self.found}"


@dataclass
class _Expected:
    base: int = 0
    amount: Decimal = ZERO
    ids: list[str] | None = None


def reconcile_lines(bill: str, lines: Sequence[BillLine], events: Iterable[UsageEvent], *, pricing: Pricing,
                    period: Period, priors: Mapping[tuple[str, str], Prior] | None = None,
                    total: Decimal | None = None) -> list[Difference]:
    """Check, per line: Σ line quantity = Σ event quantities, amount = ROUND_HALF_UP(Σ events rated at full
    precision) to the fen, and the event count and digest; every event is on a line and every line has events.

    This path rates each event on its own (the bill builder aggregates first), so the two must agree.
    """
    expected: dict[tuple[object, ...], _Expected] = {}
    rater = Rater(pricing, period, priors)
    with localcontext(RATING):
        for event, key, q in rater.contributions(ordered(events)):
            x = expected.get(match_key(key))
            if x is None:
                x = expected[match_key(key)] = _Expected(ids=[])
            x.base += q
            x.amount += exact_amount(key, q)
            assert x.ids is not None
            x.ids.append(event.id)
    out: list[Difference] = []
    stored: dict[tuple[object, ...], BillLine] = {}
    for line in lines:
        k = line_match_key(line)
        if k in stored:
            out.append(Difference(bill, line.line_no, "line identity", "one line per meter and price",
                                  f"same as line {stored[k].line_no}"))
        stored[k] = line
        x = expected.get(k)
        if x is None:
            out.append(Difference(bill, line.line_no, "events", "events behind the line", "none"))
            continue
        ids = sorted(set(x.ids or ()))
        with localcontext(RATING):
            quantity = Decimal(x.base) / line.divisor
        checks = [
            ("base quantity", str(x.base), str(line.base_quantity)),
            ("quantity", text(quantity), text(line.quantity)),
            ("amount", fen_text(to_fen(x.amount)), fen_text(line.amount)),
            ("event count", str(len(ids)), str(line.event_count)),
            ("events digest", ids_sha256(ids), line.events_sha256),
        ]
        if line.amount != to_fen(line.amount):
            checks.append(("amount rounded to the fen", fen_text(line.amount), str(line.amount)))
        out += [Difference(bill, line.line_no, name, want, got) for name, want, got in checks if want != got]
    for k, x in expected.items():
        if k not in stored:
            out.append(Difference(bill, None, f"line for {k[2]} {k[3] or k[4] or ''}".strip(), "a line",
                                  f"{len(set(x.ids or ()))} events on no line"))
    if total is not None:
        line_sum = sum((line.amount for line in lines), ZERO)
        if line_sum != total:
            out.append(Difference(bill, None, "total", fen_text(line_sum), fen_text(total)))
    return out
