"""Metering rules one at a time: rounding, events, schedules, tiers and packages, attribution, revenue, exports."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from usage_factories import (
    CUSTOMER,
    OPERATOR,
    PERIOD,
    START,
    VAT,
    at,
    bill,
    call_event,
    caps,
    entry,
    platform,
    platform_events,
    platform_schedules,
    pricing,
    run_event,
)

from metering.attribution import attribute, split_to_fen
from metering.errors import InvalidPricing, UsageConflict
from metering.events import DatasetUse, dedupe, quantities, reversal_of, validate
from metering.exports import IssuedBill, export_bills, export_usage
from metering.money import Vat, parse_price, to_fen
from metering.periods import Period
from metering.reconcile import reconcile_lines
from metering.revenue import positions
from metering.schedules import Package, Tier, validate_entry


@pytest.mark.parametrize(("exact", "fen"), [("0.005", "0.01"), ("0.015", "0.02"), ("0.0049999", "0.00"),
                                            ("-0.005", "-0.01"), ("2.675", "2.68"), ("-0.004", "0.00")])
def test_each_line_rounds_half_up_to_the_fen(exact: str, fen: str) -> None:
    assert str(to_fen(Decimal(exact))) == fen


def test_prices_are_decimal_strings_never_floats() -> None:
    assert parse_price("0.05", field="p") == Decimal("0.05")
    for bad in (0.05, "abc", "-1", "NaN", "0.000000001"):
        with pytest.raises(InvalidPricing):
            parse_price(bad, field="p")


def test_vat_is_stated_and_computed_both_ways() -> None:
    assert VAT.part(Decimal("106.00")) == Decimal("6.00") and VAT.gross(Decimal("106.00")) == Decimal("106.00")
    exclusive = Vat(False, Decimal("0.06"))
    assert exclusive.gross(Decimal("100.00")) == Decimal("106.00") and "exclude" in exclusive.label()


def test_a_line_is_rated_at_full_precision_before_rounding() -> None:
    # 3 runs x 0.3333 CNY = 0.9999 -> 1.00 (rounding each run first would give 0.99)
    price = pricing(platform({"runs": "0.3333"}))
    b = bill([run_event() for _ in range(3)], price)
    [runs] = [ln for ln in b.lines if ln.meter == "runs"]
    assert runs.amount == Decimal("1.00") and runs.unit_price == Decimal("0.3333")


def test_the_schedule_in_force_at_each_event_time_applies() -> None:
    price = pricing(platform({"runs": "1"}, {"runs": "2"}, starts=[START - timedelta(days=9), at(10)]))
    b = bill([run_event(event_time=at(5)), run_event(event_time=at(15)), run_event(event_time=at(16))], price)
    runs = sorted((ln.unit_price, ln.quantity, ln.schedule) for ln in b.lines if ln.meter == "runs")
    assert runs == [(Decimal(1), 1, "platform v1"), (Decimal(2), 2, "platform v2")]


def test_earlier_events_become_adjustment_lines_and_reversals_their_own_lines() -> None:
    price = pricing(platform({"runs": "1"}))
    late = run_event(event_time=START - timedelta(days=3))
    original = run_event()
    b = bill([late, original, reversal_of(original, reason="duplicate submission", at=at(3))], price)
    kinds = {(ln.kind, ln.event_period) for ln in b.lines if ln.meter == "runs"}
    assert kinds == {("usage", "2026-11"), ("adjustment", "2026-10"), ("reversal", "2026-11")}
    assert b.total == Decimal("1.00")


def test_an_identical_replay_counts_once_and_a_changed_one_is_refused() -> None:
    e = run_event()
    later = type(e)(**{**{f: getattr(e, f) for f in e.__slots__}, "ingested_at": e.ingested_at + timedelta(days=90)})
    assert dedupe([later, e]) == [e]
    changed = type(e)(**{**{f: getattr(e, f) for f in e.__slots__}, "outcome": "failed"})
    with pytest.raises(UsageConflict):
        dedupe([e, changed])


def test_events_are_validated() -> None:
    with pytest.raises(InvalidPricing, match="does not add up"):
        validate(run_event(datasets=(DatasetUse("a", 1, 1),), q={"rows_scanned": 5}))
    with pytest.raises(InvalidPricing, match="needs evidence"):
        validate(run_event(purpose_class="public_interest", grant_id=None))
    with pytest.raises(InvalidPricing, match="does not belong"):
        validate(run_event(quantities=quantities({"calls": 1})))
    with pytest.raises(InvalidPricing, match="itself a reversal"):
        reversal_of(reversal_of(run_event(), reason="x", at=at(2)), reason="y", at=at(3))


def test_entry_shapes_are_validated() -> None:
    cats = ["query_interface"]
    with pytest.raises(InvalidPricing, match="last is open"):
        validate_entry(entry(tiers=(Tier(Decimal(10), Decimal("0.3")),)), cats)
    with pytest.raises(InvalidPricing, match="first tier"):
        validate_entry(entry(tiers=(Tier(Decimal(10), Decimal("0.2")), Tier(None, Decimal("0.1")))), cats)
    with pytest.raises(InvalidPricing, match="packages prepay"):
        validate_entry(entry(basis="per_period", unit="month", package=Package(Decimal(1), Decimal(1))), cats)
    with pytest.raises(InvalidPricing, match="per call"):
        validate_entry(entry(unit="GB"), cats)


def test_packages_are_used_before_tiers_and_tiers_count_per_period() -> None:
    e = entry(unit_price=Decimal("0.5"), tiers=(Tier(Decimal(2), Decimal("0.5")), Tier(None, Decimal("0.25"))),
              package=Package(Decimal(3), Decimal("1.2")))
    price = pricing(None, caps("0.5"), e)
    events = [call_event(kind="package", q={"packages": 1}, event_time=at(1))]
    events += [call_event(event_time=at(2 + i), q={"calls": 1}) for i in range(7)]
    b = bill(events, price, "product")
    got = {(ln.meter, ln.segment): (ln.quantity, ln.amount) for ln in b.lines}
    assert got == {("packages", ""): (1, Decimal("1.20")), ("calls", "package"): (3, Decimal("0.00")),
                   ("calls", "tier 1"): (2, Decimal("1.00")), ("calls", "tier 2"): (2, Decimal("0.50"))}
    assert b.total == Decimal("2.70")


def test_a_package_priced_at_its_cap_reconciles_whatever_the_callers_decimal_context() -> None:
    """The package's cap (the per-call cap times the package size) is worked out at the rating precision, so the
    bill, built in the caller's context, and its reconciliation agree on the line (found by hypothesis: 6 CNY
    for 11 calls under a cap of exactly 6/11 gave a line that reconciliation could not find)."""
    package = Package(Decimal(11), Decimal(6))
    e = entry(unit_price=Decimal(0), package=package)
    price = pricing(None, caps(str(package.unit_price)), e)
    events = [call_event(kind="package", q={"packages": 1}, event_time=at(1))]
    b = bill(events, price, "product")
    assert [(ln.meter, ln.amount) for ln in b.lines] == [("packages", Decimal("6.00"))]
    assert b.lines[0].cap is not None and b.lines[0].cap >= Decimal(6)
    assert reconcile_lines("b", b.lines, events, pricing=price, period=PERIOD, total=b.total) == []


def test_split_to_fen_is_exact_and_deterministic() -> None:
    shares = split_to_fen(Decimal("1.00"), {"a": Fraction(1), "b": Fraction(1), "c": Fraction(1)})
    assert shares == {"a": Decimal("0.34"), "b": Decimal("0.33"), "c": Decimal("0.33")}
    assert split_to_fen(Decimal("-0.05"), {"a": Fraction(1, 2), "b": Fraction(1, 2)}) == {
        "a": Decimal("-0.03"), "b": Decimal("-0.02")}


@settings(max_examples=60, deadline=None)
@given(events=platform_events(), schedules=platform_schedules())
def test_attribution_adds_up_to_every_line_exactly(events, schedules) -> None:  # type: ignore[no-untyped-def]
    price = pricing(schedules)
    b = bill(events, price)
    shares = attribute(b.lines, events, pricing=price, period=PERIOD)
    for line in b.lines:
        mine = [s for s in shares if s.line_no == line.line_no]
        assert sum((s.amount for s in mine), Decimal(0)) == line.amount
        assert all(s.amount == to_fen(s.amount) for s in mine)
        if line.dataset_id:
            assert [s.dataset_id for s in mine] in ([], [line.dataset_id])


def test_runs_are_attributed_by_rows_scanned_per_dataset() -> None:
    price = pricing(platform({"runs": "1"}))
    events = [run_event(datasets=(DatasetUse("ds_a", 300, 0), DatasetUse("ds_b", 100, 0)))]
    b = bill(events, price)
    got = {s.dataset_id: s.amount for s in attribute(b.lines, events, pricing=price, period=PERIOD)}
    assert got == {"ds_a": Decimal("0.75"), "ds_b": Decimal("0.25")}


def test_revenue_above_the_maximum_reduces_the_next_years_maximum() -> None:
    pos = positions(OPERATOR, {2026: Decimal("120"), 2027: Decimal("50")},
                    {2026: Decimal("100"), 2027: Decimal("100")}, 2028)
    y26, y27, y28 = pos
    assert (y26.excess, y27.carried_excess, y27.effective_max, y27.excess) == (20, 20, 80, 0)
    assert y28.max_allowed is None and y28.excess == 0


def test_exports_write_csv_with_bom_json_and_exact_parquet() -> None:
    price = pricing(platform({"runs": "0.5", "rows_scanned": "0.01"}))
    events = [run_event(), run_event()]
    issued = [IssuedBill("bill_1", "finalized", "f" * 64, bill(events, price), {OPERATOR: "运营机构"})]
    csv_ = export_bills(issued, "csv")
    assert csv_.startswith("\ufeff".encode()) and "运营机构" in csv_.decode("utf-8-sig")
    table = pq.read_table(io.BytesIO(export_bills(issued, "parquet")))
    assert sum(table.column("amount").to_pylist()) == issued[0].bill.total
    doc = json.loads(export_bills(issued, "json"))
    assert doc["bills"][0]["vat"] == "prices include VAT at 6%" and doc["currency"] == "CNY"
    detail = pq.read_table(io.BytesIO(export_usage([("bill_1", e) for e in events], "parquet")))
    assert detail.num_rows == 2 and detail.column("runs").to_pylist() == [1, 1]


def test_periods_follow_the_billing_time_zone() -> None:
    from usage_factories import TZ

    p = Period.parse("2026-11")
    assert p.start(TZ).isoformat() == "2026-10-31T16:00:00+00:00" and str(p.next()) == "2026-12"
    assert str(Period.parse("2026-01").previous()) == "2025-12" and Period.parse("2026").contains(p)
    with pytest.raises(InvalidPricing):
        Period.parse("2026-13")
    assert CUSTOMER != OPERATOR
