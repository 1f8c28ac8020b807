"""Under load: 3 real `sluice serve` processes on one PostgreSQL store take 500 concurrent requests (runs over
entity data with the release audit, reviews racing on the same jobs, result downloads, data-product calls, replayed
Idempotency-Keys),
then the store is checked: the audit log verifies with no sequence gaps, the bill equals the successful runs and
downloads and calls, no job or run changed state twice, and the release ledger holds every released cell exactly
once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from served_world import bearer, ok
from sqlalchemy import func, select

from bench.server import Server
from disclosure.checkpoint import load_verifier_key
from disclosure.export import verify_export
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditEvent, Job, JobReview, ReleaseCell, Run, UsageEventRow

SERVERS = 3
REQUESTS = 500
K = 5
PARAMS = [1000 + 10 * i for i in range(15)]
JOB_SQL = "SELECT district, count(*) AS n, sum(income) AS income FROM people WHERE income >= $m GROUP BY district"
PRICES = {"runs": Decimal("0.50"), "downloads": Decimal("0.10")}
CALL_PRICE = Decimal("0.40")


def people_csv() -> str:
    """400 people in 4 districts; incomes spread so that each `income >= $m` filter selects another entity set."""
    rows = ["person_id,district,income"]
    rows += [f"p{i:04d},d{i % 4},{1000 + (i * 7) % 400}" for i in range(400)]
    return "\n".join(rows) + "\n"


def set_up(base: str, admin_key: str) -> dict[str, Any]:
    """An entity dataset, an operator with an auto-approving grant and one needing review, two reviewers,
    platform prices, 40 jobs pending review and 10 succeeded runs to download."""
    admin = bearer(admin_key)
    with httpx.Client(base_url=base, timeout=120) as http:
        me = ok(http.get("/v1/me", headers=admin))

        def key(org: str, role: str) -> str:
            return str(ok(http.post("/v1/principals", headers=admin, json={
                "org_id": org, "name": f"{role}-{org[-4:]}-{len(role)}", "roles": [role]}))["api_key"])

        provider = ok(http.post("/v1/orgs", headers=admin, json={"name": "Provider", "kind": "provider"}))["id"]
        operator = ok(http.post("/v1/orgs", headers=admin, json={"name": "Operator", "kind": "operator"}))["id"]
        steward, analyst, finance = key(provider, "data_steward"), key(operator, "operator"), key(me["org_id"],
                                                                                                   "finance")
        reviewers = [str(ok(http.post("/v1/principals", headers=admin, json={
            "org_id": me["org_id"], "name": f"reviewer-{i}", "roles": ["reviewer"]}))["api_key"]) for i in (1, 2)]
        meta = {"id": "people", "title": "people", "domain": "other", "update_frequency": "daily", "grade": "general",
                "entity_column": "person_id", "population": "load_people",
                "columns": {"person_id": {"constraint": "join"}, "district": {"constraint": "group"},
                            "income": {"constraint": "aggregate"}},
                "column_types": {"person_id": "VARCHAR", "district": "VARCHAR", "income": "BIGINT"}}
        ok(http.post("/v1/datasets", headers=bearer(steward), data={"metadata": json.dumps(meta)},
                     files={"file": ("people.csv", people_csv().encode())}))
        ok(http.post("/v1/registrations/people/1/certify-now", headers=admin,
                     json={"reason": "test set-up: certified through the shortcut"}))
        until = datetime(2099, 1, 1, tzinfo=UTC).isoformat()
        grants = [ok(http.post("/v1/grants", headers=admin, json={
            "operator_org_id": operator, "scope": "whole", "purpose_class": "industry", "auto_approve": auto,
            "min_group_size": K, "valid_until": until}))["id"] for auto in (True, False)]
        job = ok(http.post("/v1/jobs", headers=bearer(analyst), json={
            "grant_id": grants[0], "title": "income by district", "purpose": "p", "sql": JOB_SQL,
            "parameters": {"m": "BIGINT"}}))
        assert job["state"] == "approved", job
        pending = []
        for i in range(40):
            j = ok(http.post("/v1/jobs", headers=bearer(analyst), json={
                "grant_id": grants[1], "title": f"review {i}", "purpose": "p", "sql": JOB_SQL,
                "parameters": {"m": "BIGINT"}}))
            assert j["state"] == "pending_review", j
            pending.append(j["id"])
        ok(http.post("/v1/prices/platform", headers=bearer(finance),
                     json={"rates": {k: str(v) for k, v in PRICES.items()}}))
        # a data product on the same kind of query: listed, subscribed by a customer, priced per call
        ok(http.post("/v1/prices/categories", headers=bearer(finance),
                     json={"code": "query_interface", "name": "query interface"}))
        ok(http.post("/v1/prices/caps", headers=bearer(finance), json={"caps": [
            {"basis": "per_call", "category": "query_interface", "unit": "call", "price": "0.50"}]}))
        product_job = ok(http.post("/v1/jobs", headers=bearer(analyst), json={
            "grant_id": grants[0], "title": "product", "purpose": "a data product", "sql": JOB_SQL,
            "parameters": {"m": "BIGINT"}}))
        product = ok(http.post("/v1/products", headers=bearer(analyst), json={
            "job_id": product_job["id"], "name": "Income lookup", "description": "income by district",
            "parameters": {"m": {"values": PARAMS}}, "price": {"category": "query_interface", "basis": "per_call",
                                                             "unit": "call", "unit_price": str(CALL_PRICE)}}))
        ok(http.post(f"/v1/products/{product['id']}/submit", headers=bearer(analyst)))
        ok(http.post(f"/v1/products/{product['id']}/review", headers=bearer(reviewers[0]),
                     json={"decision": "approve", "comment": "fits the grant"}))
        customer = ok(http.post("/v1/orgs", headers=admin, json={"name": "Customer", "kind": "customer"}))["id"]
        customer_key = key(customer, "customer")
        operator_finance = key(operator, "finance")
        ok(http.post(f"/v1/products/{product['id']}/subscriptions", headers=bearer(customer_key)))
        downloadable = []
        for m in PARAMS[:10]:
            run = ok(http.post(f"/v1/jobs/{job['id']}/runs", headers=bearer(analyst), json={"params": {"m": m}}))
            assert run["status"] == "succeeded", run
            downloadable.append(run["id"])
    return {"operator": operator, "analyst": bearer(analyst), "finance": bearer(finance), "job": job["id"],
            "reviewers": [bearer(r) for r in reviewers], "pending": pending, "downloadable": downloadable,
            "product": product["id"], "customer": customer, "customer_key": bearer(customer_key),
            "operator_finance": bearer(operator_finance)}


def requests(world: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """The mix: 250 runs (50 of them replays of 25 Idempotency-Keys), 80 racing reviews, 100 downloads and 70
    product calls (20 of them replays of 10 keys)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(70):
        headers = dict(world["customer_key"])
        if i < 20:
            headers["Idempotency-Key"] = f"call-{i // 2}"
        out.append(("call", f"/v1/products/{world['product']}/invoke",
                    {"headers": headers, "json": {"params": {"m": PARAMS[i % len(PARAMS)]}}}))
    for i in range(250):
        headers = dict(world["analyst"])
        if i < 50:
            headers["Idempotency-Key"] = f"replayed-{i // 2}"
        out.append(("run", f"/v1/jobs/{world['job']}/runs",
                    {"headers": headers, "json": {"params": {"m": PARAMS[i % len(PARAMS)]}}}))
    for job in world["pending"]:
        for reviewer, decision in zip(world["reviewers"], ("approve", "reject"), strict=True):
            out.append(("review", f"/v1/jobs/{job}/review",
                        {"headers": reviewer, "json": {"decision": decision, "comment": "load test"}}))
    formats = itertools.cycle(["json", "csv", "parquet"])
    for i in range(100):
        run = world["downloadable"][i % len(world["downloadable"])]
        out.append(("download", f"/v1/runs/{run}/result", {"headers": world["analyst"],
                                                           "params": {"format": next(formats)}}))
    assert len(out) == REQUESTS
    return out


