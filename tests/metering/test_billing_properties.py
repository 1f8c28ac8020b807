"""Properties over random event streams and schedules: bills ignore order and replays, sum to rated usage,
never charge public-interest use, and never accept or charge a price above its cap."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from usage_factories import (
    PERIOD,
    START,
    Timeline,
    bill,
    caps,
    money,
    platform_events,
    platform_schedules,
    price_entries,
    pricing,
    product_events,
    redeliver,
)

from metering.bills import ordered
from metering.errors import PriceRefused, UsageConflict
from metering.events import UsageEvent, dedupe, quantities
from metering.money import ZERO, text, to_fen
from metering.rating import Pricing, Rater, exact_amount
from metering.reconcile import reconcile_lines
from metering.schedules import CapSchedule, check_against_cap

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _exact_total(events: list[UsageEvent], price: Pricing) -> Decimal:
    """Σ of every event rated on its own at full precision (no rounding at all)."""
    rater = Rater(price, PERIOD)
    return sum((exact_amount(k, q) for _, k, q in rater.contributions(ordered(events))), ZERO)


@PROPS
@given(events=platform_events(), schedules=platform_schedules(), seed=st.integers(0, 2**32 - 1))
def test_replay_shuffling_and_duplicates_never_change_a_platform_bill(events, schedules, seed) -> None:  # type: ignore[no-untyped-def]
    price = pricing(schedules)
    first = bill(events, price)
    rnd = random.Random(seed)
    replays = [redeliver(e, timedelta(days=rnd.randint(1, 400))) for e in rnd.sample(events, len(events) // 2)]
    mixed = events + replays + rnd.sample(events, len(events) // 3)
    rnd.shuffle(mixed)
    again = bill(dedupe(mixed), price)
    assert again.lines == first.lines
    assert again.sha256() == first.sha256()
    assert bill(mixed, price).sha256() == first.sha256()  # the builder dedupes unordered input itself


@PROPS
@given(events=platform_events(), schedules=platform_schedules())
def test_platform_bill_total_is_the_rated_usage_and_reconciles(events, schedules) -> None:  # type: ignore[no-untyped-def]
    price = pricing(schedules)
    b = bill(events, price)
    assert reconcile_lines("b", b.lines, events, pricing=price, period=PERIOD, total=b.total) == []
    exact = _exact_total(events, price)
    assert b.total == sum((line.amount for line in b.lines), ZERO)
    assert abs(b.total - exact) <= Decimal("0.005") * len(b.lines)
    assert all(line.amount == to_fen(line.amount) for line in b.lines)


@PROPS
@given(events=platform_events(), schedules=platform_schedules())
def test_public_interest_use_is_always_zero_with_evidence_on_every_line(events, schedules) -> None:  # type: ignore[no-untyped-def]
    b = bill(events, pricing(schedules))
    free = [line for line in b.lines if line.purpose_class == "public_interest"]
    for line in free:
        assert line.amount == 0 and line.unit_price == 0
        assert "grant grt_" in line.evidence and "public_interest" in line.evidence
    public_only = [e for e in events if e.purpose_class == "public_interest"]
    assert bill(public_only, pricing(schedules)).total == 0


@PROPS
@given(entry=price_entries(), cap=money)
def test_no_price_above_its_cap_is_ever_accepted(entry, cap) -> None:  # type: ignore[no-untyped-def]
    schedule = CapSchedule(1, START, (caps(str(cap)).versions[0].caps[0],), True)
    prices = [p for _, p in entry.unit_prices()]
    if all(p <= cap for p in prices):
        assert check_against_cap(entry, schedule) == cap
    else:
        with pytest.raises(PriceRefused) as refused:
            check_against_cap(entry, schedule)
        assert refused.value.code == "price_above_cap" and f"cap of {text(cap)} CNY" in refused.value.message


@PROPS
@given(entry=price_entries(), cap_now=money, lowered=money, events=product_events())
def test_product_bills_never_charge_above_the_cap_in_force_and_reconcile(entry, cap_now, lowered, events) -> None:  # type: ignore[no-untyped-def]
    cap_tl = caps(str(max(cap_now, max(p for _, p in entry.unit_prices()))), str(lowered),
                  starts=[START - timedelta(days=300), START + timedelta(days=15)])
    price = pricing(None, cap_tl, entry)
    b = bill(events, price, "product")
    for line in b.lines:
        if line.cap is not None:
            assert line.unit_price <= line.cap, line
        if line.purpose_class == "public_interest":
            assert line.amount == 0 and "public-interest" in line.evidence
    assert reconcile_lines("b", b.lines, events, pricing=price, period=PERIOD, total=b.total) == []
    rnd = random.Random(len(events))
    shuffled = events + events[: len(events) // 2]
    rnd.shuffle(shuffled)
    assert bill(shuffled, price, "product").sha256() == b.sha256()


@PROPS
@given(events=platform_events(n_max=10))
def test_a_replay_with_a_different_payload_is_refused(events) -> None:  # type: ignore[no-untyped-def]
    if not events:
        return
    e = events[0]
    changed = type(e)(**{**{f: getattr(e, f) for f in e.__slots__},  # type: ignore[attr-defined]
                         "quantities": quantities({**dict(e.quantities), "runs": 2})})
    with pytest.raises(UsageConflict):
        dedupe([*events, changed])


def test_caps_timeline_is_used_at_event_time() -> None:
    tl: Timeline[CapSchedule] = caps("1", "0.5", starts=[START - timedelta(days=1), START + timedelta(days=10)])
    assert tl.at(START).version == 1 and tl.at(START + timedelta(days=11)).version == 2  # type: ignore[union-attr]
