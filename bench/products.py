"""Product-call throughput: calls per second on a small product with 32 concurrent clients, each call
authorized, audited (group commit), run in the locked worker, metered (run + call usage events) and billed,
against a bare FastAPI + DuckDB endpoint that runs the same query over the same Parquet input, measured in the
same run (`python -m bench --products-only`).

Both sides are uvicorn processes on loopback driven by the same asyncio client; they alternate in rounds so both
see the same machine state. After the load, every call the clients saw succeed must have exactly one `call` usage
event, and the customer's bill must reconcile with them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bench.http import ok, wait_healthy
from bench.server import Server, free_port

DISTRICTS = ["东区", "西区", "南区", "北区", "中区", "高新区"]
INDUSTRIES = ["制造业", "批发和零售业", "建筑业", "住宿和餐饮业"]
SQL = ("SELECT industry, count(*) AS firms, sum(employees) AS employees FROM {table} WHERE district = $district "
       "GROUP BY industry")


def _csv(rows: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    lines = ["firm_id,district,industry,employees"]
    for i in range(rows):
        lines.append(f"f{i:06d},{rng.choice(DISTRICTS)},{rng.choice(INDUSTRIES)},{rng.randint(1, 500)}")
    return "\n".join(lines) + "\n"


def setup(server: Server, admin_key: str, rows: int) -> dict[str, Any]:
    """A provider's small dataset, an industry operator's product on it (listed), a subscribed customer."""
    http = httpx.Client(base_url=server.base, timeout=600)
    admin = {"Authorization": f"Bearer {admin_key}"}
    me = ok(http.get("/v1/me", headers=admin))

    def org(name: str, kind: str) -> str:
        return str(ok(http.post("/v1/orgs", headers=admin, json={"name": name, "kind": kind}))["id"])

    def principal(org_id: str, name: str, role: str) -> dict[str, str]:
        key = ok(http.post("/v1/principals", headers=admin, json={"org_id": org_id, "name": name, "roles": [role]}))
        return {"Authorization": f"Bearer {key['api_key']}"}

    provider, operator, customer = org("Bench Provider", "provider"), org("Bench Operator", "operator"), \
        org("Bench Customer", "customer")
    steward, analyst = principal(provider, "steward", "data_steward"), principal(operator, "analyst", "operator")
    op_finance = principal(operator, "finance", "finance")
    agency_finance = principal(me["org_id"], "finance", "finance")
    reviewer = principal(me["org_id"], "reviewer", "reviewer")
    buyer = principal(customer, "buyer", "customer")
    meta = {"id": "firms", "title": "Firms (synthetic)", "domain": "economy", "update_frequency": "monthly",
            "grade": "general", "columns": {"firm_id": {"constraint": "hidden"}, "district": {"constraint": "group"},
                                            "industry": {"constraint": "group"},
                                            "employees": {"constraint": "aggregate"}}}
    ok(http.post("/v1/datasets", headers=steward, data={"metadata": json.dumps(meta)},
                  files={"file": ("firms.csv", _csv(rows).encode("utf-8"))}))
    ok(http.post("/v1/registrations/firms/1/certify-now", headers=admin, json={"reason": "benchmark set-up"}))
    until = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    grant = ok(http.post("/v1/grants", headers=admin, json={
        "operator_org_id": operator, "scope": "whole", "purpose_class": "industry", "valid_until": until,
        "auto_approve": True}))["id"]
    ok(http.post("/v1/prices/categories", headers=agency_finance, json={"code": "query_interface",
                                                                        "name": "查询接口 query interface"}))
    ok(http.post("/v1/prices/caps", headers=agency_finance, json={"caps": [
        {"basis": "per_call", "category": "query_interface", "unit": "call", "price": "0.50"}]}))
    job = ok(http.post("/v1/jobs", headers=analyst, json={
        "grant_id": grant, "title": "firms by industry in a district", "purpose": "benchmark",
        "sql": SQL.format(table="firms"), "parameters": {"district": "VARCHAR"}}))
    if job["state"] != "approved":
        raise RuntimeError(f"benchmark job not approved: {job['state']} {job['findings']}")
    product = ok(http.post("/v1/products", headers=analyst, json={
        "job_id": job["id"], "name": "Firms by industry", "description": "benchmark product",
        "parameters": {"district": {"values": DISTRICTS}},
        "price": {"category": "query_interface", "basis": "per_call", "unit": "call", "unit_price": "0.10"}}))
    ok(http.post(f"/v1/products/{product['id']}/submit", headers=analyst))
    ok(http.post(f"/v1/products/{product['id']}/review", headers=reviewer, json={"decision": "approve"}))
    ok(http.post(f"/v1/products/{product['id']}/subscriptions", headers=buyer))
    return {"http": http, "product": product["id"], "buyer": buyer, "op_finance": op_finance,
            "agency_finance": agency_finance, "customer": customer}


class Bare:
    """The comparison: a bare FastAPI + DuckDB endpoint in its own uvicorn process, same query, same input."""

    def __init__(self, parquet: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "BENCH_BARE_PARQUET": str(parquet)}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "bench.bare_app:create_app",
                                      "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
                                     env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(self.proc, f"{self.base}/healthz", "bare endpoint")
        except RuntimeError:
            self.proc = None
            raise

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


async def _load(url: str, headers: dict[str, str], clients: int, seconds: float) -> dict[str, Any]:
    """`clients` concurrent clients calling `url` for `seconds`; calls per second and latency percentiles."""
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        async def client(i: int) -> None:
            n = i
            while time.perf_counter() < stop:
                body = {"params": {"district": DISTRICTS[n % len(DISTRICTS)]}}
                n += 1
                began = time.perf_counter()
                resp = await http.post(url, headers=headers, json=body)
                if resp.status_code != 201 or resp.json().get("call", {"status": "succeeded"})["status"] != (
                        "succeeded"):
                    errors.append(f"{resp.status_code} {resp.text[:200]}")
                    continue
                latencies.append((time.perf_counter() - began) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    pick = (lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)) if latencies else (
        lambda q: None)
    return {"calls": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
            "seconds": round(elapsed, 2), "calls_per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": pick(0.5), "p95_ms": pick(0.95)}


def measure(work: Path, *, rows: int = 20_000, clients: int = 32, seconds: float = 10.0, rounds: int = 2
            ) -> dict[str, Any]:
    """Set up, warm up, and alternate governed and bare rounds; then check metering and reconciliation."""
    home = work / "home-products"
    shutil.rmtree(home, ignore_errors=True)
    server = Server(home, {"SLUICE_WORKERS": "2", "SLUICE_UNAUTHENTICATED_RATE_PER_MINUTE": "100000"})
    admin_key = server.init()
    server.start()
    bare: Bare | None = None
    try:
        ctx = setup(server, admin_key, rows)
        governed_url = f"{server.base}/v1/products/{ctx['product']}/invoke"
        for d in DISTRICTS:  # warm: prepares the grant's input, opens the instance in the workers
            ok(ctx["http"].post(governed_url, headers=ctx["buyer"], json={"params": {"district": d}}))
        parquet = sorted((home / "prepared").glob("*/firms/v1.e.parquet"))[0]
        bare = Bare(parquet)
        bare.start()
        for d in DISTRICTS:
            ok(httpx.post(f"{bare.base}/invoke", json={"params": {"district": d}}, timeout=60))
        governed_rounds, bare_rounds = [], []
        for _ in range(rounds):
            bare_rounds.append(asyncio.run(_load(f"{bare.base}/invoke", {}, clients, seconds)))
            governed_rounds.append(asyncio.run(_load(governed_url, ctx["buyer"], clients, seconds)))
            print(f"products: governed {governed_rounds[-1]['calls_per_second']} calls/s, bare "
                  f"{bare_rounds[-1]['calls_per_second']} calls/s", flush=True)
        check = _check(ctx, len(DISTRICTS) + sum(r["calls"] for r in governed_rounds))
    finally:
        if bare is not None:
            bare.stop()
        server.stop()
    g = sum(r["calls"] for r in governed_rounds) / sum(r["seconds"] for r in governed_rounds)
    b = sum(r["calls"] for r in bare_rounds) / sum(r["seconds"] for r in bare_rounds)
    return {"rows": rows, "clients": clients, "seconds_per_round": seconds, "rounds": rounds,
            "sql": SQL.format(table="firms"), "governed": governed_rounds, "bare": bare_rounds,
            "governed_calls_per_second": round(g, 1), "bare_calls_per_second": round(b, 1),
            "ratio": round(g / b, 3) if b else None, "check": check}


def _check(ctx: dict[str, Any], succeeded: int) -> dict[str, Any]:
    """Every succeeded call has one call event and one line quantity on the customer's bill, which reconciles."""
    http: httpx.Client = ctx["http"]
    period = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m")  # the default timezone
    bill = ok(http.post("/v1/bills", headers=ctx["op_finance"], json={"payer_org_id": ctx["customer"],
                                                                         "period": period}))
    billed = sum(int(ln["base_quantity"]) for ln in bill["lines"]
                 if ln["meter"] == "calls" and ln["outcome"] == "succeeded")
    reconciled = ok(http.get("/v1/reconciliation", headers=ctx["agency_finance"], params={"period": period}))["ok"]
    calls = ok(http.get("/v1/calls", headers=ctx["buyer"], params={"limit": 10_000}))
    out = {"succeeded_calls_seen": succeeded, "calls_on_bill": billed, "call_records": len(calls),
           "bill_total": bill["total"], "reconciled": reconciled}
    if billed != succeeded or not reconciled:
        raise RuntimeError(f"product calls and the bill do not agree: {out}")
    return out


