"""The pure report builder: periods, counting rules (reversals, late events), scenario and evaluation indicators,
labels in both languages, the published JSON Schema, byte-identical output and the signature."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from disclosure.facts import (
    BillLineFact,
    CatalogueItem,
    CheckpointFact,
    DatasetFact,
    Facts,
    GrantChange,
    GrantFact,
    LogVerification,
    OrgFact,
    RevenueCapFact,
)
from disclosure.indicators import INDICATORS
from disclosure.labels import LABELS, LANGS, label
from disclosure.periods import InvalidPeriod, ReportPeriod
from disclosure.render import tables, to_csv, to_html, to_markdown
from disclosure.report import build_report
from disclosure.sealed import ReportNotVerified, report_bytes, sign_report, verify_report
from disclosure.signing import KeyRing
from metering.events import DatasetUse, UsageEvent

TZ = ZoneInfo("Asia/Shanghai")
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "disclosure" / "disclosure.schema.json").read_text())
Q3 = ReportPeriod.parse("2026-Q3")
T0 = datetime(2026, 7, 10, 8, 0, tzinfo=UTC)


def _event(eid: str, kind: str = "run", *, op: str = "op1", grant: str | None = "g_sc", at: datetime = T0,
           ingested: datetime | None = None, rows: int = 100, outcome: str = "succeeded", purpose: str = "industry",
           payer: str | None = None, entry: str | None = None, reverses: str | None = None) -> UsageEvent:
    return UsageEvent(id=eid, kind=kind, relation="platform" if kind == "run" else "product", event_time=at,
                      ingested_at=ingested or at, issuer_org_id="agency", payer_org_id=payer or op,
                      operator_org_id=op, purpose_class=purpose, outcome=outcome, quantities=(("runs", 1),),
                      grant_id=grant, datasets=(DatasetUse("ds_a", rows, 10),), entry_id=entry, reverses=reverses)


def facts(**changes: Any) -> Facts:
    grant = GrantFact("g_sc", "op1", "scenario", (), ("ds_a", "ds_b"),
                      {"name": "客流预测", "data_used": "公交刷卡", "supply": "沙箱统计", "problem": "调度"},
                      "industry", T0 - timedelta(days=30), T0 + timedelta(days=300), "active", T0 - timedelta(days=30))
    base = Facts(
        period=Q3, time_zone="Asia/Shanghai", period_start=Q3.start(TZ), period_end=Q3.end(TZ),
        cut_off=datetime(2026, 10, 2, tzinfo=UTC), draft=False,
        orgs=(OrgFact("agency", "数据局", "agency"), OrgFact("op1", "运营公司", "operator"),
              OrgFact("cust", "客户", "customer")),
        grants=(grant,),
        grant_changes=(GrantChange("g_sc", T0 - timedelta(days=30), "create", None, "active", "granted"),
                       GrantChange("g_sc", T0 + timedelta(days=5), "suspend", "active", "suspended", "审查"),
                       GrantChange("g_sc", T0 + timedelta(days=6), "reinstate", "suspended", "active", "ok")),
        datasets=(DatasetFact("ds_a", "prov", "公交刷卡", "transport", "general", 1, "SLC-2026-000001", False),
                  DatasetFact("ds_b", "prov", "道路", "transport", "important", 2, "SLC-2026-000002", False)),
        catalogue=(CatalogueItem("op1", "ple_1", "客流查询", "query_interface", "per_call", "call", Decimal("0.50"),
                                 True),),
        price_caps=(), revenue_caps=(RevenueCapFact("op1", 2026, Decimal("1.00"), True),),
        events=(_event("run:1"), _event("run:2", outcome="failed", rows=0), _event("run:3", purpose="public_interest"),
                _event("call:1", "call", payer="cust", entry="ple_1"),
                _event("call:2", "call", payer="cust", entry="ple_1"),
                _event("call:3", "call", payer="cust", entry="ple_1"),
                _event("rev:call:3", "reversal", payer="cust", entry="ple_1", reverses="call:3")),
        late_events=(_event("run:old", at=T0 - timedelta(days=40), ingested=T0),),
        audit=({"seq": 5, "action": "job:create", "decision": "refused", "code": "query_refused", "grant": "g_sc",
                "actor": {"org": "op1"}, "resource": {"org": "op1"}, "detail": {"findings": ["raw_rows", "raw_rows"]}},
               {"seq": 6, "action": "run:create", "decision": "allow", "code": None, "grant": "g_sc",
                "actor": {"org": "op1"}, "resource": {"org": "op1"},
                "detail": {"suppression": {"k": 3, "difference_audit": 2}}}),
        checkpoint=CheckpointFact("sluice.test/audit-log", 7, "cm9vdA==", T0, "0123456789abcdef", "note"),
        verification=LogVerification(7, True, True, True),
        bill_lines=(BillLineFact("b1", "op1", "cust", "product", "2026-07", "ple_1", None, "ds_a", Decimal("1.50")),),
        year_revenue={"op1": {2026: Decimal("1.50")}})
    return replace(base, **changes)


def test_periods_are_years_quarters_and_months_in_the_billing_zone() -> None:
    assert [str(ReportPeriod.parse(p)) for p in ("2026", "2026-Q3", "2026-11")] == ["2026", "2026-Q3", "2026-11"]
    assert Q3.months == ["2026-07", "2026-08", "2026-09"]
    assert Q3.start(TZ) == datetime(2026, 6, 30, 16, 0, tzinfo=UTC)
    assert Q3.end(TZ) == datetime(2026, 9, 30, 16, 0, tzinfo=UTC)
    assert str(Q3.previous()) == "2026-Q2" and str(ReportPeriod.parse("2026-01").previous()) == "2025-12"
    assert not Q3.closed(datetime(2026, 9, 30, 15, 59, tzinfo=UTC), TZ) and Q3.closed(Q3.end(TZ), TZ)
    for bad in ("2026-Q5", "2026-13", "26", "2026-q3", ""):
        with pytest.raises(InvalidPeriod):
            ReportPeriod.parse(bad)


def test_reversed_events_cancel_and_late_events_are_adjustments() -> None:
    report = build_report(facts())
    op = report["operators"][0]
    assert op["usage"]["runs"] == 3 and op["usage"]["runs_succeeded"] == 2
    assert op["usage"]["calls"] == 2  # call:3 was reversed
    assert op["usage"]["by_product"] == [{"product_id": None, "entry_id": "ple_1", "calls": 2, "rows": 200,
                                          "customers": 1}]
    assert op["free_public_interest"] == {"runs": 1, "calls": 0, "rows": 100}
    assert report["adjustments"]["usage_events"] == 1
    assert report["adjustments"]["by_operator"] == [{"org_id": "op1", "runs": 1, "calls": 0, "rows": 100}]
    assert report["cut_off"]["usage_events"] == 7


def test_revenue_over_the_maximum_is_reported_as_excess() -> None:
    revenue = build_report(facts())["operators"][0]["revenue"]
    assert revenue == {"period": "1.50", "year_to_date": "1.50", "max_allowed": "1.00", "carried_excess": "0.00",
                       "effective_max": "1.00", "excess": "0.50", "over_maximum": True}


def test_a_scenario_gives_its_three_answers_and_its_indicators() -> None:
    [sc] = build_report(facts())["scenarios"]
    assert (sc["name"], sc["data_used"], sc["supply"], sc["problem"]) == ("客流预测", "公交刷卡", "沙箱统计", "调度")
    assert sc["indicators"] == {"datasets_supplied": 1, "rows": 200, "runs": 3, "products": 1, "customers": 1,
                                "calls": 2, "revenue": "1.50", "free_public_interest_runs": 1,
                                "free_public_interest_calls": 0}


def test_evaluation_gives_named_indicators_with_formulas_on_four_dimensions_and_no_score() -> None:
    evaluation = build_report(facts())["evaluation"]
    assert [(e["subject"], e["id"]) for e in evaluation] == [("operator", "op1"), ("scenario", "g_sc")]
    for subject in evaluation:
        assert set(subject) == {"subject", "id", "indicators"}
        names = [i["name"] for i in subject["indicators"]]
        assert names == list(INDICATORS)
        assert {i["dimension"] for i in subject["indicators"]} == {"feasibility", "compliance", "benefit", "security"}
        assert all(i["formula"] for i in subject["indicators"])
    ind = {i["name"]: i["value"] for i in evaluation[1]["indicators"]}
    assert ind["authorized_datasets"] == 2 and ind["used_datasets"] == 1 and ind["scope_use"] == "0.5000"
    assert ind["run_success_rate"] == "0.6667" and ind["suspensions"] == 1 and ind["refusals"] == 1
    assert ind["analysis_rejections"] == {"raw_rows": 1} and ind["cells_suppressed_k"] == 3
    assert ind["cells_suppressed_audit"] == 2 and ind["audit_check_findings"] == 2
    assert ind["customers"] == 1 and ind["calls"] == 2 and ind["free_public_interest_use"] == 1


def test_the_agency_section_lists_grants_changes_and_maxima() -> None:
    agency = build_report(facts())["agency"]
    [g] = agency["grants"]
    assert g["in_force"] and g["changed_in_period"] and not g["issued_in_period"]
    assert [c["action"] for c in g["changes"]] == ["suspend", "reinstate"]
    assert agency["summary"] == {"issued": 0, "changed": 1, "in_force": 1}
    assert agency["max_allowed_revenue"][0]["amount"] == "1.00"


def test_the_same_facts_give_byte_identical_json_and_the_signature_verifies(tmp_path: Path) -> None:
    data = report_bytes(build_report(facts()))
    assert data == report_bytes(build_report(facts()))
    ring = KeyRing(tmp_path)
    ring.ensure("disclosure")
    ring.ensure("certificate")
    envelope = sign_report(ring, data)
    assert verify_report(data, envelope, ring.public_keys("disclosure")) == envelope["signature"]["kid"]
    with pytest.raises(ReportNotVerified):
        verify_report(data + b" ", envelope, ring.public_keys("disclosure"))
    with pytest.raises(ReportNotVerified):  # a key of another context never verifies a disclosure
        verify_report(data, envelope, ring.public_keys("certificate"))
    forged = {**envelope, "signature": ring.sign("certificate", envelope["sha256"].encode()).to_json()}
    with pytest.raises(ReportNotVerified):
        verify_report(data, forged, {**ring.public_keys("disclosure"), **ring.public_keys("certificate")})


def test_every_label_has_both_languages_and_every_code_shown_is_translated() -> None:
    assert all(len(pair) == len(LANGS) and all(pair) for pair in LABELS.values())
    report = build_report(facts())
    for lang in LANGS:
        for t in tables(report, lang):
            assert f"table.{t.name}" in LABELS
            assert all(h and not h.startswith("col.") for h in t.headers)
    for name in INDICATORS:
        assert f"ind.{name}" in LABELS
    for prefix, values in (("scope", ("whole", "domain", "scenario")), ("grade", ("core", "important", "general")),
                           ("dimension", ("feasibility", "compliance", "benefit", "security")),
                           ("status", ("active", "suspended", "revoked"))):
        assert all(f"{prefix}.{v}" in LABELS for v in values)
    assert label("title", "zh-CN") == "信息披露报告"


def test_renderings_keep_names_as_entered_and_translate_labels() -> None:
    report = build_report(facts())
    zh, en = to_html(report, "zh-CN"), to_html(report, "en")
    assert "客流预测" in zh and "客流预测" in en and "场景按季度调度报告 2026-Q3" in zh
    assert "Quarterly scenario report 2026-Q3" in en and "draft" not in json.loads(report_bytes(report))["status"]
    assert to_markdown(report, "en").startswith("# Quarterly scenario report 2026-Q3")
    files = to_csv(report, "zh-CN")
    assert files["usage.csv"].decode("utf-8-sig").splitlines()[0] == "运营机构,运行次数,成功运行,调用次数,行数"


def _validate(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """A small JSON Schema checker for the keywords the report's schema uses."""
    errors: list[str] = []
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        py = {"string": str, "integer": int, "boolean": bool, "object": dict, "array": list, "null": type(None)}
        ok = any(isinstance(value, py[k]) and not (k == "integer" and isinstance(value, bool)) for k in kinds)
        if not ok:
            return [f"{where}: {type(value).__name__} is not {kinds}"]
    if isinstance(value, dict) and "properties" in schema:
        missing = set(schema.get("required", [])) - set(value)
        extra = set(value) - set(schema["properties"]) if schema.get("additionalProperties") is False else set()
        errors += [f"{where}: missing {m}" for m in sorted(missing)] + [f"{where}: unknown {e}" for e in sorted(extra)]
        for key, sub in schema["properties"].items():
            if key in value:
                errors += _validate(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _validate(item, schema["items"], f"{where}[{i}]")
    return errors


def test_reports_match_the_published_json_schema() -> None:
    report = build_report(facts())
    assert _validate(report, SCHEMA) == []
    assert _validate(build_report(facts(draft=True, events=(), audit=())), SCHEMA) == []
    broken = json.loads(report_bytes(report))
    del broken["operators"][0]["usage"]["runs"]
    assert _validate(broken, SCHEMA) == ["$.operators[0].usage: missing runs"]


def test_a_report_verifies_only_as_its_canonical_bytes_and_as_the_period_and_status_it_was_signed_for(
        tmp_path: Path) -> None:
    report = build_report(facts())
    data = report_bytes(report)
    ring = KeyRing(tmp_path)
    ring.ensure("disclosure")
    keys = ring.public_keys("disclosure")
    pretty = json.dumps(report, ensure_ascii=False, indent=1).encode("utf-8")  # the same content, other bytes
    with pytest.raises(ReportNotVerified, match="canonical"):
        verify_report(pretty, sign_report(ring, pretty), keys)
    envelope = sign_report(ring, data)
    other_status = "draft" if report["status"] == "final" else "final"
    for field, value in (("period", "2099"), ("status", other_status)):
        with pytest.raises(ReportNotVerified, match="another period or status"):
            verify_report(data, {**envelope, field: value}, keys)
    with pytest.raises(ReportNotVerified, match="not a disclosure signature"):
        verify_report(data, {**envelope, "type": "sluice.certificate/v1"}, keys)
