"""Metering end to end through the API: runs and downloads metered, platform bills, finalization, corrections,
visibility, exports, reconciliation and attribution."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq
import pytest
from billing_world import World, build_world
from sqlalchemy import String, select, type_coerce, update

from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import BillAttribution, BillLineRow, BillRow, UsageEventRow

JUNE, JULY = "2026-06", "2026-07"


@pytest.fixture
def world(api) -> World:  # type: ignore[no-untyped-def]
    w = build_world(api)
    w.set_platform_fees()
    return w


def _line(bill: dict[str, Any], meter: str, outcome: str = "succeeded", kind: str = "usage") -> dict[str, Any]:
    found = [ln for ln in bill["lines"] if ln["meter"] == meter and ln["outcome"] == outcome and ln["kind"] == kind]
    assert len(found) == 1, (meter, outcome, kind, bill["lines"])
    return found[0]


def test_operator_bill_charges_succeeded_runs_and_downloads_and_records_failed_runs_at_zero(world: World) -> None:
    api = world.api
    ok = [world.run(world.industry_key, world.industry_job) for _ in range(3)]
    failed = world.run(world.industry_key, world.industry_job, s="x")
    assert failed["status"] == "failed"
    download = api.call("GET", f"/v1/runs/{ok[0]['id']}/result", world.industry_key, params={"format": "csv"})
    assert download.status_code == 200
    bill = world.bill(world.industry, JUNE)
    assert bill["relation"] == "platform" and bill["status"] == "draft" and bill["vat_included"] is True
    runs = _line(bill, "runs")
    assert (runs["quantity"], runs["unit_price"], runs["amount"], runs["event_count"]) == ("3", "0.5", "1.50", 3)
    assert _line(bill, "downloads")["amount"] == "0.10"
    assert _line(bill, "download_bytes")["base_quantity"] == len(download.content)
    rows = _line(bill, "rows_scanned")
    assert rows["dataset_id"] == world.dataset and rows["base_quantity"] == 3 * 40
    for line in [ln for ln in bill["lines"] if ln["outcome"] == "failed"]:
        assert line["amount"] == "0.00" and line["unit_price"] == "0" and "not charged" in line["evidence"]
    assert _line(bill, "runs", "failed")["quantity"] == "1"
    assert _line(bill, "cpu_seconds", "failed")["base_quantity"] > 0  # a failed run records its CPU time
    total = sum(Decimal(ln["amount"]) for ln in bill["lines"])
    assert Decimal(bill["total"]) == total and bill["event_count"] == 5
    usage = api.ok("GET", "/v1/usage", world.industry_key, params={"period": JUNE})["events"]
    assert sorted(e["kind"] for e in usage) == ["download", "run", "run", "run", "run"]
    assert {e["id"] for e in usage if e["kind"] == "run"} == {f"run:{r['id']}" for r in [*ok, failed]}


def test_public_interest_operator_bill_is_zero_with_evidence_on_every_line(world: World) -> None:
    for _ in range(2):
        world.run(world.public_key, world.public_job)
    bill = world.bill(world.public, JUNE)
    assert bill["total"] == "0.00" and bill["lines"]
    for line in bill["lines"]:
        assert line["amount"] == "0.00" and line["purpose_class"] == "public_interest"
        assert "public_interest" in line["evidence"] and "grant grt_" in line["evidence"]


def test_final_bill_is_immutable_and_later_events_land_on_the_next_bill_as_adjustments(world: World) -> None:
    api = world.api
    world.run(world.industry_key, world.industry_job)
    draft = world.bill(world.industry, JUNE)
    api.clock.advance(timedelta(minutes=5))
    late = world.run(world.industry_key, world.industry_job)  # same month, ingested after the draft's cut-off
    forbidden = api.call("POST", f"/v1/bills/{draft['id']}/finalize", world.industry_finance)
    assert forbidden.json()["code"] == "not_found_or_not_yours"  # only the issuer (the agency) finalizes
    final = api.ok("POST", f"/v1/bills/{draft['id']}/finalize", world.finance)
    assert final["status"] == "finalized" and len(final["sha256"]) == 64 and final["total"] == draft["total"]
    again = api.call("POST", f"/v1/bills/{draft['id']}/finalize", world.finance)
    assert again.status_code == 409 and again.json()["code"] == "bill_finalized"
    world.bill(world.industry, JUNE, expect=409)
    api.clock.set(api.clock.now() + timedelta(days=31))
    july = world.bill(world.industry, JULY)
    adj = _line(july, "runs", kind="adjustment")
    assert adj["event_period"] == JUNE and adj["quantity"] == "1" and adj["amount"] == "0.50"
    ids = {e["id"] for e in api.ok("GET", "/v1/usage", world.finance, params={"period": JUNE})["events"]}
    assert f"run:{late['id']}" in ids


def test_finalize_refuses_a_stale_draft(world: World) -> None:
    world.run(world.industry_key, world.industry_job)
    draft = world.bill(world.industry, JUNE)
    world.run(world.industry_key, world.industry_job)  # same instant: ingested at the draft's cut-off
    stale = world.api.call("POST", f"/v1/bills/{draft['id']}/finalize", world.finance)
    assert stale.status_code == 409 and stale.json()["code"] == "bill_draft_stale"
    redraft = world.bill(world.industry, JUNE)
    assert redraft["id"] == draft["id"] and redraft["revision"] == 2
    assert world.api.ok("POST", f"/v1/bills/{draft['id']}/finalize", world.finance)["event_count"] == 2


def test_bills_are_seen_by_payer_agency_and_regulators_only(world: World) -> None:
    api = world.api
    world.run(world.industry_key, world.industry_job)
    bill = world.bill(world.industry, JUNE)
    assert api.ok("GET", f"/v1/bills/{bill['id']}", world.industry_finance)["id"] == bill["id"]
    assert api.ok("GET", f"/v1/bills/{bill['id']}", world.regulator_key)["id"] == bill["id"]
    other = api.call("GET", f"/v1/bills/{bill['id']}", api.principal(world.public, "finance"))
    assert other.status_code == 404 and other.json()["code"] == "not_found_or_not_yours"
    assert api.call("GET", "/v1/bills", world.customer_finance).json() == []
    assert [b["id"] for b in api.ok("GET", "/v1/bills", world.regulator_key)] == [bill["id"]]
    assert api.call("POST", "/v1/bills", world.industry_key,
                    json={"payer_org_id": world.industry, "period": JUNE}).status_code == 403


def test_a_reversal_appends_a_correction_once_and_a_different_replay_is_refused(world: World) -> None:
    api = world.api
    run = world.run(world.industry_key, world.industry_job)
    ev = f"run:{run['id']}"
    first = api.ok("POST", f"/v1/usage/{ev}/reverse", world.finance, json={"reason": "test run, not billable"})
    assert first["created"] is True and first["id"] == f"reversal:{ev}" and first["quantities"]["runs"] == -1
    replay = api.ok("POST", f"/v1/usage/{ev}/reverse", world.finance, json={"reason": "test run, not billable"})
    assert replay["created"] is False
    conflict = api.call("POST", f"/v1/usage/{ev}/reverse", world.finance, json={"reason": "another reason"})
    assert conflict.status_code == 409 and conflict.json()["code"] == "usage_conflict"
    assert api.call("POST", f"/v1/usage/{ev}/reverse", world.industry_finance,
                    json={"reason": "mine"}).json()["code"] == "not_found_or_not_yours"  # only the issuer
    bill = world.bill(world.industry, JUNE)
    reversal = _line(bill, "runs", kind="reversal")
    assert reversal["quantity"] == "-1" and reversal["amount"] == "-0.50" and "test run" in reversal["evidence"]
    assert Decimal(_line(bill, "runs")["amount"]) + Decimal(reversal["amount"]) == 0


def test_finance_exports_csv_with_bom_json_parquet_and_usage_detail(world: World) -> None:
    api = world.api
    world.run(world.industry_key, world.industry_job)
    world.run(world.public_key, world.public_job)
    for payer in (world.industry, world.public):
        world.bill(payer, JUNE)
    csv_ = api.call("GET", "/v1/bills/export", world.finance, params={"period": JUNE, "format": "csv"})
    assert csv_.status_code == 200 and csv_.content.startswith("\ufeff".encode())
    header = csv_.content.decode("utf-8-sig").splitlines()[0].split(",")
    assert header[:3] == ["bill_id", "status", "period"] and "amount" in header and "evidence" in header
    table = pq.read_table(io.BytesIO(api.call("GET", "/v1/bills/export", world.finance,
                                              params={"period": JUNE, "format": "parquet"}).content))
    bills = api.ok("GET", "/v1/bills", world.finance, params={"period": JUNE})
    assert sum(table.column("amount").to_pylist()) == sum(Decimal(b["total"]) for b in bills)
    doc = json.loads(api.call("GET", "/v1/bills/export", world.finance,
                              params={"period": JUNE, "format": "json"}).content)
    assert {b["bill_id"] for b in doc["bills"]} == {b["id"] for b in bills}
    detail = api.call("GET", "/v1/bills/export/usage", world.finance, params={"period": JUNE, "format": "csv"})
    assert len(detail.content.decode("utf-8-sig").splitlines()) == 1 + 2
    mine = api.call("GET", "/v1/bills/export", world.industry_finance, params={"period": JUNE, "format": "json"})
    assert [b["payer_org_id"] for b in json.loads(mine.content)["bills"]] == [world.industry]
    assert api.call("GET", "/v1/bills/export", world.industry_key, params={"period": JUNE}).status_code == 403


def test_reconciliation_passes_and_catches_a_tampered_line(world: World) -> None:
    api = world.api
    for s in ("7", "7", "x"):
        world.run(world.industry_key, world.industry_job, s=s)
    bill = world.bill(world.industry, JUNE)
    api.ok("POST", f"/v1/bills/{bill['id']}/finalize", world.finance)
    assert api.ok("GET", "/v1/reconciliation", world.regulator_key, params={"period": JUNE})["ok"] is True
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine).begin() as s:
        s.execute(update(BillLineRow).where(BillLineRow.bill_id == bill["id"], BillLineRow.meter == "runs",
                                            BillLineRow.outcome == "succeeded").values(amount=Decimal("0.99")))
    engine.dispose()
    report = api.ok("GET", "/v1/reconciliation", world.regulator_key, params={"period": JUNE})
    assert report["ok"] is False
    assert any("amount expected 1.00, found 0.99" in d for d in report["bills"][0]["differences"])


def test_reconciliation_reports_a_stored_amount_that_is_not_a_decimal_as_a_difference(world: World) -> None:
    api = world.api
    world.run(world.industry_key, world.industry_job)
    bill = world.bill(world.industry, JUNE)
    engine = make_engine(api.settings.resolved_database_url)
    runs = update(BillLineRow).where(BillLineRow.bill_id == bill["id"], BillLineRow.meter == "runs",
                                     BillLineRow.outcome == "succeeded")
    line_no = _line(bill, "runs")["line_no"]
    with engine.begin() as conn:  # raw text, as a broken import or a hand edit could leave it
        conn.execute(runs.values(amount=type_coerce("twelve", String)))
    report = api.call("GET", "/v1/reconciliation", world.regulator_key, params={"period": JUNE})
    assert report.status_code == 200, report.text
    assert report.json()["ok"] is False
    assert report.json()["bills"][0]["differences"] == [
        f"{bill['id']} line {line_no}: stored bill_lines.amount expected a decimal amount, found 'twelve'"]
    with engine.begin() as conn:
        conn.execute(runs.values(amount=type_coerce(_line(bill, "runs")["amount"], String)))
        conn.execute(update(BillRow).where(BillRow.id == bill["id"]).values(total=type_coerce("NaN", String)))
    report = api.call("GET", "/v1/reconciliation", world.regulator_key, params={"period": JUNE})
    engine.dispose()
    assert report.status_code == 200, report.text
    [checked] = report.json()["bills"]
    assert checked["total"] == "NaN"
    assert checked["differences"] == [f"{bill['id']}: stored bills.total expected a decimal amount, found 'NaN'"]


def test_reconciliation_catches_a_final_bill_whose_seal_event_count_or_attribution_was_altered(world: World) -> None:
    api = world.api
    for s in ("7", "x"):
        world.run(world.industry_key, world.industry_job, s=s)
    bill = world.bill(world.industry, JUNE)
    api.ok("POST", f"/v1/bills/{bill['id']}/finalize", world.finance)
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine)() as s:
        stored = s.get(BillRow, bill["id"])
        first = s.scalars(select(BillAttribution).where(BillAttribution.bill_id == bill["id"])).first()
        assert stored is not None and first is not None and first.amount > 0
        by, count, share, amount = stored.finalized_by, stored.event_count, first.id, first.amount
    this_bill, this_share = update(BillRow).where(BillRow.id == bill["id"]), \
        update(BillAttribution).where(BillAttribution.id == share)
    tampering = [  # (what changes, how it is undone, the check that must name it)
        (this_bill.values(finalized_by="someone-else"), this_bill.values(finalized_by=by), "bill hash"),
        (this_bill.values(event_count=count + 1), this_bill.values(event_count=count), "events on the bill"),
        (this_share.values(amount=amount + Decimal("0.01")), this_share.values(amount=amount), "attributed amount"),
    ]
    for change, undo, check in tampering:
        with engine.begin() as conn:
            conn.execute(change)
        report = api.ok("GET", "/v1/reconciliation", world.regulator_key, params={"period": JUNE})
        assert report["ok"] is False
        assert any(f": {check} expected" in d for d in report["bills"][0]["differences"]), (check, report)
        with engine.begin() as conn:
            conn.execute(undo)
        assert api.ok("GET", "/v1/reconciliation", world.regulator_key, params={"period": JUNE})["ok"] is True
    engine.dispose()


def test_attribution_gives_each_provider_its_share_exactly(world: World) -> None:
    api = world.api
    world.run(world.industry_key, world.industry_job)
    bill = world.bill(world.industry, JUNE)
    api.ok("POST", f"/v1/bills/{bill['id']}/finalize", world.finance)
    agency = api.ok("GET", "/v1/attribution", world.finance, params={"period": JUNE})
    assert [p["provider_org_id"] for p in agency["providers"]] == [world.provider]
    assert agency["providers"][0]["total"] == bill["total"] == agency["datasets"][0]["platform"]
    own = api.ok("GET", "/v1/attribution", world.steward, params={"period": JUNE})
    assert own["providers"] == agency["providers"]
    _, other = api.actor("provider", "data_steward")
    assert api.ok("GET", "/v1/attribution", other, params={"period": JUNE})["providers"] == []


def test_usage_events_are_unique_per_run_and_carry_their_grant_and_datasets(world: World) -> None:
    run = world.run(world.industry_key, world.industry_job)
    engine = make_engine(world.api.settings.resolved_database_url)
    with session_factory(engine)() as s:
        rows = list(s.scalars(select(UsageEventRow).where(UsageEventRow.source_id == run["id"])))
    engine.dispose()
    assert len(rows) == 1
    e = rows[0]
    assert (e.id, e.payer_org_id, e.purpose_class, e.outcome) == (f"run:{run['id']}", world.industry, "industry",
                                                                  "succeeded")
    assert e.datasets == [[world.dataset, 40, e.quantities["bytes_scanned"]]] and e.quantities["runs"] == 1


def test_a_refused_run_is_metered_and_never_charged(world: World) -> None:
    api = world.api
    grant = api.ok("GET", "/v1/grants", world.industry_key)[0]["id"]
    api.ok("POST", f"/v1/grants/{grant}/suspend", api.admin_key, json={"reason": "audit pending"})
    refused = api.call("POST", f"/v1/jobs/{world.industry_job}/runs", world.industry_key, json={"params": {"s": "7"}})
    assert refused.status_code == 422 and refused.json()["code"] == "grant_suspended"
    [event] = api.ok("GET", "/v1/usage", world.finance, params={"period": JUNE})["events"]
    assert event["outcome"] == "refused" and event["quantities"] == {"bytes_scanned": 0, "cpu_seconds": 0,
                                                                     "rows_scanned": 0, "runs": 1}
    [line] = [ln for ln in world.bill(world.industry, JUNE)["lines"] if ln["meter"] == "runs"]
    assert (line["outcome"], line["amount"]) == ("refused", "0.00") and "not charged" in line["evidence"]
