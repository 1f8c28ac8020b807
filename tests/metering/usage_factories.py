"""Factories for metering tests: events, schedules and pricing with overrides, plus hypothesis strategies."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from metering.bills import Bill, build_bill
from metering.events import DatasetUse, EventKind, UsageEvent, event_id, quantities, reversal_of
from metering.money import Vat
from metering.periods import Period
from metering.rating import Pricing
from metering.schedules import Cap, CapSchedule, Package, PlatformSchedule, PriceEntry, Tier, Timeline

TZ = ZoneInfo("Asia/Shanghai")
PERIOD = Period(2026, 11)
START = PERIOD.start(TZ)
VAT = Vat(True, Decimal("0.06"))
OPERATOR, CUSTOMER, AGENCY = "org_op", "org_cust", "org_agency"
_seq = itertools.count(1)


def at(days: float = 1.0) -> datetime:
    """An instant `days` after the start of the test period (2026-11 in Beijing time)."""
    return START + timedelta(days=days)


def run_event(**over: Any) -> UsageEvent:
    """A succeeded industry run of the operator, billed by the agency; override any field."""
    n = next(_seq)
    datasets = over.pop("datasets", (DatasetUse("ds_a", 10_000, 4_000), DatasetUse("ds_b", 2_500, 1_000)))
    q = {"runs": 1, "rows_scanned": sum(d.rows for d in datasets), "bytes_scanned": sum(d.bytes for d in datasets),
         "cpu_seconds": 12_345, **over.pop("q", {})}
    base = dict(id=event_id(EventKind.RUN, f"run_{n:06d}"), kind="run", relation="platform", event_time=at(1),
                ingested_at=at(1), issuer_org_id=AGENCY, payer_org_id=OPERATOR, operator_org_id=OPERATOR,
                purpose_class="industry", outcome="succeeded", quantities=quantities(q), grant_id="grt_1",
                datasets=datasets, source_id=f"run_{n:06d}")
    base.update(over)
    return UsageEvent(**base)  # type: ignore[arg-type]


def call_event(entry_id: str = "pe_1", **over: Any) -> UsageEvent:
    """A succeeded product call by the customer, billed by the operator."""
    n = next(_seq)
    kind = over.pop("kind", "call")
    q = over.pop("q", {"calls": 1, "result_rows": 120, "result_bytes": 4_096})
    base = dict(id=event_id(kind, f"call_{n:06d}"), kind=kind, relation="product", event_time=at(2),
                ingested_at=at(2), issuer_org_id=OPERATOR, payer_org_id=CUSTOMER, operator_org_id=OPERATOR,
                purpose_class="industry", outcome="succeeded", quantities=quantities(q), grant_id="grt_1",
                datasets=(DatasetUse("ds_a", 100, 0), DatasetUse("ds_b", 50, 0)), product_id="prd_1",
                entry_id=entry_id, source_id=f"call_{n:06d}")
    base.update(over)
    return UsageEvent(**base)  # type: ignore[arg-type]


def platform(*rates: dict[str, str], starts: Sequence[datetime] | None = None) -> Timeline[PlatformSchedule]:
    """Platform fee versions (rates as decimal strings), the first in force from long before the period."""
    starts = starts or [START - timedelta(days=400) + timedelta(days=i) for i in range(len(rates))]
    return Timeline(PlatformSchedule(i + 1, s, {k: Decimal(v) for k, v in r.items()}, True)
                    for i, (r, s) in enumerate(zip(rates, starts, strict=True)))


def caps(*prices: str, category: str = "query_interface", basis: str = "per_call", unit: str = "call",
         starts: Sequence[datetime] | None = None) -> Timeline[CapSchedule]:
    """Cap versions for one basis, category and unit."""
    starts = starts or [START - timedelta(days=400) + timedelta(days=i) for i in range(len(prices))]
    return Timeline(CapSchedule(i + 1, s, (Cap(basis, category, unit, Decimal(p)),), True)
                    for i, (p, s) in enumerate(zip(prices, starts, strict=True)))


def entry(price: str = "0.30", **over: Any) -> PriceEntry:
    """A per-call query-interface entry of the operator."""
    base = dict(entry_id="pe_1", operator_org_id=OPERATOR, category="query_interface", basis="per_call",
                unit="call", version=1, effective_from=START - timedelta(days=300), unit_price=Decimal(price),
                vat_included=True)
    base.update(over)
    return PriceEntry(**base)  # type: ignore[arg-type]


def pricing(platform_tl: Timeline[PlatformSchedule] | None = None, caps_tl: Timeline[CapSchedule] | None = None,
            *entries: PriceEntry) -> Pricing:
    by_id: dict[str, list[PriceEntry]] = {}
    for e in entries:
        by_id.setdefault(e.entry_id, []).append(e)
    return Pricing(platform_tl or Timeline([]), caps_tl or Timeline([]),
                   {k: Timeline(v) for k, v in by_id.items()}, TZ)


def bill(events: Sequence[UsageEvent], price: Pricing, relation: str = "platform", **over: Any) -> Bill:
    payer, issuer = (OPERATOR, AGENCY) if relation == "platform" else (CUSTOMER, OPERATOR)
    kw: dict[str, Any] = dict(payer_org_id=payer, issuer_org_id=issuer, relation=relation, period=PERIOD,
                              as_of=at(40), pricing=price, vat=VAT)
    kw.update(over)
    return build_bill(events, **kw)


# --- hypothesis strategies -----------------------------------------------------------------------------------

money = st.decimals(min_value=Decimal("0"), max_value=Decimal("50"), places=4, allow_nan=False,
                    allow_infinity=False)
DATASETS = ("ds_a", "ds_b", "ds_c")


@st.composite
def platform_schedules(draw: st.DrawFn) -> Timeline[PlatformSchedule]:
    """1-3 platform versions; later ones start inside the period."""
    n = draw(st.integers(1, 3))
    starts = [START - timedelta(days=30), *sorted(at(draw(st.floats(0, 29, allow_nan=False))) for _ in range(n - 1))]
    meters = ("runs", "rows_scanned", "bytes_scanned", "cpu_seconds", "downloads", "download_bytes")
    return Timeline(PlatformSchedule(i + 1, s, {m: draw(money) for m in meters}, True)
                    for i, s in enumerate(starts))


@st.composite
def platform_events(draw: st.DrawFn, n_max: int = 40) -> list[UsageEvent]:
    """Runs and downloads of every outcome and purpose, some in the month before, some reversed."""
    events = []
    for i in range(draw(st.integers(0, n_max))):
        download = draw(st.booleans())
        names = draw(st.lists(st.sampled_from(DATASETS), min_size=1, max_size=3, unique=True))
        ds = tuple(DatasetUse(d, draw(st.integers(0, 10**6)), draw(st.integers(0, 10**9))) for d in names)
        purpose = draw(st.sampled_from(["industry", "public_interest"]))
        when = at(draw(st.floats(-5, 29.9, allow_nan=False)))
        if download:
            q = {"downloads": 1, "download_bytes": draw(st.integers(0, 10**9))}
            ev = run_event(id=f"download:d{i:04d}", kind="download", q={}, quantities=quantities(q),
                           datasets=ds, event_time=when, ingested_at=when, purpose_class=purpose,
                           grant_id=draw(st.sampled_from(["grt_1", "grt_2"])))
        else:
            outcome = draw(st.sampled_from(["succeeded", "succeeded", "failed", "timed_out", "refused"]))
            ev = run_event(id=f"run:r{i:04d}", datasets=ds, event_time=when, ingested_at=when, outcome=outcome,
                           purpose_class=purpose, q={"cpu_seconds": draw(st.integers(0, 10**8))},
                           grant_id=draw(st.sampled_from(["grt_1", "grt_2"])))
        events.append(ev)
        if draw(st.integers(0, 9)) == 0:
            events.append(reversal_of(ev, reason="charged twice", at=when + timedelta(hours=1)))
    return events


@st.composite
def price_entries(draw: st.DrawFn) -> PriceEntry:
    """A per-call entry, maybe tiered, maybe with a package."""
    price = draw(money)
    tiers: tuple[Tier, ...] = ()
    if draw(st.booleans()):
        bounds = sorted(set(draw(st.lists(st.integers(1, 30), min_size=1, max_size=3))))
        prices = [price] + [draw(money) for _ in bounds]
        tiers = (*tuple(Tier(Decimal(b), p) for b, p in zip(bounds, prices, strict=False)), Tier(None, prices[-1]))
    package = Package(Decimal(draw(st.integers(1, 20))), draw(money)) if draw(st.booleans()) else None
    return entry(unit_price=price, tiers=tiers, package=package)


@st.composite
def product_events(draw: st.DrawFn, entry_id: str = "pe_1") -> list[UsageEvent]:
    """Calls (some free, some failed), package purchases and reversals by the customer."""
    events: list[UsageEvent] = []
    for i in range(draw(st.integers(0, 40))):
        when = at(draw(st.floats(0, 29.9, allow_nan=False)))
        purpose = draw(st.sampled_from(["industry", "industry", "public_interest"]))
        if draw(st.integers(0, 7)) == 0:
            ev = call_event(entry_id, id=f"package:p{i:04d}", kind="package", q={"packages": 1}, event_time=when,
                            ingested_at=when, purpose_class=purpose)
        else:
            ev = call_event(entry_id, id=f"call:c{i:04d}", q={"calls": draw(st.integers(1, 5))}, event_time=when,
                            ingested_at=when, purpose_class=purpose,
                            outcome=draw(st.sampled_from(["succeeded", "succeeded", "failed"])),
                            free_reason=("subscription sub_1 approved for public-interest use"
                                         if purpose == "public_interest" else None))
        events.append(ev)
        if draw(st.integers(0, 9)) == 0:
            events.append(reversal_of(ev, reason="call failed at the customer", at=when + timedelta(hours=2)))
    return events


def redeliver(event: UsageEvent, later: timedelta) -> UsageEvent:
    """The same access delivered again, later (a replay)."""
    return replace(event, ingested_at=event.ingested_at + later)
