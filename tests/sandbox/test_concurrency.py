"""Concurrent runs against a real `sluice serve`: every run recorded once, with its audit row;
concurrent retries with one Idempotency-Key yield one run."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from bench.server import Server

WEATHER = "district,temperature\n" + "".join(f"d{i % 4},{i}.5\n" for i in range(400))


@pytest.mark.slow
def test_concurrent_runs_are_each_recorded_once_and_idempotent_retries_collapse(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Server(home, {"SLUICE_WORKERS": "2", "SLUICE_RUN_THREADS": "1"})
    admin = {"Authorization": f"Bearer {server.init()}"}
    server.start()
    try:
        base = server.base
        http = httpx.Client(base_url=base, timeout=60)

        def ok(resp: httpx.Response) -> dict:  # type: ignore[type-arg]
            assert resp.status_code < 400, resp.text
            return resp.json()  # type: ignore[no-any-return]

        provider = ok(http.post("/v1/orgs", headers=admin, json={"name": "P", "kind": "provider"}))["id"]
        operator = ok(http.post("/v1/orgs", headers=admin, json={"name": "O", "kind": "operator"}))["id"]
        steward = {"Authorization": "Bearer " + ok(http.post("/v1/principals", headers=admin, json={
            "org_id": provider, "name": "s", "roles": ["data_steward"]}))["api_key"]}
        analyst = {"Authorization": "Bearer " + ok(http.post("/v1/principals", headers=admin, json={
            "org_id": operator, "name": "a", "roles": ["operator"]}))["api_key"]}
        meta = {"id": "weather", "title": "w", "domain": "meteorology", "update_frequency": "daily",
                "grade": "general"}
        ok(http.post("/v1/datasets", headers=steward, data={"metadata": json.dumps(meta)},
                     files={"file": ("w.csv", WEATHER.encode())}))
        ok(http.post("/v1/registrations/weather/1/certify-now", headers=admin,
                     json={"reason": "test set-up (shortcut)"}))
        grant = ok(http.post("/v1/grants", headers=admin, json={
            "operator_org_id": operator, "scope": "domain", "domains": ["meteorology"], "auto_approve": True,
            "purpose_class": "industry", "valid_until": (datetime.now(UTC) + timedelta(days=9)).isoformat()}))
        job = ok(http.post("/v1/jobs", headers=analyst, json={
            "grant_id": grant["id"], "title": "t", "purpose": "p",
            "sql": "SELECT district, avg(temperature) AS t FROM weather GROUP BY district"}))

        def run(key: str | None) -> str:
            headers = {**analyst, **({"Idempotency-Key": key} if key else {})}
            with httpx.Client(base_url=base, timeout=60) as c:
                return str(ok(c.post(f"/v1/jobs/{job['id']}/runs", headers=headers, json={}))["id"])

        with ThreadPoolExecutor(max_workers=12) as pool:
            distinct = list(pool.map(run, [None] * 24))
            same = list(pool.map(run, ["retry-1"] * 12))
    finally:
        server.stop()
    assert len(set(distinct)) == 24
    assert len(set(same)) == 1
    engine = create_engine(f"sqlite:///{home / 'sluice.db'}")
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT count(*) FROM runs WHERE status = 'succeeded'")).scalar_one()
        audited = conn.execute(text("SELECT count(*) FROM audit_events WHERE action = 'run:create' "
                                    "AND decision = 'allow'")).scalar_one()
    engine.dispose()
    assert runs == 25
    assert audited == 24 + 12  # every request is an audited access, replays included
