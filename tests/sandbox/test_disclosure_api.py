"""Disclosure reports over the API: drafts for the agency and regulators, publication of closed periods, public
published reports that are byte-identical when rebuilt and verify offline, and every figure checked against
independent queries over the audit log and the usage events."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from billing_world import World, build_world
from sluice_api import Api
from sqlalchemy import delete, select

from disclosure.sealed import ReportNotVerified, verify_report
from disclosure.signing import KeyRing
from sandbox import disclosures
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditCheckpoint, AuditEvent, BillAttribution, DisclosureRow, UsageEventRow

JUNE = "2026-06"


@pytest.fixture
def world(api: Api) -> World:
    w = build_world(api)
    w.set_platform_fees()
    return w


def _report(api: Api, key: str | None, period: str = JUNE, **params: Any) -> Any:
    resp = api.call("GET", f"/v1/disclosures/{period}", key, params=params)
    assert resp.status_code == 200, resp.text
    return resp


def _store(api: Api) -> Any:
    return session_factory(make_engine(api.settings.resolved_database_url))


def _activity(world: World) -> None:
    for _ in range(3):
        world.run(world.industry_key, world.industry_job)
    world.run(world.industry_key, world.industry_job, s="x")  # fails at run time
    world.run(world.public_key, world.public_job)
    api = world.api
    grant = next(g["id"] for g in api.ok("GET", "/v1/grants", api.admin_key)
                 if g["operator_org_id"] == world.industry)
    bad = api.call("POST", "/v1/jobs", world.industry_key, json={
        "grant_id": grant, "title": "rows", "purpose": "p", "parameters": {},
        "sql": f"SELECT * FROM read_csv('/etc/passwd'), {world.dataset}"})
    assert bad.status_code in (403, 422), bad.text


def test_a_draft_is_visible_to_the_agency_and_regulators_only(world: World) -> None:
    api = world.api
    _activity(world)
    assert api.call("GET", f"/v1/disclosures/{JUNE}", None).json()["code"] == "disclosure_not_published"
    assert api.call("GET", f"/v1/disclosures/{JUNE}", world.industry_key).status_code == 403
    for key in (world.regulator_key, api.admin_key):
        report = _report(api, key).json()
        assert report["status"] == "draft" and report["period"] == JUNE
    with _store(api)() as s:
        denied = s.scalars(select(AuditEvent).where(AuditEvent.action == "disclosure:read",
                                                    AuditEvent.decision == "deny")).all()
    assert len(denied) == 1 and denied[0].actor_org_id == world.industry


def test_an_open_period_cannot_be_published(world: World) -> None:
    resp = world.api.call("POST", f"/v1/disclosures/{JUNE}/publish", world.api.admin_key)
    assert resp.status_code == 409 and resp.json()["code"] == "period_not_closed"
    assert world.api.call("GET", "/v1/disclosures/2026-13", world.regulator_key).json()["code"] == "invalid_period"


def test_every_figure_matches_independent_queries_over_the_log_and_the_events(world: World) -> None:
    api = world.api
    _activity(world)
    bill = world.bill(world.industry, JUNE)
    api.ok("POST", f"/v1/bills/{bill['id']}/finalize", world.finance)
    report = _report(api, world.regulator_key).json()
    with _store(api)() as s:
        shares = s.scalars(select(BillAttribution)).all()
        events = s.scalars(select(UsageEventRow)).all()
        audit = s.scalars(select(AuditEvent).where(AuditEvent.seq.is_not(None),
                                                   AuditEvent.seq < report["cut_off"]["checkpoint"]["tree_size"])
                          ).all()
    ops = {o["org_id"]: o for o in report["operators"]}
    for op in (world.industry, world.public):
        runs = [e for e in events if e.kind == "run" and e.operator_org_id == op]
        usage = ops[op]["usage"]
        assert usage["runs"] == len(runs) and usage["runs_succeeded"] == sum(e.outcome == "succeeded" for e in runs)
        assert usage["rows"] == sum(d[1] for e in runs for d in e.datasets)
        by_ds = {d["dataset_id"]: d for d in usage["by_dataset"]}
        assert by_ds[world.dataset]["rows"] == usage["rows"] > 0
        free = [e for e in runs if e.purpose_class == "public_interest"]
        assert ops[op]["free_public_interest"]["runs"] == len(free)
    assert ops[world.industry]["usage"]["runs"] == 4 and ops[world.public]["free_public_interest"]["runs"] == 1
    counted = [e.id for e in events if e.ingested_at.astimezone(UTC) <= datetime.fromisoformat(
        report["cut_off"]["time"].replace("Z", "+00:00"))]
    assert report["cut_off"]["usage_events"] == len(counted)
    assert report["cut_off"]["usage_events_sha256"] == hashlib.sha256(
        "".join(f"{i}\n" for i in sorted(counted)).encode()).hexdigest()
    refused = [a for a in audit if a.decision in ("deny", "refused")]
    sec = report["security"]
    assert sec["refusals"] == len(refused) > 0
    assert sec["refused_runs"] == sum(a.action == "run:create" for a in refused)
    rejections: Counter[str] = Counter()
    for a in audit:
        if a.action == "job:create" and a.code == "query_refused":
            rejections.update(set(a.detail["findings"]))
    assert {r["code"]: r["count"] for r in sec["analysis_rejections"]} == dict(rejections)
    assert sec["audit_log_verification"]["verified"] is True
    assert sec["audit_log_verification"]["records_checked"] == report["cut_off"]["checkpoint"]["tree_size"]
    providers = {p["provider_org_id"]: p for p in report["attribution"]["providers"]}
    assert providers[world.provider]["total"] == f"{sum(a.amount for a in shares):.2f}" != "0.00"
    assert providers[world.provider]["platform"] == providers[world.provider]["total"]
    assert [d["dataset_id"] for d in report["attribution"]["datasets"]] == [world.dataset]
    assert ops[world.industry]["revenue"]["period"] == "0.00"  # platform fees are the agency's, not revenue
    grants = {g["id"]: g for g in report["agency"]["grants"]}
    assert len(grants) == 2 and all(g["in_force"] and g["issued_in_period"] for g in grants.values())
    assert report["agency"]["summary"]["issued"] == 2
    evaluation = {(e["subject"], e["id"]): {i["name"]: i for i in e["indicators"]} for e in report["evaluation"]}
    ind = evaluation[("operator", world.industry)]
    assert ind["run_success_rate"]["value"] == "0.7500" and ind["run_success_rate"]["dimension"] == "feasibility"
    assert ind["scope_use"]["value"] == "1.0000" and ind["authorized_datasets"]["value"] == 1
    assert ind["refusals"]["value"] == sum(1 for a in refused if world.industry in (a.actor_org_id,
                                                                                     a.resource_org_id))


def test_a_published_report_is_public_byte_identical_when_rebuilt_and_verifies_offline(world: World) -> None:
    api = world.api
    _activity(world)
    api.clock.set(datetime(2026, 7, 2, 12, 0, tzinfo=UTC))
    assert api.call("POST", f"/v1/disclosures/{JUNE}/publish", world.regulator_key).status_code in (403, 404)
    published = api.ok("POST", f"/v1/disclosures/{JUNE}/publish", api.admin_key)
    again = api.call("POST", f"/v1/disclosures/{JUNE}/publish", api.admin_key)
    assert again.json()["code"] == "already_published"
    public = _report(api, None)
    assert public.headers["x-disclosure-status"] == "final"
    data = public.content
    assert hashlib.sha256(data).hexdigest() == published["sha256"]
    assert json.loads(data)["status"] == "final"
    signature = api.ok("GET", f"/v1/disclosures/{JUNE}/signature", None)
    keys = KeyRing(api.settings.keys_dir).public_keys("disclosure")
    assert verify_report(data, signature, keys) == signature["signature"]["kid"]
    with pytest.raises(ReportNotVerified):
        verify_report(data.replace(b'"final"', b'"draft"'), signature, keys)
    world.run(world.industry_key, world.industry_job)  # later activity changes nothing in a published report
    assert _report(api, None).content == data
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine)() as s:
        row = s.get(DisclosureRow, JUNE)
        assert row is not None
        state = api.http.app.state.sluice  # type: ignore[attr-defined]
        rebuilt = disclosures.rebuild(s, state.audit_log, state.keyring, row,
                                      tz_name=api.settings.billing_timezone)
    assert rebuilt.data == data
    schema = api.call("GET", "/v1/disclosures/schema", None)
    assert schema.headers["content-type"].startswith("application/schema+json")
    assert schema.json()["properties"]["type"] == {"const": "sluice.disclosure/v1"}
    listed = api.ok("GET", "/v1/disclosures", None)["disclosures"]
    assert [d["period"] for d in listed] == [JUNE]


def test_every_format_renders_in_both_languages(world: World) -> None:
    api = world.api
    _activity(world)
    html_zh = _report(api, world.regulator_key, format="html", lang="zh-CN").text
    assert "信息披露报告" in html_zh and "草稿" in html_zh and "<svg" in html_zh
    html_en = _report(api, world.regulator_key, format="html", lang="en").text
    assert "Disclosure report" in html_en and "DRAFT" in html_en
    md = _report(api, world.regulator_key, format="md", lang="zh-CN").text
    assert md.startswith("# 信息披露报告 2026-06") and "| 运营机构 |" in md
    csv_zip = zipfile.ZipFile(io.BytesIO(_report(api, world.regulator_key, format="csv", lang="en").content))
    assert {"grants.csv", "usage.csv", "evaluation.csv", "report.json"} <= set(csv_zip.namelist())
    usage = csv_zip.read("usage.csv").decode("utf-8-sig").splitlines()
    assert usage[0] == "Operator,Runs,Runs succeeded,Calls,Rows"
    quarter = _report(api, world.regulator_key, period="2026-Q2", format="html", lang="zh-CN").text
    assert "场景按季度调度报告 2026-Q2" in quarter
    sig = json.loads(base64.b64decode(_report(api, world.regulator_key).headers["x-disclosure-signature"]))
    assert sig["status"] == "draft"


def test_products_calls_customers_and_revenue_match_the_events_and_the_bills(api: Api) -> None:
    from product_world import build_shop

    shop = build_shop(api)
    w = shop.w
    product = shop.listed()
    shop.subscribe(product["id"])
    for s in ("7", "8", "7"):
        shop.invoke(product["id"], {"s": s})
    bill = w.bill(w.customer, JUNE, key=w.industry_finance)
    api.ok("POST", f"/v1/bills/{bill['id']}/finalize", w.industry_finance)
    report = _report(api, w.regulator_key).json()
    with _store(api)() as s:
        calls = s.scalars(select(UsageEventRow).where(UsageEventRow.kind == "call")).all()
    op = next(o for o in report["operators"] if o["org_id"] == w.industry)
    [item] = [c for c in op["catalogue"] if c["product_id"] == product["id"]]
    assert item["product_name"] == "District income" and item["unit_price"] == "0.4"
    assert op["usage"]["calls"] == len(calls) == 3
    [by_product] = op["usage"]["by_product"]
    assert (by_product["calls"], by_product["customers"]) == (3, 1)
    assert by_product["rows"] == sum(d[1] for e in calls for d in e.datasets)
    assert op["revenue"]["period"] == bill["total"] != "0.00"
    ind = {i["name"]: i["value"] for e in report["evaluation"] if e["id"] == w.industry for i in e["indicators"]}
    assert (ind["products"], ind["customers"], ind["calls"]) == (1, 1, 3)


def test_the_log_verification_fails_on_an_altered_record_a_missing_record_or_a_foreign_checkpoint_key(
        world: World, tmp_path: Any) -> None:
    _activity(world)
    report = json.loads(_report(world.api, world.api.admin_key).content)
    size = report["cut_off"]["checkpoint"]["tree_size"]
    ring = KeyRing(world.api.settings.keys_dir)
    foreign = KeyRing(tmp_path / "foreign-keys")
    foreign.ensure("checkpoint")
    with _store(world.api)() as s:
        cp = s.scalar(select(AuditCheckpoint).where(AuditCheckpoint.size == size).limit(1))
        assert cp is not None and disclosures.verify_log(s, ring, cp).verified
        assert not disclosures.verify_log(s, foreign, cp).signature_valid
        record = s.scalar(select(AuditEvent).where(AuditEvent.seq == size // 2))
        assert record is not None
        record.reason += " (edited)"
        s.flush()
        altered = disclosures.verify_log(s, ring, cp)
        assert (altered.root_matches, altered.signature_valid, altered.sequence_gapless) == (False, True, True)
        s.rollback()
        s.execute(delete(AuditEvent).where(AuditEvent.seq == size // 2))
        missing = disclosures.verify_log(s, ring, cp)
        assert not missing.sequence_gapless and not missing.root_matches and not missing.verified
        s.rollback()
        assert disclosures.verify_log(s, ring, cp).verified
