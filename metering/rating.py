"""Rating: which bill line each event's quantities go to, and at which unit price, under the schedules in force.

One `Rater` maps an event to (line key, base quantity) pairs. The bill builder aggregates those pairs and prices
each line once; reconciliation prices every pair on its own and sums. Both must agree to the fen.

Rules (docs/metering.md):
- the schedule (platform fees; an entry's price and the cap) in force at the event's time applies;
- public-interest use is free, with the grant or approval as evidence; failed, refused and timed-out accesses
  are recorded at price 0 and never charged;
- a product price is never charged above the cap in force (a lowered cap suspends the price; anything metered
  meanwhile is charged at most the cap);
- tiered and packaged entries count usage per payer, entry and period, in event-time order: a package's
  prepaid quantity first (price 0 once the package is bought), then the tiers; reversals remove usage from the
  top of that order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from decimal import Decimal, localcontext
from typing import NamedTuple

from metering.events import EventKind, UsageEvent
from metering.meters import METER_ORDER, METERS, Outcome, PurposeClass, Relation
from metering.money import RATING, ZERO, text
from metering.periods import Period, PeriodIndex
from metering.schedules import CapSchedule, PlatformSchedule, PriceEntry, Timeline


class LineKind:
    USAGE = "usage"
    ADJUSTMENT = "adjustment"
    REVERSAL = "reversal"


LINE_KIND_ORDER = {LineKind.USAGE: 0, LineKind.ADJUSTMENT: 1, LineKind.REVERSAL: 2}


class LineKey(NamedTuple):
    """Everything that makes events share a bill line; equal keys are priced identically."""

    kind: str
    event_period: str
    meter: str
    dataset_id: str | None
    product_id: str | None
    entry_id: str | None
    segment: str
    purpose_class: str
    outcome: str
    unit: str
    divisor: int
    unit_price: Decimal
    cap: Decimal | None
    schedule: str
    note: str

    def sort_key(self) -> tuple[object, ...]:
        return (LINE_KIND_ORDER[self.kind], self.event_period, self.entry_id or "", self.meter != "packages",
                METER_ORDER.get(self.meter, len(METER_ORDER)), self.dataset_id or "", self.product_id or "",
                self.segment, self.purpose_class, self.outcome, self.unit_price, self.schedule, self.unit,
                "" if self.cap is None else str(self.cap), self.note)


@dataclass(frozen=True)
class Pricing:
    """Every schedule rating needs, for one issuer, plus the billing time zone."""

    platform: Timeline[PlatformSchedule]
    caps: Timeline[CapSchedule]
    entries: Mapping[str, Timeline[PriceEntry]]
    tz: tzinfo


@dataclass(frozen=True)
class Prior:
    """A tiered or packaged entry's usage already on final bills for one period (base units)."""

    used: int = 0
    allowance: int = 0


@dataclass
class _Position:
    used: int
    allowance: int
    usage: list[tuple[UsageEvent, PriceEntry, int]] = field(default_factory=list)
    reversals: list[tuple[UsageEvent, PriceEntry, int]] = field(default_factory=list)


def exact_amount(key: LineKey, base_quantity: int) -> Decimal:
    """`base_quantity` priced at the line's unit price, at full precision (no rounding)."""
    if key.unit_price == 0 or base_quantity == 0:
        return ZERO
    with localcontext(RATING):
        return Decimal(base_quantity) * key.unit_price / key.divisor