def markdown(report: dict[str, Any]) -> list[str]:
    """The product-call section of a benchmark report."""
    return [f"Product calls ({report['clients']} concurrent clients, {report['rounds']} alternating rounds of "
            f"{report['seconds_per_round']} s per side, {report['rows']} rows, `{report['sql']}`): governed "
            f"**{report['governed_calls_per_second']} calls/s** (each authorized, audited, run in the locked worker, "
            f"metered and billed) vs bare FastAPI + DuckDB **{report['bare_calls_per_second']} calls/s**: ratio "
            f"**{report['ratio']}**. Governed p50/p95 "
            f"{report['governed'][-1]['p50_ms']}/{report['governed'][-1]['p95_ms']} ms, bare "
            f"{report['bare'][-1]['p50_ms']}/{report['bare'][-1]['p95_ms']} ms. After the load: "
            f"{report['check']['calls_on_bill']} calls on the customer's bill for "
            f"{report['check']['succeeded_calls_seen']} calls seen to succeed, reconciliation "
            f"{'ok' if report['check']['reconciled'] else 'FAILED'}."]


def write(report: dict[str, Any], out: Path) -> None:
    """products-latest.json and .md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "products-latest.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    (out / "products-latest.md").write_text("\n".join([f"# Product-call benchmark {report['date']}", "",
                                                       *markdown(report), ""]), "utf-8")
    print(f"wrote {out / 'products-latest'}.json and .md")
