"""Revenue attribution (谁投入、谁贡献、谁收益): every line's amount split over the datasets that produced it.

The rule (docs/metering.md), deterministic and exact to the fen:
- a line per dataset (rows or bytes scanned) goes wholly to that dataset;
- any other line is split over its events in proportion to their quantity on the line, and each event over
  its datasets by the rows it read from each (a run: rows scanned per dataset; a product call: the rows its
  datasets contributed) or, when it read no rows, equally over its datasets;
- the exact shares are rounded to the fen by largest remainder (ties to the smaller dataset id), so the
  attributed amounts always add up to the line; events with no dataset leave their share `unattributed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from metering.bills import BillLine, line_match_key, match_key, ordered
from metering.events import DatasetUse, UsageEvent
from metering.money import FEN
from metering.periods import Period
from metering.rating import Pricing, Prior, Rater

UNATTRIBUTED = None


@dataclass(frozen=True)
class Share:
    """The part of one line's amount attributed to one dataset (None: no dataset known)."""

    line_no: int
    dataset_id: str | None
    amount: Decimal


def _weights(datasets: tuple[DatasetUse, ...]) -> dict[str | None, Fraction]:
    if not datasets:
        return {UNATTRIBUTED: Fraction(1)}
    rows = {d.dataset_id: abs(d.rows) for d in datasets}
    total = sum(rows.values())
    if total:
        return {k: Fraction(v, total) for k, v in rows.items() if v}
    return {d.dataset_id: Fraction(1, len(datasets)) for d in datasets}


def split_to_fen(amount: Decimal, weights: Mapping[str | None, Fraction]) -> dict[str | None, Decimal]:
    """Split `amount` (whole fen) by `weights`, exactly: floors, then the leftover fen by largest remainder."""
    fen = int(amount * 100)
    if Decimal(fen) != amount * 100:
        raise ValueError(f"{amount} is not a whole number of fen")
    wsum = sum(weights.values(), Fraction(0))
    if fen == 0 or wsum == 0:
        return {}
    sign, n = (-1 if fen < 0 else 1), abs(fen)
    exact = {k: n * w / wsum for k, w in weights.items()}
    floors = {k: v.numerator // v.denominator for k, v in exact.items()}
    left = n - sum(floors.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - floors[k]), "" if k is None else k))[:left]:
        floors[k] += 1
    return {k: (Decimal(sign * v) / 100).quantize(FEN) for k, v in floors.items() if v}


def attribute(lines: Sequence[BillLine], events: Iterable[UsageEvent], *, pricing: Pricing, period: Period,
              priors: Mapping[tuple[str, str], Prior] | None = None) -> list[Share]:
    """Every line's amount attributed to datasets; per line the shares add up to the line amount exactly."""
    by_line = {line_match_key(line): line for line in lines}
    # per line: datasets read (as a hashable signature) -> quantity of the line's events with that signature
    mix: dict[tuple[object, ...], dict[tuple[DatasetUse, ...], int]] = {}
    rater = Rater(pricing, period, priors)
    for event, key, q in rater.contributions(ordered(events)):
        k = match_key(key)
        line = by_line.get(k)
        if line is None or line.amount == 0 or line.dataset_id is not None:
            continue
        sig = tuple(sorted(event.datasets, key=lambda d: d.dataset_id))
        per = mix.setdefault(k, {})
        per[sig] = per.get(sig, 0) + abs(q)
    out: list[Share] = []
    for line in lines:
        if line.amount == 0:
            continue
        if line.dataset_id is not None:
            out.append(Share(line.line_no, line.dataset_id, line.amount))
            continue
        weights: dict[str | None, Fraction] = {}
        for sig, qty in sorted(mix.get(line_match_key(line), {}).items(), key=lambda x: repr(x[0])):
            for ds, w in _weights(sig).items():
                weights[ds] = weights.get(ds, Fraction(0)) + qty * w
        if not weights:
            weights = {UNATTRIBUTED: Fraction(1)}
        for ds, amount in sorted(split_to_fen(line.amount, weights).items(), key=lambda x: x[0] or ""):
            out.append(Share(line.line_no, ds, amount))
    return out


def totals(shares: Iterable[tuple[str | None, str | None, Decimal]]) -> dict[str, dict[str, Decimal]]:
    """Sum (provider, dataset, amount) triples per provider and per dataset."""
    providers: dict[str, Decimal] = {}
    datasets: dict[str, Decimal] = {}
    for provider, dataset, amount in shares:
        p, d = provider or "unattributed", dataset or "unattributed"
        providers[p] = providers.get(p, Decimal(0)) + amount
        datasets[d] = datasets.get(d, Decimal(0)) + amount
    return {"providers": dict(sorted(providers.items())), "datasets": dict(sorted(datasets.items()))}
