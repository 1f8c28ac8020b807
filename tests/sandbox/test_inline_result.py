"""A run POST that asks for its result: the result in the response, as a download audited and metered with the run."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.sandbox import test_jobs_api
from tests.sandbox.test_jobs_api import WEATHER, run, submit

city_files = test_jobs_api.city_files  # the city data and the health operator's world, as fixtures here too
world = test_jobs_api.world


def _audit(api: Any) -> list[dict[str, Any]]:
    _, reg = api.actor("regulator", "regulator")
    return list(api.ok("GET", "/v1/audit/events", reg, params={"limit": 1000})["events"])


def _downloads(api: Any, run_id: str) -> list[dict[str, Any]]:
    events = api.ok("GET", "/v1/usage", api.admin_key, params={"limit": 5000})["events"]
    return [e for e in events if e["kind"] == "download" and str(e["source_id"]).startswith(f"{run_id}/")]


def test_a_run_asked_for_its_result_answers_with_the_result_audited_and_metered_with_the_run(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    resp = api.call("POST", f"/v1/jobs/{job['id']}/runs", world["key"], json={"params": {}, "result": "arrow"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["content-type"] == "application/vnd.apache.arrow.stream"
    run_id = resp.headers["X-Run-Id"]
    assert resp.headers["Location"] == f"/v1/runs/{run_id}"
    assert resp.headers["X-Result-SHA256"] == hashlib.sha256(resp.content).hexdigest()
    record = api.ok("GET", f"/v1/runs/{run_id}", world["key"])
    assert record["status"] == "succeeded" and resp.headers["X-Result-Parquet-SHA256"] == record["result_sha256"]
    assert resp.headers["X-Result-Rows"] == str(record["result_rows"]) == "9"
    inline = pa.ipc.open_stream(resp.content).read_all()
    stored = pq.read_table(io.BytesIO(api.call("GET", f"/v1/runs/{run_id}/result?format=parquet",
                                               world["key"]).content))
    assert inline.equals(stored)
    events = _audit(api)
    created = next(i for i, a in enumerate(events) if a["action"] == "run:create"
                   and a["resource"]["name"] == f"run/{run_id}")
    read = events[created + 1]  # the download's own record, right after the run's, in the same commit
    assert (read["action"], read["decision"], read["resource"]["name"]) == ("result:read", "allow", f"run/{run_id}")
    assert read["trace_id"] == events[created]["trace_id"] and read["seq"] == events[created]["seq"] + 1
    assert read["detail"]["format"] == "arrow" and read["detail"]["with_run"] is True
    assert read["detail"]["sent_sha256"] == resp.headers["X-Result-SHA256"]
    metered = _downloads(api, run_id)  # the inline download and the parquet GET above
    assert len(metered) == 2 and all(e["datasets"] for e in metered)
    assert sorted(e["source_id"].rsplit("/", 1)[1] for e in metered) == ["arrow", "parquet"]
    inline_event = next(e for e in metered if e["source_id"].endswith("/arrow"))
    assert int(inline_event["quantities"]["download_bytes"]) == len(resp.content)


def test_a_run_that_fails_answers_with_its_record_and_nothing_is_downloaded(api, world) -> None:  # type: ignore[no-untyped-def]
    sql = "SELECT district, sum(CAST(temperature * 1000 AS TINYINT)) AS s FROM weather GROUP BY district"
    job = submit(api, world["key"], world["domain"], sql)
    resp = api.call("POST", f"/v1/jobs/{job['id']}/runs", world["key"], json={"params": {}, "result": "csv"})
    assert resp.status_code == 201 and resp.headers["content-type"] == "application/json"
    record = resp.json()
    assert record["status"] == "failed"
    assert not [a for a in _audit(api) if a["action"] == "result:read"]
    assert _downloads(api, record["id"]) == []


def test_a_replayed_run_asked_for_its_result_sends_it_again_as_a_new_download(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    headers = {**api.as_(world["key"]), "Idempotency-Key": "k1"}
    first = api.http.post(f"/v1/jobs/{job['id']}/runs", json={"result": "json"}, headers=headers)
    again = api.http.post(f"/v1/jobs/{job['id']}/runs", json={"result": "json"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.headers["X-Run-Id"] == again.headers["X-Run-Id"]
    assert json.loads(first.content) == json.loads(again.content) and len(json.loads(first.content)) == 9
    reads = [a for a in _audit(api) if a["action"] == "result:read"]
    assert len(reads) == 2 and len(_downloads(api, first.headers["X-Run-Id"])) == 2


def test_a_caller_without_result_read_is_refused_before_the_run(api, world) -> None:  # type: ignore[no-untyped-def]
    from policy.authz import Authorizer
    from sandbox.store.db import load_policy_rows

    state = api.http.app.state.sluice
    with state.sessions() as s:
        rows = [r for r in load_policy_rows(s) if r[1:4] != ("operator.operator", "result", "read")]
    state.authorizer = Authorizer(rows)
    job = submit(api, world["key"], world["domain"], WEATHER)
    resp = api.call("POST", f"/v1/jobs/{job['id']}/runs", world["key"], json={"result": "csv"})
    assert resp.status_code == 403 and resp.json()["code"] == "permission_denied"
    assert api.ok("GET", "/v1/runs", world["key"], params={"job_id": job["id"]}) == []  # nothing ran
    refused = [a for a in _audit(api) if a["action"] == "run:create" and a["decision"] == "deny"]
    assert len(refused) == 1 and "result" in refused[0]["reason"]
    assert run(api, world["key"], job["id"])["status"] == "succeeded"  # without `result`, the run is allowed


def test_an_unknown_result_format_is_refused(api, world) -> None:  # type: ignore[no-untyped-def]
    job = submit(api, world["key"], world["domain"], WEATHER)
    resp = api.call("POST", f"/v1/jobs/{job['id']}/runs", world["key"], json={"result": "xlsx"})
    assert resp.status_code == 422 and resp.json()["code"] == "validation_error"
