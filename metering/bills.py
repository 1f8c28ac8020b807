"""Bills: events of one payer, issuer and period rated into lines, each rounded to the fen; sealed by a hash."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Any

from metering.canonical import canonical_sha256, utc_text
from metering.errors import InvalidPricing
from metering.events import UsageEvent, dedupe
from metering.meters import METERS, PurposeClass, Relation
from metering.money import CURRENCY, RATING, ZERO, Vat, fen_text, text, to_fen
from metering.periods import Period
from metering.rating import LineKey, LineKind, Pricing, Prior, Rater, exact_amount

MAX_EVIDENCE_ITEMS = 5
PUBLIC_INTEREST = PurposeClass.PUBLIC_INTEREST.value


@dataclass(frozen=True)
class BillLine:
    """One line: a meter (per dataset or product), its quantity, unit price, cap and amount in fen.

    `event_count` and `events_sha256` (SHA-256 of the sorted event ids, one per line) say exactly which events
    the line sums; `evidence` says why a line is free or not charged.
    """

    line_no: int
    kind: str
    event_period: str
    meter: str
    unit: str
    dataset_id: str | None
    product_id: str | None
    entry_id: str | None
    segment: str
    purpose_class: str
    outcome: str
    quantity: Decimal
    base_quantity: int
    unit_price: Decimal
    cap: Decimal | None
    amount: Decimal
    event_count: int
    events_sha256: str
    schedule: str
    evidence: str

    @property
    def divisor(self) -> int:
        return METERS[self.meter].divisor

    def record(self) -> dict[str, Any]:
        """The line as canonical JSON-able values (decimals as text)."""
        return {
            "line_no": self.line_no, "kind": self.kind, "event_period": self.event_period, "meter": self.meter,
            "unit": self.unit, "dataset_id": self.dataset_id, "product_id": self.product_id,
            "entry_id": self.entry_id, "segment": self.segment, "purpose_class": self.purpose_class,
            "outcome": self.outcome, "quantity": text(self.quantity), "base_quantity": self.base_quantity,
            "unit_price": text(self.unit_price), "cap": None if self.cap is None else text(self.cap),
            "amount": fen_text(self.amount), "event_count": self.event_count,
            "events_sha256": self.events_sha256, "schedule": self.schedule, "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Bill:
    """A payer's bill from one issuer for one period, as of an ingestion cut-off."""

    payer_org_id: str
    issuer_org_id: str
    relation: str
    period: str
    as_of: datetime
    vat: Vat
    lines: tuple[BillLine, ...]
    event_ids: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @property
    def total(self) -> Decimal:
        """Σ line amounts (each already rounded to the fen)."""
        return sum((line.amount for line in self.lines), ZERO)

    @property
    def vat_amount(self) -> Decimal:
        return self.vat.part(self.total)

    @property
    def gross(self) -> Decimal:
        return self.vat.gross(self.total)

    def record(self) -> dict[str, Any]:
        """The bill's content as canonical JSON-able values: what its hash covers."""
        return {
            "payer_org_id": self.payer_org_id, "issuer_org_id": self.issuer_org_id, "relation": self.relation,
            "period": self.period, "as_of": utc_text(self.as_of),
            "currency": CURRENCY, "vat_included": self.vat.included, "vat_rate": text(self.vat.rate),
            "total": fen_text(self.total), "vat_amount": fen_text(self.vat_amount), "gross": fen_text(self.gross),
            "lines": [line.record() for line in self.lines],
        }

    def sha256(self) -> str:
        """SHA-256 of the canonical content: two builds from the same events and schedules hash alike."""
        return canonical_sha256(self.record())


def ids_sha256(ids: Sequence[str]) -> str:
    """SHA-256 of event ids, sorted, one per line."""
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


def seal(bill: Bill, *, bill_id: str, finalized_at: datetime, finalized_by: str,
         attributions: Iterable[Mapping[str, Any]]) -> str:
    """The hash of a finalized bill: its content, identity, finalization and revenue attribution."""
    return canonical_sha256({"bill_id": bill_id, "content": bill.record(), "finalized_by": finalized_by,
                             "finalized_at": utc_text(finalized_at),
                             "attribution": sorted((dict(a) for a in attributions),
                                                   key=lambda a: (a["line_no"], str(a["dataset_id"])))})


