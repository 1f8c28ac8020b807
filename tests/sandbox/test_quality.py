"""Quality self-check (profile, expectations) and quality feedback (reports, answers, statistics)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sluice_api import SMALL_CSV, Api

from sandbox.catalogue.profile import ProfileInput, UpdateFrequency, profile
from sandbox.errors import InvalidInput

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def _file(tmp_path: Path, **cols: list[Any]) -> Path:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table(cols), path)
    return path


def _columns(path: Path, constraints: dict[str, str], declared: dict[str, str] | None = None) -> list[dict[str, Any]]:
    import duckdb

    types = dict(duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()[i][:2]
                 for i in range(len(constraints)))
    return [{"name": n, "type": types[n], "constraint": c, **({"declared_type": declared[n]}
                                                             if declared and n in declared else {})}
            for n, c in constraints.items()]


def _profile(path: Path, constraints: dict[str, str], expectations: list[dict[str, Any]] | None = None, *,
             declared: dict[str, str] | None = None, freshness: str | None = None,
             frequency: UpdateFrequency = UpdateFrequency.MONTHLY) -> dict[str, Any]:
    return profile(path, ProfileInput(_columns(path, constraints, declared), expectations or [], frequency, freshness),
                   now=NOW)


# One case per (kind, outcome): the column's values, its constraint, the expectation and whether it passes.
CASES = [
    ("not_null passes", [1, 2, 3], {"kind": "not_null"}, True),
    ("not_null fails", [1, None, 3], {"kind": "not_null"}, False),
    ("unique passes", ["a", "b", None, None], {"kind": "unique"}, True),
    ("unique fails", ["a", "b", "a"], {"kind": "unique"}, False),
    ("in_set passes", ["东区", "西区", None], {"kind": "in_set", "values": ["东区", "西区"]}, True),
    ("in_set fails", ["东区", "北区"], {"kind": "in_set", "values": ["东区", "西区"]}, False),
    ("range passes", [0, 5, 10], {"kind": "range", "min": 0, "max": 10}, True),
    ("range fails below", [-1, 5], {"kind": "range", "min": 0}, False),
    ("range fails above", [1, 11], {"kind": "range", "max": 10}, False),
    ("matches passes", ["13800001111", "13900002222"], {"kind": "matches", "pattern": "1[3-9][0-9]{9}"}, True),
    ("matches fails", ["13800001111", "1380000"], {"kind": "matches", "pattern": "1[3-9][0-9]{9}"}, False),
]


@pytest.mark.parametrize(("title", "values", "expectation", "passes"), CASES, ids=[c[0] for c in CASES])
def test_every_expectation_kind_passes_and_fails(tmp_path: Path, title: str, values: list[Any],
                                                 expectation: dict[str, Any], passes: bool) -> None:
    path = _file(tmp_path, x=values)
    out = _profile(path, {"x": "open"}, [{**expectation, "column": "x"}])
    result = out["expectations"][0]
    assert result["passed"] is passes, title
    assert (result["failing_rows"] == 0) is passes
    assert [f["code"] for f in out["findings"] if f["code"] == "expectation_failed"] == (
        [] if passes else ["expectation_failed"])
    if not passes and expectation["kind"] != "not_null":
        assert result["examples"]  # open column: the failing values may be shown


def test_profile_counts_nulls_distincts_duplicates_and_conformance(tmp_path: Path) -> None:
    path = _file(tmp_path, d=["2026-05-01", "2026-05-02", "not a date", None, "2026-05-02"],
                 n=[1, 2, 3, 4, 2], secret=["x", "y", "z", "w", "y"])
    out = _profile(path, {"d": "open", "n": "open", "secret": "hidden"}, declared={"d": "DATE"})
    cols = {c["name"]: c for c in out["columns"]}
    assert cols["d"]["null_count"] == 1 and cols["d"]["null_rate"] == 0.2
    assert cols["d"]["conformance"] == 0.75 and cols["d"]["nonconforming"] == 1
    assert cols["n"]["distinct"] == 4 and cols["n"]["min"] == 1 and cols["n"]["max"] == 4
    assert out["duplicate_rows"] == 1
    assert {f["code"] for f in out["findings"]} == {"type_nonconformance", "duplicate_rows"}


def test_profile_never_holds_a_value_of_a_column_that_is_not_open(tmp_path: Path) -> None:
    path = _file(tmp_path, phone=["13800001111", "13800001111", "bad"], income=[-5, 10, 20],
                 born=[date(1990, 1, 1), date(1991, 1, 1), date(1992, 1, 1)])
    out = _profile(path, {"phone": "aggregate", "income": "hidden", "born": "group"},
                   [{"kind": "matches", "column": "phone", "pattern": "1[0-9]{10}"},
                    {"kind": "unique", "column": "phone"}, {"kind": "range", "column": "income", "min": 0}],
                   freshness="born", frequency=UpdateFrequency.YEARLY)
    text = json.dumps(out, ensure_ascii=False)
    for value in ("13800001111", "bad", "-5", "1990", "1992"):
        assert value not in text, value
    assert all("min" not in c and "max" not in c for c in out["columns"])
    assert all("examples" not in r for r in out["expectations"])
    assert out["freshness"]["status"] == "stale" and "data_as_of" not in out["freshness"]


@pytest.mark.parametrize(("newest", "frequency", "status"), [
    (date(2026, 5, 31), UpdateFrequency.DAILY, "fresh"),
    (date(2026, 5, 29), UpdateFrequency.DAILY, "stale"),
    (date(2026, 5, 5), UpdateFrequency.MONTHLY, "fresh"),
    (date(2026, 3, 1), UpdateFrequency.MONTHLY, "stale"),
    (date(2020, 1, 1), UpdateFrequency.STATIC, "not_applicable"),
    (date(2020, 1, 1), UpdateFrequency.IRREGULAR, "unknown"),
])
def test_freshness_is_judged_against_the_declared_update_frequency(tmp_path: Path, newest: date,
                                                                  frequency: UpdateFrequency, status: str) -> None:
    path = _file(tmp_path, day=[date(2019, 1, 1), newest])
    out = _profile(path, {"day": "open"}, freshness="day", frequency=frequency)
    assert out["freshness"]["status"] == status
    if status in ("fresh", "stale"):
        assert out["freshness"]["data_as_of"] == newest.isoformat()


@pytest.mark.parametrize(("expectation", "fragment"), [
    ({"kind": "sorted", "column": "income"}, "kind must be one of"),
    ({"kind": "unique", "column": "nope"}, "not a column"),
    ({"kind": "in_set", "column": "income", "values": ["many"]}, "do not fit"),
    ({"kind": "in_set", "column": "income", "values": []}, "needs a list"),
    ({"kind": "range", "column": "income"}, "needs min, max or both"),
    ({"kind": "matches", "column": "phone", "pattern": "("}, "do not fit"),
    ({"kind": "unique", "column": "income", "values": [1]}, "takes no values"),
])
def test_malformed_expectations_are_refused_at_registration(api: Api, expectation: dict[str, Any],
                                                            fragment: str) -> None:
    _, steward = api.actor("provider", "data_steward")
    body = api.register(steward, expectations=[expectation], expect=400)
    assert body["code"] == "invalid_expectation" and fragment in body["detail"]


def test_update_frequency_is_an_enum(api: Api) -> None:
    _, steward = api.actor("provider", "data_steward")
    assert api.register(steward, update_frequency="sometimes", expect=400)["code"] == "invalid_update_frequency"


def test_registration_stores_the_profile_and_hides_non_open_values(api: Api) -> None:
    _, steward = api.actor("provider", "data_steward")
    reg = api.apply(steward, dataset_id="prof", columns={"phone": {"constraint": "aggregate"}},
                    expectations=[{"kind": "matches", "column": "phone", "pattern": "139[0-9]{8}"},
                                  {"kind": "in_set", "column": "district", "values": ["东区"]}])
    quality = api.ok("GET", "/v1/datasets/prof/versions/1/quality", steward)["quality"]
    assert quality["row_count"] == 40 and [r["passed"] for r in quality["expectations"]] == [False, False]
    assert quality["expectations"][1]["examples"] == ["西区"]  # district is open
    everything = json.dumps(api.ok("GET", "/v1/registrations/prof/1", api.admin_key), ensure_ascii=False)
    assert "1380000" not in everything and reg["registration_state"] == "applied"
    _, op = api.actor("operator", "operator")
    assert api.call("GET", "/v1/datasets/prof/versions/1/quality", op).status_code == 404  # not certified yet


# --- quality feedback -----------------------------------------------------------------------------------

def _report(api: Api, key: str, dataset: str, expect: int = 201, **extra: Any) -> Any:
    body = {"dataset": dataset, "category": "wrong_values", "column": "income",
            "description": "income of p007 looks wrong", **extra}
    resp = api.call("POST", "/v1/quality/reports", key, json=body)
    assert resp.status_code == expect, resp.text
    return resp.json()


def test_a_quality_report_is_read_only_by_its_provider_and_the_agency(api: Api) -> None:
    _, steward = api.actor("provider", "data_steward")
    api.register(steward, dataset_id="fb")
    _, op = api.actor("operator", "operator")
    receipt = _report(api, op, "fb")
    assert receipt["status"] == "open" and "description" not in receipt and "answer_reason" not in receipt
    _, other_steward = api.actor("provider", "data_steward")
    assert api.call("GET", f"/v1/quality/reports/{receipt['id']}", other_steward).json()["code"] == \
        "not_found_or_not_yours"
    assert api.call("GET", f"/v1/quality/reports/{receipt['id']}", op).json()["code"] == "permission_denied"
    _, regulator = api.actor("regulator", "regulator")
    assert api.call("GET", f"/v1/quality/reports/{receipt['id']}", regulator).status_code == 403
    assert api.ok("GET", "/v1/quality/reports", other_steward) == []
    reviewer = api.principal(api.platform_org_id, "reviewer")
    assert api.ok("GET", f"/v1/quality/reports/{receipt['id']}", reviewer)["description"] == \
        "income of p007 looks wrong"
    assert api.ok("GET", f"/v1/quality/reports/{receipt['id']}", steward)["status"] == "open"


def test_the_report_text_is_never_matched_against_the_data(api: Api) -> None:
    _, steward = api.actor("provider", "data_steward")
    api.register(steward, dataset_id="oracle", columns={"phone": {"constraint": "hidden"}})
    _, op = api.actor("operator", "operator")
    present = _report(api, op, "oracle", column="phone", description="phone 13800000007 is wrong")
    absent = _report(api, op, "oracle", column="phone", description="phone 19999999999 is wrong")
    strip = {"id", "created_at", "due_at"}
    assert {k: v for k, v in present.items() if k not in strip} == {k: v for k, v in absent.items() if k not in strip}


def test_the_provider_answers_and_overdue_reports_are_flagged_to_the_agency(api: Api) -> None:
    _, steward = api.actor("provider", "data_steward")
    api.register(steward, dataset_id="ans")
    _, customer = api.actor("customer", "customer")
    first, second, third = (_report(api, customer, "ans") for _ in range(3))
    answer = lambda rid, **b: api.call("POST", f"/v1/quality/reports/{rid}/answer", steward, json=b)  # noqa: E731
    assert answer(first["id"], answer="not_a_defect").json()["code"] == "reason_required"
    assert answer(first["id"], answer="fixed_in_version", fixed_in_version=1).json()["code"] == \
        "invalid_fixed_in_version"
    assert answer(first["id"], answer="acknowledged").json()["status"] == "acknowledged"
    api.new_version(steward, "ans", content=SMALL_CSV.replace("1007", "1107"))
    api.clock.advance(timedelta(days=2))
    assert answer(first["id"], answer="fixed_in_version", fixed_in_version=2).json()["status"] == "fixed"
    assert answer(second["id"], answer="not_a_defect", reason="income is monthly").json()["status"] == \
        "not_a_defect"
    assert answer(second["id"], answer="acknowledged").json()["code"] == "invalid_report_transition"
    _, op = api.actor("operator", "operator")
    assert api.call("POST", f"/v1/quality/reports/{third['id']}/answer", op,
                    json={"answer": "acknowledged"}).status_code == 403
    api.clock.advance(timedelta(days=api.settings.quality_report_deadline_days))
    overdue = api.ok("GET", "/v1/quality/reports", api.admin_key, params={"overdue": True})
    assert [r["id"] for r in overdue] == [third["id"]]
    stats = api.ok("GET", "/v1/quality/stats", api.admin_key)
    assert stats["filed"] == 3 and stats["resolved"] == 2 and stats["overdue"] == 1
    assert stats["by_status"] == {"open": 1, "acknowledged": 0, "fixed": 1, "not_a_defect": 1}
    assert stats["median_time_to_resolve_seconds"] == 2 * 86400
    _, regulator = api.actor("regulator", "regulator")
    assert api.ok("GET", "/v1/quality/stats", regulator)["filed"] == 3
    _, other = api.actor("provider", "data_steward")
    assert api.ok("GET", "/v1/quality/stats", other)["filed"] == 0


def test_reports_are_about_versions_in_use(api: Api) -> None:
    _, steward = api.actor("provider", "data_steward")
    api.apply(steward, dataset_id="inuse")
    _, op = api.actor("operator", "operator")
    assert _report(api, op, "inuse", expect=409)["code"] == "version_not_in_use"
    with pytest.raises(AssertionError):
        _report(api, op, "inuse", column="nope")
    assert InvalidInput  # the error root the domain raises for bad input