class Rater:
    """Maps the events of one bill (payer, issuer, period) to line keys and base quantities."""

    def __init__(self, pricing: Pricing, period: Period, priors: Mapping[tuple[str, str], Prior] | None = None
                 ) -> None:
        self.pricing = pricing
        self.period = period
        self.period_text = str(period)
        self.months = PeriodIndex(pricing.tz)
        self.priors = dict(priors or {})
        self._platform_cache: dict[tuple[object, ...], dict[tuple[str, str | None], LineKey]] = {}
        self._positions: dict[tuple[str, str], _Position] = {}

    # --- classification -----------------------------------------------------------------------------------

    def line_kind(self, event: UsageEvent) -> tuple[str, str]:
        """(line kind, the event's own period)."""
        own = self.months.month_text(event.event_time)[1]
        if event.kind == EventKind.REVERSAL:
            return LineKind.REVERSAL, own
        return (LineKind.USAGE if own == self.period_text else LineKind.ADJUSTMENT), own

    # --- platform fees ------------------------------------------------------------------------------------

    def platform_key(self, purpose_class: str, outcome: str, meter: str, dataset: str | None, kind: str,
                     period: str, sched: PlatformSchedule | None) -> LineKey:
        """The line of a platform meter for events of one purpose class and outcome under `sched`."""
        m = METERS[meter]
        if sched is None:
            price, label, note = ZERO, "no platform schedule", "no platform fee schedule was in force"
        else:
            price, label, note = sched.rate(meter), f"platform v{sched.version}", ""
            if price == 0:
                note = f"platform fee schedule v{sched.version} sets {meter} at 0"
        if outcome != Outcome.SUCCEEDED:
            price, note = ZERO, f"not charged: {outcome} accesses are recorded, never charged"
        elif purpose_class == PurposeClass.PUBLIC_INTEREST:
            price, note = ZERO, "free: public-interest use"
        return LineKey(kind, period, meter, dataset, None, None, "", purpose_class, outcome, m.unit,
                       m.divisor, price, None, label, note)

    def platform(self, event: UsageEvent) -> Iterator[tuple[LineKey, int]]:
        """Line keys and base quantities of a platform-fee event (every platform meter is a line)."""
        kind, period = self.line_kind(event)
        idx = self.pricing.platform.index_at(event.event_time)
        sig = (idx, event.purpose_class, event.outcome, kind, period)
        keys = self._platform_cache.get(sig)
        if keys is None:
            keys = self._platform_cache[sig] = {}
        sched = self.pricing.platform.versions[idx] if idx >= 0 else None
        for meter, q in event.quantities:
            if METERS[meter].per_dataset:
                for d in event.datasets:
                    key = keys.get((meter, d.dataset_id))
                    if key is None:
                        key = keys[(meter, d.dataset_id)] = self.platform_key(
                            event.purpose_class, event.outcome, meter, d.dataset_id, kind, period, sched)
                    yield key, (d.rows if meter == "rows_scanned" else d.bytes)
            else:
                key = keys.get((meter, None))
                if key is None:
                    key = keys[(meter, None)] = self.platform_key(event.purpose_class, event.outcome, meter, None,
                                                                        kind, period, sched)
                yield key, q

    # --- product fees -------------------------------------------------------------------------------------

    def _entry(self, event: UsageEvent) -> tuple[PriceEntry | None, CapSchedule | None]:
        timeline = self.pricing.entries.get(event.entry_id or "")
        entry = timeline.at(event.event_time) if timeline is not None else None
        return entry, self.pricing.caps.at(event.event_time)

    def _product_key(self, event: UsageEvent, entry: PriceEntry | None, caps: CapSchedule | None, meter: str,
                     kind: str, period: str, price: Decimal, segment: str = "", note: str = "") -> LineKey:
        m = METERS[meter]
        cap = caps.cap_for(entry.basis, entry.category, entry.unit) if (entry and caps) else None
        unit, divisor = m.unit, m.divisor
        if entry is not None and meter != "packages":
            unit = entry.unit
        if meter == "packages" and entry is not None and entry.package is not None:
            unit = f"package of {text(entry.package.quantity)} {entry.unit}"
            if cap is not None:
                with localcontext(RATING):  # as the bill and its reconciliation rate: the same cap in both
                    cap = cap * entry.package.quantity
        if cap is not None and price > cap:
            price, note = cap, (note + "; " if note else "") + "charged at the cap (price suspended)"
        elif cap is None and entry is not None and price > 0:
            price, note = ZERO, "price suspended: no cap in force"
        label = f"price list {entry.entry_id} v{entry.version}" if entry else "no price in force"
        if caps is not None and entry is not None:
            label += f"; caps v{caps.version}"
        if entry is None:
            price, note = ZERO, f"no version of entry {event.entry_id} was in force at the event time"
        if not event.chargeable:
            price, note = ZERO, f"not charged: {event.outcome} accesses are recorded, never charged"
        elif event.free:
            price, note = ZERO, "free: public-interest use"
        return LineKey(kind, period, meter, None, event.product_id, event.entry_id, segment, event.purpose_class,
                       event.outcome, unit, divisor, price, cap, label, note)

    def product(self, event: UsageEvent) -> Iterator[tuple[LineKey, int]]:
        """Line keys of a product-fee event; tiered or packaged usage is deferred to `tiered()`."""
        kind, period = self.line_kind(event)
        entry, caps = self._entry(event)
        if event.kind == EventKind.PACKAGE or (event.kind == EventKind.REVERSAL and event.quantity("packages")):
            q = event.quantity("packages")
            price = entry.package.price if (entry and entry.package) else ZERO
            pos = self._position(event, period)
            if entry is not None and entry.package is not None and event.chargeable and not event.free:
                pos.allowance += q * int(entry.package.quantity * entry.divisor)
            yield self._product_key(event, entry, caps, "packages", kind, period, price), q
            return
        meter = entry.meter if entry else None
        if meter is None or meter == "packages":
            return
        q = event.quantity(meter)
        tiered = entry is not None and (entry.tiers or entry.package is not None)
        if tiered and event.chargeable and not event.free:
            pos = self._position(event, period)
            (pos.reversals if event.kind == EventKind.REVERSAL else pos.usage).append((event, entry, q))  # type: ignore[arg-type]
            return
        yield self._product_key(event, entry, caps, meter, kind, period, entry.unit_price if entry else ZERO), q

    def _position(self, event: UsageEvent, period: str) -> _Position:
        key = (event.entry_id or "", period)
        pos = self._positions.get(key)
        if pos is None:
            prior = self.priors.get(key, Prior())
            pos = self._positions[key] = _Position(prior.used, prior.allowance)
        return pos

    def tiered(self) -> Iterator[tuple[UsageEvent, LineKey, int]]:
        """Tiered and packaged usage, in event-time order per (entry, period), split across package and tiers."""
        for (_, period), pos in sorted(self._positions.items()):
            start = pos.used
            for event, entry, q in sorted(pos.usage, key=lambda x: (x[0].event_time, x[0].id)):
                kind = self.line_kind(event)[0]
                for key, part in self._segments(event, entry, kind, period, start, start + q, pos.allowance):
                    yield event, key, part
                start += q
            end = start
            for event, entry, q in sorted(pos.reversals, key=lambda x: (x[0].event_time, x[0].id)):
                r = -q
                for key, part in self._segments(event, entry, LineKind.REVERSAL, period, end - r, end,
                                                pos.allowance):
                    yield event, key, -part
                end -= r
            pos.usage.clear()
            pos.reversals.clear()

    def _segments(self, event: UsageEvent, entry: PriceEntry, kind: str, period: str, lo: int, hi: int,
                  allowance: int) -> Iterator[tuple[LineKey, int]]:
        """Split positions [lo, hi) into the prepaid package, then each tier."""
        caps = self.pricing.caps.at(event.event_time)
        if lo < allowance:
            covered = min(hi, allowance) - lo
            if covered:
                yield self._product_key(event, entry, caps, entry.meter, kind, period, ZERO, "package",
                                        "within the prepaid package"), covered
            lo = min(hi, allowance)
        floor = allowance
        for i, tier in enumerate(entry.tier_table()):
            top = allowance + int(tier.up_to * entry.divisor) if tier.up_to is not None else None
            a, b = max(lo, floor), (hi if top is None else min(hi, top))
            if b > a:
                label = f"tier {i + 1}" if entry.tiers else ""
                yield self._product_key(event, entry, caps, entry.meter, kind, period, tier.unit_price, label), b - a
            if top is None or hi <= top:
                break
            floor = top

    # --- both -----------------------------------------------------------------------------------------------

    def contributions(self, events: list[UsageEvent]) -> Iterator[tuple[UsageEvent, LineKey, int]]:
        """Every (event, line key, base quantity) of a bill: the reference path reconciliation checks against."""
        for event in events:
            pairs = self.platform(event) if event.relation == Relation.PLATFORM else self.product(event)
            for key, q in pairs:
                yield event, key, q
        yield from self.tiered()