def ordered(events: Iterable[UsageEvent]) -> list[UsageEvent]:
    """Events sorted by id, once each (replays dropped, conflicting replays refused)."""
    out = events if isinstance(events, list) else list(events)
    for a, b in itertools.pairwise(out):
        if not a.id < b.id:
            return dedupe(out)
    return out


class _Line:
    __slots__ = ("extras", "groups", "qty")

    def __init__(self) -> None:
        self.qty = 0
        self.groups: list[list[str]] = []
        self.extras: set[str] | None = None


_GroupKey = tuple[int, str, str, str, str, tuple[str, ...], tuple[str, ...]]


class _Group:
    """Platform events alike in everything that decides their lines: summed first, then spread onto lines."""

    __slots__ = ("datasets", "dsums", "extras", "ids", "meters", "sums")

    def __init__(self, datasets: tuple[str, ...], meters: tuple[str, ...]) -> None:
        self.ids: list[str] = []
        self.meters = meters
        self.sums = [0] * len(meters)
        self.datasets = datasets
        self.dsums = [[0, 0] for _ in datasets]
        self.extras: set[str] | None = None


def _platform_groups(evs: list[UsageEvent], rater: Rater, pricing: Pricing, period: Period
                     ) -> dict[_GroupKey, _Group]:
    """Sum platform events by schedule version, purpose class, outcome, line kind, own period, datasets, meters."""
    tz = pricing.tz
    p_lo, p_hi, p_text = period.start(tz), period.end(tz), str(period)
    timeline = pricing.platform
    s_idx, s_lo, s_hi = -2, None, None
    groups: dict[_GroupKey, _Group] = {}
    for e in evs:
        t = e.event_time
        if e.reverses is not None:
            kind, own = LineKind.REVERSAL, rater.months.month_text(t)[1]
        elif p_lo <= t < p_hi:
            kind, own = LineKind.USAGE, p_text
        else:
            kind, own = LineKind.ADJUSTMENT, rater.months.month_text(t)[1]
        if s_idx == -2 or (s_lo is not None and t < s_lo) or (s_hi is not None and t >= s_hi):
            s_idx, s_lo, s_hi = timeline.span_at(t)
        ds = e.datasets
        qs = e.quantities
        gk = (s_idx, e.purpose_class, e.outcome, kind, own, tuple([d.dataset_id for d in ds]),
              tuple([m for m, _ in qs]))
        g = groups.get(gk)
        if g is None:
            g = groups[gk] = _Group(gk[5], gk[6])
        g.ids.append(e.id)
        sums = g.sums
        for i, (_, q) in enumerate(qs):
            sums[i] += q
        if ds:
            for acc, d in zip(g.dsums, ds, strict=True):
                acc[0] += d.rows
                acc[1] += d.bytes
        if e.purpose_class == PUBLIC_INTEREST or e.reverses is not None:
            if g.extras is None:
                g.extras = set()
            _extras(g.extras, e)
    return groups


def _spread(groups: dict[_GroupKey, _Group], rater: Rater, pricing: Pricing,
            lines: dict[LineKey, _Line]) -> None:
    """Put each group's sums on its lines (one per platform meter; scan meters one per dataset)."""
    versions = pricing.platform.versions
    for (idx, purpose, outcome, kind, own, _, _), g in groups.items():
        sched = versions[idx] if idx >= 0 else None
        parts: list[tuple[str, str | None, int]] = []
        for meter, total in sorted(zip(g.meters, g.sums, strict=True)):
            if METERS[meter].per_dataset:
                col = 0 if meter == "rows_scanned" else 1
                parts += [(meter, d, g.dsums[i][col]) for i, d in enumerate(g.datasets)]
            else:
                parts.append((meter, None, total))
        for meter, dataset, q in parts:
            key = rater.platform_key(purpose, outcome, meter, dataset, kind, own, sched)
            line = lines.get(key)
            if line is None:
                line = lines[key] = _Line()
            line.qty += q
            line.groups.append(g.ids)
            if g.extras:
                line.extras = (line.extras or set()) | g.extras


