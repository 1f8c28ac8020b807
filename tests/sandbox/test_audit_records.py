"""Audit records: every route writes one; the outcome, status and code are what happened; a record commits
with what it describes or the request fails; refusals commit with what they refuse; limits and outages are
recorded; records hold no data values."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from sluice_api import Api
from sqlalchemy import func, select
from starlette.routing import Route
from starlette.testclient import TestClient

from sandbox.app import create_app
from sandbox.app.deps import NOT_AUDITED, PUBLIC_ROUTES, route_gate
from sandbox.audit import AuditDraft
from sandbox.bootstrap import init_home, rotate_signing_key
from sandbox.clock import ManualClock
from sandbox.config import Settings
from sandbox.executor import WorkerPool
from sandbox.ratelimit import RateLimiter
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditEvent, Organization, Run


def _rows(api: Api) -> list[AuditEvent]:
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine)() as s:
        rows = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    engine.dispose()
    return rows


def _count(api: Api, model: Any = AuditEvent, *where: Any) -> int:
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine)() as s:
        n = int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)
    engine.dispose()
    return n


def _flatten(routes: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            out += _flatten(list(original.routes), prefix + route.include_context.prefix)
        else:
            out.append((prefix, route))
    return out


def test_every_route_writes_an_audit_record(api: Api) -> None:
    app = api.http.app
    app.state.sluice.limiter = RateLimiter(0, 1)  # type: ignore[attr-defined]  # limiting has its own test
    silent, walked = [], 0
    for prefix, route in _flatten(list(app.routes)):  # type: ignore[attr-defined]
        if not isinstance(route, Route):
            continue
        path = prefix + route.path
        if path in NOT_AUDITED:
            continue
        assert isinstance(route, APIRoute) and route_gate(route) is not None, f"{path} has no audited gate"
        concrete = re.sub(r"\{[^}]+\}", "nosuchthing", path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            for key in (None, api.admin_key):
                before = _count(api)
                resp = api.call(method, concrete, key, json={} if method == "POST" else None)
                walked += 1
                if _count(api) <= before:
                    silent.append((method, path, "anonymous" if key is None else "admin", resp.status_code))
    assert walked > 40
    assert not silent, f"routes that wrote no audit record: {silent}"


def test_not_audited_routes_are_only_infrastructure() -> None:
    assert {p for _, p in PUBLIC_ROUTES if not p.startswith(("/v1/", "/console/"))} == NOT_AUDITED


def test_a_validation_failure_is_recorded_as_invalid_with_the_status_sent(api: Api) -> None:
    resp = api.call("POST", "/v1/orgs", api.admin_key, json={"name": "x"})
    assert resp.status_code == 422
    row = next(r for r in reversed(_rows(api)) if r.action == "org:create")
    assert (row.decision, row.status, row.code) == ("invalid", 422, "validation_error")
    assert row.detail["errors"] == [{"loc": ["body", "kind"], "type": "missing"}]
    assert row.trace_id == resp.headers["x-trace-id"]


def test_a_bad_query_parameter_is_recorded_as_invalid(api: Api) -> None:
    _, reg = api.actor("regulator", "regulator")
    resp = api.call("GET", "/v1/runs/run_x/result", reg, params={"format": "xml"})
    assert resp.status_code == 422
    row = _rows(api)[-1]
    assert (row.action, row.decision, row.status, row.code) == ("result:read", "invalid", 422, "validation_error")


def test_a_truncated_json_body_is_recorded_and_attributed(api: Api) -> None:
    resp = api.http.post("/v1/orgs", content=b'{"name": "Acme", "kind": "oper',
                         headers={**api.as_(api.admin_key), "content-type": "application/json"})
    assert resp.status_code == 422
    row = _rows(api)[-1]
    assert (row.action, row.decision, row.status, row.code) == ("org:create", "invalid", 422, "validation_error")
    assert row.actor_id is not None and "Acme" not in json.dumps(row.detail)
    anonymous = api.http.post("/v1/orgs", content=b"{", headers={"content-type": "application/json"})
    assert anonymous.status_code == 422 and _rows(api)[-1].actor_id is None


def test_statuses_are_the_ones_sent(api: Api) -> None:
    op = api.org("operator")
    grant = api.grant(op)
    rows = _rows(api)
    assert next(r for r in rows if r.action == "org:create" and r.decision == "allow").status == 201
    created = next(r for r in rows if r.action == "grant:create")
    assert (created.status, created.resource_org_id, created.grant_id) == (201, op, grant["id"])
    assert created.resource == f"grant/{grant['id']}"


def _sabotage(monkeypatch: pytest.MonkeyPatch, decision: str) -> None:
    """Audit rows with `decision` can no longer be stored (a NOT NULL column left empty)."""
    original = AuditDraft.to_row

    def broken(self: AuditDraft, at: Any) -> AuditEvent:
        row = original(self, at)
        if self.decision == decision:
            row.via = None  # type: ignore[assignment]
        return row

    monkeypatch.setattr(AuditDraft, "to_row", broken)


def test_a_change_whose_record_cannot_be_written_fails_and_is_not_kept(api: Api, monkeypatch: pytest.MonkeyPatch
                                                                        ) -> None:
    _sabotage(monkeypatch, "allow")
    resp = api.call("POST", "/v1/orgs", api.admin_key, json={"name": "Ghost Org", "kind": "operator"})
    assert resp.status_code == 500
    assert _count(api, Organization, Organization.name == "Ghost Org") == 0
    monkeypatch.undo()
    assert api.call("GET", "/v1/me", api.admin_key).status_code == 200
    outage = [r for r in _rows(api) if r.action == "audit:outage"]
    assert len(outage) == 1 and outage[0].detail["failed_requests"] >= 1 and outage[0].decision == "failed"
    assert api.ok("GET", "/healthz", None)["status"] == "ok"


SCENARIO = {"name": "s", "data_used": "d", "supply": "s", "problem": "p"}
WEATHER = "district,temperature\n" + "".join(f"d{i % 3},{i}.5\n" for i in range(30))


def _approved_job(api: Api) -> tuple[str, str, str]:
    _, steward = api.actor("provider", "data_steward")
    api.register(steward, dataset_id="weather", content=WEATHER, domain="meteorology")
    op, key = api.actor("operator", "operator")
    grant = api.grant(op, scope="domain", domains=["meteorology"], auto_approve=True)["id"]
    job = api.ok("POST", "/v1/jobs", key, json={"grant_id": grant, "title": "t", "purpose": "rain by district",
                                                "sql": "SELECT district, avg(temperature) AS t FROM weather "
                                                       "WHERE district <> 'SECRET_DISTRICT' GROUP BY 1"})
    return key, grant, job["id"]


def test_a_refused_run_and_its_record_commit_together(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    key, grant, job = _approved_job(api)
    api.ok("POST", f"/v1/grants/{grant}/suspend", api.admin_key, json={"reason": "inquiry"})
    refused = api.call("POST", f"/v1/jobs/{job}/runs", key, json={})
    assert refused.status_code == 422 and refused.json()["code"] == "grant_suspended"
    row = next(r for r in reversed(_rows(api)) if r.action == "run:create")
    assert (row.decision, row.status, row.grant_id) == ("refused", 422, grant)
    assert _count(api, Run, Run.id == refused.json()["context"]["run_id"]) == 1
    _sabotage(monkeypatch, "refused")
    failed = api.call("POST", f"/v1/jobs/{job}/runs", key, json={})
    assert failed.status_code == 500
    assert _count(api, Run, Run.status == "refused") == 1  # the second refused run was not kept without its record


def test_a_rejected_job_and_its_refusal_commit_together(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    key, grant, _ = _approved_job(api)
    _sabotage(monkeypatch, "refused")
    from sandbox.store.models import Job

    before = _count(api, Job)
    resp = api.call("POST", "/v1/jobs", key, json={"grant_id": grant, "title": "t", "purpose": "p",
                                                   "sql": "SELECT * FROM nowhere_table"})
    assert resp.status_code == 500 and _count(api, Job) == before


def test_records_hold_no_data_values(api: Api) -> None:
    _approved_job(api)
    dumped = json.dumps([{c.key: getattr(r, c.key) for c in AuditEvent.__table__.columns} for r in _rows(api)],
                        default=str)
    assert "SECRET_DISTRICT" not in dumped and "d1," not in dumped
    job = next(r for r in _rows(api) if r.action == "job:create")
    assert job.sql_sha256 and job.datasets == ",weather," and job.detail["purpose"] == "rain by district"


def test_key_rotation_that_cannot_be_audited_does_not_happen(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from disclosure.signing import KeyRing

    ring = KeyRing(api.settings.keys_dir)
    before = (ring.active_kid("disclosure"), sorted(ring.public_keys("disclosure")))

    def down(*_: Any, **__: Any) -> None:
        raise RuntimeError("control store unreachable")

    monkeypatch.setattr("sandbox.bootstrap.record", down)
    with pytest.raises(RuntimeError):
        rotate_signing_key(api.settings, api.clock, "disclosure")
    assert (ring.active_kid("disclosure"), sorted(ring.public_keys("disclosure"))) == before
    monkeypatch.undo()
    done = rotate_signing_key(api.settings, api.clock, "disclosure")
    assert ring.active_kid("disclosure") == done["new_kid"]
    row = _rows(api)[-1]
    assert row.action == "signing_key:rotate" and row.detail["new_kid"] == done["new_kid"]


@pytest.fixture
def limited(settings: Settings, clock: ManualClock, tmp_path: Path, worker_pool: WorkerPool) -> Any:
    settings = settings.model_copy(update={"unauthenticated_rate_per_minute": 6, "unauthenticated_burst": 3})
    admin = init_home(settings, clock).api_key
    assert admin
    app = create_app(settings, clock, pool=worker_pool)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Api(settings=settings, clock=clock, http=http, admin_key=admin, platform_org_id="", tmp=tmp_path)


def test_unauthenticated_requests_are_limited_per_address_and_the_limiting_is_recorded(limited: Api) -> None:
    statuses = [limited.call("GET", "/v1/catalogue", None).status_code for _ in range(3)]
    bad_key = [limited.call("GET", "/v1/orgs", "sk_0123456789ab_" + "A" * 43).status_code for _ in range(3)]
    assert statuses == [200, 200, 200] and bad_key == [429, 429, 429]
    resp = limited.call("GET", "/v1/domains", None)
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
    assert resp.json()["code"] == "rate_limited"
    assert limited.call("GET", "/v1/me", limited.admin_key).status_code == 200  # a valid key is not limited
    records = [r for r in _rows(limited) if r.action == "ratelimit:unauthenticated"]
    assert len(records) == 1 and records[0].decision == "deny" and records[0].client == "testclient"
    assert records[0].detail["limited_action"] == "org:read"
    assert len([r for r in _rows(limited) if r.action == "catalogue:read"]) == 3


def test_the_audit_log_checkpoint_schedule_runs_in_the_server(settings: Settings, clock: ManualClock,
                                                              worker_pool: WorkerPool) -> None:
    settings = settings.model_copy(update={"checkpoint_interval_seconds": 0.05, "log_integrate_interval_ms": 20})
    admin = init_home(settings, clock).api_key
    app = create_app(settings, clock, pool=worker_pool)
    with TestClient(app) as http:
        assert http.get("/v1/me", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        import time

        deadline = time.monotonic() + 20
        log = app.state.sluice.audit_log

        def covered() -> bool:  # the init record and the /v1/me record, in a scheduled checkpoint
            latest = log.latest()
            return latest is not None and latest.size >= 2

        while not covered() and time.monotonic() < deadline:
            clock.advance(timedelta(seconds=1))
            time.sleep(0.05)
        latest = log.latest()
    assert latest is not None and latest.reason == "schedule" and latest.size >= 2




def test_an_allowed_request_records_the_scope_that_allowed_it(api: Api) -> None:
    """A route that checks no single resource (a listing) keeps the gate's rule: who may do it, and how widely."""
    _, reg = api.actor("regulator", "regulator")
    assert api.call("GET", "/v1/runs", reg).status_code == 200
    listed = _rows(api)[-1]
    assert (listed.action, listed.decision) == ("run:read", "allow")
    assert listed.rule == "regulator.regulator may read run (other)"
