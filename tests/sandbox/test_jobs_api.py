"""The governed query path end to end: submission, analysis, review, runs, output control, downloads."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from sandbox.demo.city import CITY_DATASETS, SMALL_DISTRICT, generate_city
from sandbox.demo.run import dataset_metadata

HEALTH_COST = """
SELECT r.district, count(*) AS visits, sum(v.cost) AS total_cost
FROM clinic_visits v JOIN residents r ON v.person_id = r.person_id
GROUP BY r.district
"""
WEATHER = "SELECT district, avg(temperature) AS t FROM weather GROUP BY district"
SCENARIO = {"name": "health cost", "data_used": "visits, districts", "supply": "sandbox aggregates",
            "problem": "plan clinics"}


@pytest.fixture(scope="session")
def city_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from datetime import date

    return generate_city(tmp_path_factory.mktemp("city"), today=date(2026, 6, 1), fmt="parquet")


@pytest.fixture
def world(api, city_files: dict[str, Path]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """City datasets (residents, clinic_visits, weather), a health operator with two grants, two reviewers."""
    _, steward = api.actor("provider", "data_steward")
    for spec in CITY_DATASETS:
        if spec.id not in ("residents", "clinic_visits", "weather"):
            continue
        meta = dataset_metadata(spec)
        meta.pop("column_types")
        api.register(steward, dataset_id=meta.pop("id"), content=city_files[spec.id].read_bytes(),
                     filename=f"{spec.id}.parquet", **meta)
    op, key = api.actor("operator", "operator")
    _, other_key = api.actor("operator", "operator")
    until = (api.clock.now() + timedelta(days=365)).isoformat()
    scenario = api.grant(op, scope="scenario", datasets=["clinic_visits", "residents"], scenario=SCENARIO,
                         valid_until=until)["id"]
    domain = api.grant(op, scope="domain", domains=["meteorology"], auto_approve=True, valid_until=until)["id"]
    r1 = api.principal(api.platform_org_id, "reviewer")
    r2 = api.principal(api.platform_org_id, "reviewer")
    return {"op": op, "key": key, "other_key": other_key, "scenario": scenario, "domain": domain, "r1": r1,
            "r2": r2, "steward": steward}


def submit(api, key: str, grant: str, sql: str, *, expect: int = 201, **extra: Any) -> Any:  # type: ignore[no-untyped-def]
    resp = api.call("POST", "/v1/jobs", key, json={"grant_id": grant, "title": "t", "purpose": "p", "sql": sql,
                                                   **extra})
    assert resp.status_code == expect, resp.text
    return resp.json()


def approve(api, job_id: str, *reviewers: str) -> Any:  # type: ignore[no-untyped-def]
    out = None
    for r in reviewers:
        out = api.ok("POST", f"/v1/jobs/{job_id}/review", r, json={"decision": "approve", "comment": "ok"})
    return out


def run(api, key: str, job_id: str, *, expect: int = 201, headers: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
        **params: Any) -> Any:
    resp = api.http.post(f"/v1/jobs/{job_id}/runs", json={"params": params},
                         headers={**api.as_(key), **(headers or {})})
    assert resp.status_code == expect, resp.text
    return resp.json()


def test_health_cost_by_district_is_reviewed_twice_and_suppresses_the_small_district(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["scenario"], HEALTH_COST)
    assert job["state"] == "pending_review" and job["reviews_required"] == 2
    once = approve(api, job["id"], world["r1"])
    assert once["state"] == "pending_review"
    again = api.call("POST", f"/v1/jobs/{job['id']}/review", world["r1"], json={"decision": "approve",
                                                                                 "comment": "again"})
    assert again.status_code == 409 and again.json()["code"] == "already_reviewed"
    assert again.json()["detail"] == ("this reviewer has already reviewed the job; a second approval needs a "
                                      "different reviewer")
    twice = approve(api, job["id"], world["r2"])
    assert twice["state"] == "approved" and len(twice["frozen_sql_sha256"]) == 64
    assert twice["decided_at"] == api.clock.now().isoformat()
    assert twice["dataset_versions"] == {"clinic_visits": 1, "residents": 1}
    r = run(api, world["key"], job["id"])
    assert r["status"] == "succeeded", r
    assert r["suppressed_cells"] == 2 and r["suppression"] == {"k": 2} and r["result_rows"] >= 5
    assert r["rows_scanned"] == 80_000 and r["bytes_scanned"] > 0
    rows = api.ok("GET", f"/v1/runs/{r['id']}/result?format=json", world["key"])
    districts = {row["district"] for row in rows}
    assert SMALL_DISTRICT not in districts and len(districts) == r["result_rows"]
    assert all(not k.startswith("__sluice") for k in rows[0])
    assert list(rows[0]) == ["district", "visits", "total_cost", "sluice_suppressed"]
    assert all(row["sluice_suppressed"] is None for row in rows)


def test_refused_query_is_stored_rejected_with_findings_and_audited(api, world) -> None:  # type: ignore[no-untyped-def]
    body = submit(api, world["key"], world["scenario"], "SELECT person_id, cost FROM clinic_visits", expect=422)
    assert body["code"] == "query_refused" and body["context"]["findings"]
    job = api.ok("GET", f"/v1/jobs/{body['context']['job_id']}", world["key"])
    assert job["state"] == "rejected" and job["rejection_source"] == "analysis"
    assert all({"code", "message"} <= set(f) for f in job["findings"])
    _, reg = api.actor("regulator", "regulator")
    audit = api.ok("GET", "/v1/audit/events", reg, params={"limit": 1000})["events"]
    refused = [a for a in audit if a["action"] == "job:create" and a["decision"] == "refused"]
    assert refused and refused[-1]["code"] == "query_refused"


def test_single_dataset_job_on_an_auto_approve_grant_is_approved_at_once(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    assert job["state"] == "approved" and job["frozen_sql"]
    r = run(api, world["key"], job["id"])
    assert r["status"] == "succeeded" and r["suppressed_cells"] == 0 and r["result_rows"] == 9


def test_important_data_needs_two_approvals_of_this_job_not_of_others(api, world) -> None:  # type: ignore[no-untyped-def]
    first = submit(api, world["key"], world["scenario"], HEALTH_COST)
    approve(api, first["id"], world["r1"], world["r2"])
    second = submit(api, world["key"], world["scenario"], HEALTH_COST)
    once = approve(api, second["id"], world["r1"])
    assert once["state"] == "pending_review" and once["frozen_sql"] is None


def test_only_agency_reviewers_review(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["scenario"], HEALTH_COST)
    resp = api.call("POST", f"/v1/jobs/{job['id']}/review", world["key"], json={"decision": "approve",
                                                                                 "comment": "me"})
    assert resp.status_code == 403 and resp.json()["code"] == "permission_denied"


def test_reviewer_rejection_is_final(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["scenario"], HEALTH_COST)
    out = api.ok("POST", f"/v1/jobs/{job['id']}/review", world["r1"], json={"decision": "reject",
                                                                            "comment": "too fine"})
    assert out["state"] == "rejected" and out["rejection_source"] == "reviewer"
    assert out["decided_at"] == api.clock.now().isoformat()
    resp = api.http.post(f"/v1/jobs/{job['id']}/runs", json={}, headers=api.as_(world["key"]))
    assert resp.status_code == 409 and resp.json()["code"] == "job_not_approved"


@pytest.mark.parametrize(("action", "code"), [("suspend", "grant_suspended"), ("revoke", "grant_revoked")])
def test_run_with_a_suspended_or_revoked_grant_is_refused(api, world, action: str, code: str) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    api.ok("POST", f"/v1/grants/{world['domain']}/{action}", api.admin_key, json={"reason": "audit"})
    body = run(api, world["key"], job["id"], expect=422)
    assert body["code"] == code
    runs = api.ok("GET", f"/v1/runs?job_id={job['id']}", world["key"])
    assert [r["status"] for r in runs] == ["refused"]


def test_run_with_an_expired_grant_is_refused(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    api.clock.advance(timedelta(days=400))
    assert run(api, world["key"], job["id"], expect=422)["code"] == "grant_expired"


def test_a_newer_dataset_version_keeps_the_run_on_the_pinned_version(api, world, city_files) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    meta = dataset_metadata(next(s for s in CITY_DATASETS if s.id == "weather"))
    meta.pop("column_types")
    meta.pop("id")
    meta["description"] = "v2: recalibrated"
    assert api.new_version(world["steward"], "weather", **meta)["registration_state"] == "certified"
    r = run(api, world["key"], job["id"])
    assert r["dataset_versions"] == {"weather": 1} and r["status"] == "succeeded"


def test_idempotency_key_returns_the_same_run(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    a = run(api, world["key"], job["id"], headers={"Idempotency-Key": "abc"})
    b = run(api, world["key"], job["id"], headers={"Idempotency-Key": "abc"})
    c = run(api, world["key"], job["id"], headers={"Idempotency-Key": "xyz"})
    assert a["id"] == b["id"] != c["id"]


def test_parameters_are_typed_bound_values(api, world) -> None:  # type: ignore[no-untyped-def]
    sql = "SELECT district, avg(temperature) AS t FROM weather WHERE district = $d GROUP BY district"
    job = submit(api, world["key"], world["domain"], sql, parameters={"d": "VARCHAR"})
    hit = run(api, world["key"], job["id"], d="城东区")
    assert hit["result_rows"] == 1
    inj = run(api, world["key"], job["id"], d="x' OR '1'='1")
    assert inj["status"] == "succeeded" and inj["result_rows"] == 0
    missing = run(api, world["key"], job["id"], expect=400)
    assert missing["code"] == "invalid_parameter"


def test_results_download_in_every_format_and_each_download_is_audited(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    r = run(api, world["key"], job["id"])
    pq_bytes = api.call("GET", f"/v1/runs/{r['id']}/result?format=parquet", world["key"])
    import hashlib

    assert hashlib.sha256(pq_bytes.content).hexdigest() == r["result_sha256"]
    assert pq.read_table(io.BytesIO(pq_bytes.content)).num_rows == 9
    csv_resp = api.call("GET", f"/v1/runs/{r['id']}/result?format=csv", world["key"])
    csv = csv_resp.text
    assert csv.count("\n") == 10 and "\r" not in csv and not csv_resp.content.startswith(b"\xef\xbb\xbf")
    # the hash header is the hash of the bytes sent; the stored Parquet's hash is named separately
    assert csv_resp.headers["X-Result-SHA256"] == hashlib.sha256(csv_resp.content).hexdigest()
    assert csv_resp.headers["X-Result-Parquet-SHA256"] == r["result_sha256"]
    arrow = api.call("GET", f"/v1/runs/{r['id']}/result?format=arrow", world["key"])
    import pyarrow as pa

    assert pa.ipc.open_stream(arrow.content).read_all().num_rows == 9
    _, reg = api.actor("regulator", "regulator")
    audit = api.ok("GET", "/v1/audit/events", reg, params={"limit": 1000})["events"]
    downloads = [a for a in audit if a["action"] == "result:read" and a["decision"] == "allow"]
    assert [d["detail"]["format"] for d in downloads] == ["parquet", "csv", "arrow"]


def test_csv_for_excel_has_a_bom_crlf_and_keeps_chinese_text(api, world) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    job = submit(api, world["key"], world["domain"], WEATHER)
    r = run(api, world["key"], job["id"])
    plain = api.call("GET", f"/v1/runs/{r['id']}/result?format=csv", world["key"]).content
    excel = api.call("GET", f"/v1/runs/{r['id']}/result?format=csv&bom=1", world["key"])
    body = excel.content
    assert body.startswith(b"\xef\xbb\xbf") and body.count(b"\r\n") == 10 and body.count(b"\n") == 10
    text = body[3:].decode("utf-8")
    assert text.split("\r\n")[0] == "district,t"
    # the same districts (Chinese names) as the plain CSV, only the encoding details differ
    assert [line.split(",")[0] for line in text.split("\r\n")[1:-1]] == [
        line.split(",")[0].strip('"') for line in plain.decode("utf-8").split("\n")[1:-1]]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)
    assert excel.headers["X-Result-SHA256"] == hashlib.sha256(body).hexdigest()


def test_another_operator_cannot_run_or_read_the_job(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    r = run(api, world["key"], job["id"])
    assert run(api, world["other_key"], job["id"], expect=404)["code"] == "not_found_or_not_yours"
    resp = api.call("GET", f"/v1/runs/{r['id']}/result", world["other_key"])
    assert resp.status_code == 404


def test_run_errors_carry_no_data_values(api, world) -> None:  # type: ignore[no-untyped-def]
    sql = "SELECT district, sum(CAST(temperature * 1000 AS TINYINT)) AS s FROM weather GROUP BY district"
    job = submit(api, world["key"], world["domain"], sql)
    r = run(api, world["key"], job["id"])
    assert r["status"] == "failed" and r["error_code"]
    assert not any(ch.isdigit() for ch in (r["error_message"] or ""))


@pytest.mark.parametrize(("action", "code"), [("suspend", "grant_suspended"), ("revoke", "grant_revoked"),
                                              ("expire", "grant_expired")])
def test_results_and_replays_are_refused_once_the_grant_is_not_usable(api, world, action: str, code: str) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    r = run(api, world["key"], job["id"], headers={"Idempotency-Key": "once"})
    assert api.call("GET", f"/v1/runs/{r['id']}/result?format=csv", world["key"]).status_code == 200
    if action == "expire":
        api.clock.advance(timedelta(days=400))
    else:
        api.ok("POST", f"/v1/grants/{world['domain']}/{action}", api.admin_key, json={"reason": "audit"})
    for fmt in ("csv", "parquet", "json"):
        resp = api.call("GET", f"/v1/runs/{r['id']}/result?format={fmt}", world["key"])
        assert resp.status_code == 422 and resp.json()["code"] == code
    replay = run(api, world["key"], job["id"], expect=422, headers={"Idempotency-Key": "once"})
    assert replay["code"] == code
    result = api.ok("GET", f"/v1/runs/{r['id']}", world["key"])
    assert (api.settings.resolved_home / "results").exists() and result["result_sha256"]  # kept for audit
    _, reg = api.actor("regulator", "regulator")
    audit = api.ok("GET", "/v1/audit/events", reg, params={"limit": 1000})["events"]
    refused = [a for a in audit if a["action"] == "result:read" and a["decision"] == "refused"]
    assert len(refused) == 3 and {a["code"] for a in refused} == {code}



def test_a_check_returns_findings_and_the_sql_that_would_run_and_stores_nothing(api, world) -> None:  # type: ignore[no-untyped-def]
    before = api.ok("GET", "/v1/jobs", world["key"])
    refused = api.ok("POST", "/v1/jobs/check", world["key"], json={
        "grant_id": world["domain"], "sql": "SELECT district,\n  temperature FROM read_csv('/etc/passwd')"})
    assert refused["verdict"] == "refused" and refused["would_be"] == "rejected" and refused["sql"] is None
    assert [(f["code"], f["line"]) for f in refused["findings"]] == [("file_access_not_allowed", 2)]
    accepted = api.ok("POST", "/v1/jobs/check", world["key"], json={"grant_id": world["domain"], "sql": WEATHER})
    assert accepted["verdict"] == "accepted" and accepted["findings"] == [] and accepted["would_be"] == "approved"
    assert accepted["sql"].startswith("SELECT") and accepted["dataset_versions"] == {"weather": 1}
    scenario = api.ok("POST", "/v1/jobs/check", world["key"], json={"grant_id": world["scenario"],
                                                                     "sql": HEALTH_COST})
    assert (scenario["would_be"], scenario["reviews_required"]) == ("pending_review", 2)
    assert api.ok("GET", "/v1/jobs", world["key"]) == before  # nothing stored
    other = api.call("POST", "/v1/jobs/check", world["other_key"], json={"grant_id": world["domain"],
                                                                         "sql": WEATHER})
    assert other.status_code == 404  # another operator's grant is not visible
    _, reg = api.actor("regulator", "regulator")
    audit = api.ok("GET", "/v1/audit/events", reg, params={"limit": 1000})["events"]
    checks = [a for a in audit if a["action"] == "job:check"]
    assert [a["decision"] for a in checks] == ["allow", "allow", "allow", "deny"]
    assert checks[0]["detail"]["findings"] == ["file_access_not_allowed"]


def test_a_provider_sees_who_uses_its_dataset_as_metadata_only(api, world) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    job = submit(api, world["key"], world["domain"], WEATHER)
    r = run(api, world["key"], job["id"])
    usage = api.ok("GET", "/v1/datasets/weather/usage", world["steward"])
    [entry] = usage["jobs"]
    assert entry["job_id"] == job["id"] and entry["operator_org_id"] == world["op"]
    assert entry["sql_sha256"] == hashlib.sha256(WEATHER.encode("utf-8")).hexdigest()
    assert (entry["title"], entry["purpose"], entry["state"], entry["version"]) == ("t", "p", "approved", 1)
    assert [x["run_id"] for x in entry["runs"]] == [r["id"]] and entry["runs"][0]["status"] == "succeeded"
    text = str(usage)
    assert "SELECT" not in text and "district" not in text and "result" not in text  # no SQL, no results
    assert api.ok("GET", "/v1/datasets/residents/usage", world["steward"])["jobs"] == []
    for outsider in (world["key"], api.actor("provider", "data_steward")[1]):
        resp = api.call("GET", "/v1/datasets/weather/usage", outsider)
        assert resp.status_code == 403 and resp.json()["code"] == "not_the_provider"


def test_a_corrected_job_replaces_the_refused_one_and_the_history_shows_the_chain(api, world) -> None:  # type: ignore[no-untyped-def]
    first = submit(api, world["key"], world["domain"], "SELECT * FROM read_csv('/etc/passwd')", expect=422)
    first_id = first["context"]["job_id"]
    second = submit(api, world["key"], world["domain"], WEATHER, replaces=first_id)
    assert second["replaces"] == first_id and second["state"] == "approved"
    shown = api.ok("GET", f"/v1/jobs/{first_id}", world["key"])
    assert [(h["id"], h["replaces"]) for h in shown["history"]] == [(first_id, None), (second["id"], first_id)]
    assert api.ok("GET", f"/v1/jobs/{second['id']}", world["key"])["history"] == shown["history"]
    again = submit(api, world["key"], world["domain"], WEATHER, replaces=first_id, expect=409)
    assert again["code"] == "job_already_replaced" and again["context"]["replaced_by"] == second["id"]
    elsewhere = submit(api, world["key"], world["scenario"], HEALTH_COST, replaces=second["id"], expect=404)
    assert elsewhere["code"] == "replaced_job_not_found"  # a correction stays under the same grant


def test_a_run_holds_no_store_transaction_while_the_engine_runs(api, world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sandbox.app import governed

    seen: list[bool] = []
    sessions: list[Any] = []
    execute, check_runnable = governed.runs.execute, governed.runs.check_runnable

    def checked(session, *args, **kwargs):  # type: ignore[no-untyped-def]
        sessions.append(session)  # the request's session, which read the job and ran the checks
        return check_runnable(session, *args, **kwargs)

    def watched(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(sessions[-1].in_transaction())
        return execute(*args, **kwargs)

    monkeypatch.setattr(governed.runs, "check_runnable", checked)
    monkeypatch.setattr(governed.runs, "execute", watched)
    job = submit(api, world["key"], world["domain"], WEATHER)
    assert run(api, world["key"], job["id"])["status"] == "succeeded"
    assert seen == [False]  # the checks' read transaction ended: its pooled connection is free meanwhile


def test_a_runs_start_record_is_committed_once(api, world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sandbox.billing.usage import Metering

    recorded: list[str] = []
    record_start = Metering._record_start

    def recording(self, pending):  # type: ignore[no-untyped-def]
        recorded.extend(row.params["id"] for row in pending.rows)
        record_start(self, pending)

    monkeypatch.setattr(Metering, "_record_start", recording)
    job = submit(api, world["key"], world["domain"], WEATHER)
    first, second = run(api, world["key"], job["id"]), run(api, world["key"], job["id"])  # inputs prepared, ready
    assert recorded == [first["id"], second["id"]]


def test_a_run_whose_inputs_are_prepared_first_hands_its_start_record_off_before_preparing(  # type: ignore[no-untyped-def]
        api, world, monkeypatch) -> None:
    from sandbox.billing.usage import Metering
    from sandbox.runs import RunService

    events: list[str] = []
    in_background, ready, prepared = Metering._in_background, RunService.ready, RunService.prepared

    def handing(self, task):  # type: ignore[no-untyped-def]
        events.append("start handed off")
        in_background(self, task)

    def checking(self, grant, tables):  # type: ignore[no-untyped-def]
        found = ready(self, grant, tables)
        events.append("ready" if found else "to prepare")
        return found

    def preparing(self, grant, table):  # type: ignore[no-untyped-def]
        events.append("prepared")
        return prepared(self, grant, table)

    monkeypatch.setattr(Metering, "_in_background", handing)
    monkeypatch.setattr(RunService, "ready", checking)
    monkeypatch.setattr(RunService, "prepared", preparing)
    job = submit(api, world["key"], world["domain"], WEATHER)
    assert run(api, world["key"], job["id"])["status"] == "succeeded"
    assert events[:3] == ["to prepare", "start handed off", "prepared"]  # the grant's first run prepares inputs


def test_a_runs_start_record_is_durable_before_the_run_ends(api, world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Crash safety: once the worker has answered, and before the run's final record is committed, its `running`
    row is in the store without the run's own thread waiting for it (a crash then leaves a record to recover)."""
    import pickle
    import time

    from sqlalchemy import text

    from sandbox.executor.pool import WorkerPool

    engine = api.http.app.state.sluice.engine
    seen: list[str | None] = []
    call = WorkerPool._call

    def answered(self, worker, key, payload, *args):  # type: ignore[no-untyped-def]
        outcome = call(self, worker, key, payload, *args)
        run_id = pickle.loads(payload).result_path.stem  # results/<run id>.parquet
        deadline = time.monotonic() + 10
        status = None
        while status is None and time.monotonic() < deadline:
            with engine.connect() as con:
                status = con.execute(text("SELECT status FROM runs WHERE id = :id"), {"id": run_id}).scalar()
            time.sleep(0.01)
        seen.append(status)
        return outcome

    monkeypatch.setattr(WorkerPool, "_call", answered)
    job = submit(api, world["key"], world["domain"], WEATHER)
    first = run(api, world["key"], job["id"])  # inputs prepared first
    second = run(api, world["key"], job["id"])
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")
    assert seen == ["running", "running"]