def build_bill(events: Iterable[UsageEvent], *, payer_org_id: str, issuer_org_id: str, relation: str,
               period: Period, as_of: datetime, pricing: Pricing, vat: Vat,
               priors: Mapping[tuple[str, str], Prior] | None = None) -> Bill:
    """Rate every event against the schedule in force at its time and sum them into lines.

    Deterministic: the same events (in any order, with any replays) and schedules give the same lines. Each line
    is priced once, at full precision, and rounded to the fen with ROUND_HALF_UP.
    """
    evs = ordered(events)
    rel = Relation(relation)
    for e in evs:
        if e.payer_org_id != payer_org_id or e.issuer_org_id != issuer_org_id or e.relation != relation:
            raise InvalidPricing(f"event {e.id} belongs to another bill (payer {e.payer_org_id}, issuer "
                                 f"{e.issuer_org_id}, {e.relation})", code="event_not_on_bill", event_id=e.id)
    rater = Rater(pricing, period, priors)
    lines: dict[LineKey, _Line] = {}
    if rel == Relation.PLATFORM:
        _spread(_platform_groups(evs, rater, pricing, period), rater, pricing, lines)
    else:
        for e in evs:
            for key, q in rater.product(e):
                _add(lines, key, q, e)
    for e, key, q in rater.tiered():
        _add(lines, key, q, e)
    out = []
    digests: dict[tuple[int, ...], tuple[int, str]] = {}
    with localcontext(RATING):
        for no, key in enumerate(sorted(lines, key=LineKey.sort_key), start=1):
            line = lines[key]
            count, digest = _digest(line.groups, digests)
            out.append(BillLine(
                line_no=no, kind=key.kind, event_period=key.event_period, meter=key.meter, unit=key.unit,
                dataset_id=key.dataset_id, product_id=key.product_id, entry_id=key.entry_id, segment=key.segment,
                purpose_class=key.purpose_class, outcome=key.outcome,
                quantity=Decimal(line.qty) / key.divisor, base_quantity=line.qty, unit_price=key.unit_price,
                cap=key.cap, amount=to_fen(exact_amount(key, line.qty)), event_count=count,
                events_sha256=digest, schedule=key.schedule, evidence=_evidence(key, line.extras)))
    return Bill(payer_org_id=payer_org_id, issuer_org_id=issuer_org_id, relation=rel.value, period=str(period),
                as_of=as_of, vat=vat, lines=tuple(out), event_ids=tuple(e.id for e in evs))


def _add(lines: dict[LineKey, _Line], key: LineKey, q: int, e: UsageEvent) -> None:
    line = lines.get(key)
    if line is None:
        line = lines[key] = _Line()
    line.qty += q
    line.groups.append([e.id])
    if e.free or e.reverses is not None:
        if line.extras is None:
            line.extras = set()
        _extras(line.extras, e)


def _digest(groups: list[list[str]], cache: dict[tuple[int, ...], tuple[int, str]]) -> tuple[int, str]:
    """(distinct events, SHA-256 of their sorted ids) of a line made of id lists; lines sharing lists share it."""
    ident = tuple(id(g) for g in groups)
    hit = cache.get(ident)
    if hit is None:
        if len(groups) == 1:
            ids = groups[0]
        else:
            ids = sorted(set().union(*groups)) if len(groups) < 64 else sorted(set(i for g in groups for i in g))
        hit = cache[ident] = (len(ids), ids_sha256(ids))
    return hit


def _extras(extras: set[str], e: UsageEvent) -> None:
    if e.reverses is not None:
        extras.add(f"reverses {e.reverses}: {e.reason}")
    if e.free:
        extras.add(e.evidence())


def _evidence(key: LineKey, extras: set[str] | None) -> str:
    parts = [key.note] if key.note else []
    if key.kind == LineKind.REVERSAL:
        parts.append("correction appended by reversal events")
    if extras:
        items = sorted(extras)
        shown = "; ".join(items[:MAX_EVIDENCE_ITEMS])
        more = len(items) - MAX_EVIDENCE_ITEMS
        parts.append(shown + (f"; and {more} more" if more > 0 else ""))
    if key.purpose_class == PurposeClass.PUBLIC_INTEREST and not extras:
        parts.append("public-interest use")
    return " — ".join(parts)


def match_key(key: LineKey) -> tuple[object, ...]:
    """What identifies a line among a bill's lines (its rating key without the evidence note)."""
    return tuple(key[:-1])


def line_match_key(line: BillLine) -> tuple[object, ...]:
    """The `match_key` a stored line stands for, to match recomputed events to it."""
    return (line.kind, line.event_period, line.meter, line.dataset_id, line.product_id, line.entry_id,
            line.segment, line.purpose_class, line.outcome, line.unit, line.divisor, line.unit_price, line.cap,
            line.schedule)