async def fire(bases: list[str], mix: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, int, Any]]:
    """Every request at once, spread over the servers; (kind, status, body or None)."""
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def one(i: int, kind: str, path: str, kw: dict[str, Any]) -> tuple[str, int, Any]:
            method = "GET" if kind == "download" else "POST"
            resp = await client.request(method, bases[i % len(bases)] + path, **kw)
            body = resp.json() if kind != "download" or resp.status_code >= 400 else None
            return kind, resp.status_code, body

        return await asyncio.gather(*(one(i, *m) for i, m in enumerate(mix)))


@pytest.mark.slow
def test_three_servers_on_one_postgresql_stay_correct_under_500_concurrent_requests(
        tmp_path: Path, fresh_postgres_url: str) -> None:
    home = tmp_path / "home"
    settings = {"SLUICE_DATABASE_URL": fresh_postgres_url, "SLUICE_WORKERS": "1", "SLUICE_RUN_THREADS": "1",
                "SLUICE_LOG_INTEGRATE_INTERVAL_MS": "200", "SLUICE_CHECKPOINT_INTERVAL_SECONDS": "5",
                "SLUICE_UNAUTHENTICATED_RATE_PER_MINUTE": "0"}
    servers = [Server(home, settings, log=tmp_path / f"server-{i}.log") for i in range(SERVERS)]
    admin_key = servers[0].init()
    try:
        for server in servers:
            server.start()
        world = set_up(servers[0].base, admin_key)
        results = asyncio.run(fire([s.base for s in servers], requests(world)))
        with httpx.Client(base_url=servers[1].base, timeout=120) as http:
            export = http.get("/v1/audit/export", headers=bearer(admin_key))
            assert export.status_code == 200, export.text
            keys = ok(http.get("/v1/keys"))["checkpoint_verifier_keys"]
            zone = ZoneInfo("Asia/Shanghai")
            period = datetime.now(UTC).astimezone(zone).strftime("%Y-%m")
            bill = ok(http.post("/v1/bills", headers=world["finance"],
                                json={"payer_org_id": world["operator"], "period": period}))
            customer_bill = ok(http.post("/v1/bills", headers=world["operator_finance"],
                                         json={"payer_org_id": world["customer"], "period": period}))
    finally:
        for server in servers:
            server.stop()

    # every request got a definite answer; only racing reviews may lose, and they lose with 409
    statuses = Counter((kind, status) for kind, status, _ in results)
    # a replayed call whose first attempt has not committed yet is answered 409 call_in_progress ("retry shortly")
    in_progress = [body for kind, status, body in results if (kind, status) == ("call", 409)]
    assert all(b["code"] == "call_in_progress" for b in in_progress), in_progress
    unexpected = [(kind, status, body) for kind, status, body in results
                  if (kind, status) not in {("run", 201), ("review", 200), ("review", 409), ("download", 200),
                                            ("call", 201), ("call", 409)}]
    errors = [line for i in range(SERVERS) for line in (tmp_path / f"server-{i}.log").read_text("utf-8").splitlines()
              if '"level": "error"' in line]
    assert not unexpected, (statuses, unexpected[:5], errors[:5])
    assert statuses[("run", 201)] == 250 and statuses[("download", 200)] == 100
    assert statuses[("call", 201)] + len(in_progress) == 70 and len(in_progress) <= 10
    assert statuses[("review", 200)] == 40 and statuses[("review", 409)] == 40

    engine = make_engine(fresh_postgres_url)
    with session_factory(engine)() as s:
        # --- the audit log verifies, and its sequence has no gaps
        report = verify_export(export.content, [load_verifier_key(next(iter(keys.values())).encode())])
        assert report.ok, report.problems
        total = s.scalar(select(func.count()).select_from(AuditEvent))
        seqs = s.scalars(select(AuditEvent.seq).where(AuditEvent.seq.is_not(None)).order_by(AuditEvent.seq)).all()
        assert seqs == list(range(total))  # every record sequenced (the servers integrate the rest as they stop)
        assert total - 4 <= report.tree_size <= total  # only the export's own record and the bills' came after it

        # --- no run changed state twice: every run final, one allowed run:create record each, nothing recovered
        runs = {r.id: r for r in s.scalars(select(Run))}
        answered = {body["id"] for kind, _, body in results if kind == "run"}
        assert len(answered) == 250 - 25  # each replayed key answered with one run, on whichever server
        calls = {body["call"]["id"]: body["call"] for kind, status, body in results if (kind, status) == ("call", 201)}
        assert len(calls) == 70 - 10 and {c["status"] for c in calls.values()} == {"succeeded"}
        call_runs = {c["run_id"] for c in calls.values()}
        assert len(call_runs) == len(calls)
        assert answered | call_runs | set(world["downloadable"]) == set(runs)
        assert {r.status for r in runs.values()} == {"succeeded"}
        created = Counter(s.scalars(select(AuditEvent.resource).where(AuditEvent.action == "run:create",
                                                                       AuditEvent.decision == "allow")).all())
        assert sum(created.values()) == 250 + 10  # one record per request, replays included
        for run_id in set(runs) - call_runs:
            assert created[f"run/{run_id}"] >= 1, run_id
        assert s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "run:recover")) == 0

        # --- no job changed state twice: each raced job decided once, by the review that was kept
        for job_id in world["pending"]:
            job = s.get(Job, job_id)
            reviews = s.scalars(select(JobReview).where(JobReview.job_id == job_id)).all()
            assert job is not None and len(reviews) == 1, job_id
            assert job.state == {"approve": "approved", "reject": "rejected"}[reviews[0].decision]
            decided = s.scalars(select(AuditEvent.detail).where(AuditEvent.action == "job:review",
                                                                AuditEvent.resource == f"job/{job_id}",
                                                                AuditEvent.status == 200)).all()
            assert len(decided) == 1

        # --- the bill equals the successful runs and downloads (each usage event recorded once)
        events = Counter(s.scalars(select(UsageEventRow.kind)).all())
        assert events["run"] == len(runs) and events["download"] == 100 and events["call"] == len(calls)
        billed: dict[tuple[str, str], list[Decimal]] = {}
        for ln in bill["lines"]:
            got = billed.setdefault((ln["meter"], ln["outcome"]), [Decimal(0), Decimal(0)])
            got[0] += Decimal(ln["quantity"])
            got[1] += Decimal(ln["amount"])
        assert billed[("runs", "succeeded")] == [len(runs), PRICES["runs"] * len(runs)]
        assert billed[("downloads", "succeeded")] == [100, PRICES["downloads"] * 100]
        assert {outcome for _, outcome in billed} == {"succeeded"}
        charged = sum(Decimal(ln["base_quantity"]) for ln in customer_bill["lines"]
                      if ln["meter"] == "calls" and ln["outcome"] == "succeeded")
        assert charged == len(calls) and Decimal(customer_bill["total"]) > 0

        # --- the release ledger holds every released cell exactly once
        cells = s.execute(select(ReleaseCell.run_id, ReleaseCell.population, ReleaseCell.measure,
                                 ReleaseCell.digest)).all()
        assert len(cells) == len(set(cells)), "a released cell was recorded twice"
        by_run = Counter(c.run_id for c in cells)
        assert set(by_run) <= set(runs)
        for run in runs.values():
            released = run.result_rows * 2 - run.suppressed_cells  # two measures per row: n and income
            assert by_run[run.id] == released, (run.id, by_run[run.id], run.result_rows, run.suppressed_cells)
        assert sum(r.suppression.get("difference_audit", 0) for r in runs.values()) > 0  # the audit did work
    engine.dispose()
