"""Metering against a real `sluice serve`: eight clients at once are billed for exactly the runs that succeeded
(SQLite and PostgreSQL), and a kill -9 in the middle of load loses no succeeded run and charges no interrupted one.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from served_world import Served, bill_every_month, ok, served_world, usage
from sqlalchemy import create_engine, text

from bench.server import Server


def _lines(bills: list[dict[str, Any]], meter: str, outcome: str) -> list[dict[str, Any]]:
    return [ln for b in bills for ln in b["lines"] if ln["meter"] == meter and ln["outcome"] == outcome]


@pytest.mark.slow
def test_eight_concurrent_clients_are_billed_for_exactly_the_runs_that_succeeded(store_url: str,
                                                                                 tmp_path: Path) -> None:
    settings = {"SLUICE_WORKERS": "2", "SLUICE_RUN_THREADS": "1"}
    if store_url.startswith("postgresql"):
        settings["SLUICE_DATABASE_URL"] = store_url
    server = Server(tmp_path / "home", settings)
    admin = server.init()
    server.start()
    try:
        served = served_world(server.base, admin)
        barrier = threading.Barrier(8)

        def client(i: int) -> list[tuple[str, str]]:
            seen = []
            with httpx.Client(base_url=server.base, timeout=120) as http:
                barrier.wait()
                for j in range(6):
                    run = served.run(http, s="x" if (i + j) % 4 == 0 else "7")
                    seen.append((run["id"], run["status"]))
            return seen

        with ThreadPoolExecutor(max_workers=8) as pool:
            seen = [r for rs in pool.map(client, range(8)) for r in rs]
        with httpx.Client(base_url=server.base, timeout=120) as http:
            bills = bill_every_month(http, served)
            succeeded = {rid for rid, status in seen if status == "succeeded"}
            failed = {rid for rid, status in seen if status == "failed"}
            assert len(seen) == 48 and len(succeeded) == 36 and len(failed) == 12
            charged = _lines(bills, "runs", "succeeded")
            assert sum(int(ln["base_quantity"]) for ln in charged) == len(succeeded)
            assert sum(Decimal(ln["amount"]) for ln in charged) == Decimal("0.50") * len(succeeded)
            assert sum(int(ln["base_quantity"]) for ln in _lines(bills, "runs", "failed")) == len(failed)
            assert all(ln["amount"] == "0.00" for ln in _lines(bills, "runs", "failed"))
            runs = {e["source_id"]: e for e in usage(http, served) if e["kind"] == "run"}
            assert set(runs) == succeeded | failed
            for b in bills:
                ok(http.post(f"/v1/bills/{b['id']}/finalize", headers=served.finance))
                report = ok(http.get("/v1/reconciliation", headers=served.finance, params={"period": b["period"]}))
                assert report["ok"], report
    finally:
        server.stop()


def _load(served: Served, stop: threading.Event, seen: list[tuple[str, str]], downloads: list[str]) -> None:
    """One client: runs back to back, downloading every third success, until the server goes away."""
    with httpx.Client(base_url=served.base, timeout=30) as http:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                run = served.run(http, s="x" if n % 5 == 0 else "7")
                seen.append((run["id"], run["status"]))
                if run["status"] == "succeeded" and n % 3 == 0:
                    resp = http.get(f"/v1/runs/{run['id']}/result", headers=served.analyst, params={"format": "csv"})
                    if resp.status_code == 200:
                        downloads.append(run["id"])
            except (httpx.HTTPError, AssertionError):
                return


def _wait_for_runs_in_flight(db: Path, at_least: int, timeout: float = 30.0) -> None:
    """Poll the store (read-only) until `at_least` runs have a durable start record and no end yet."""
    deadline = time.monotonic() + timeout
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone()[0] >= at_least:
                return
            time.sleep(0.005)
    finally:
        conn.close()
    raise AssertionError(f"fewer than {at_least} runs were ever in flight at once")


@pytest.mark.slow
def test_kill_9_mid_load_loses_no_succeeded_run_counts_nothing_twice_and_charges_no_interrupted_run(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Server(home, {"SLUICE_WORKERS": "1", "SLUICE_RUN_THREADS": "1"})  # runs queue: some are in flight
    admin = server.init()
    server.start()
    try:
        served = served_world(server.base, admin, rows=200_000)
        stop = threading.Event()
        seen: list[tuple[str, str]] = []
        downloads: list[str] = []
        clients = [threading.Thread(target=_load, args=(served, stop, seen, downloads)) for _ in range(6)]
        for c in clients:
            c.start()
        deadline = time.monotonic() + 120  # on a loaded machine the first runs take a while
        while sum(status == "succeeded" for _, status in list(seen)) <= 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        _wait_for_runs_in_flight(home / "sluice.db", at_least=2)
        server.kill()  # kill -9 in the middle of the load, with started runs in flight
        stop.set()
        for c in clients:
            c.join(timeout=60)
        server.start()  # restart: interrupted runs are marked failed before it serves
        engine = create_engine(f"sqlite:///{home / 'sluice.db'}")
        with engine.connect() as conn:
            runs = dict(conn.execute(text("SELECT id, status FROM runs")).all())
            interrupted = dict(conn.execute(text("SELECT id, error_message FROM runs WHERE error_code = 'interrupted'"))
                               .all())
            events = conn.execute(text("SELECT source_id, outcome FROM usage_events WHERE kind = 'run'")).all()
            n_downloads = conn.execute(text("SELECT count(*) FROM usage_events WHERE kind = 'download'")).scalar_one()
            recovered = conn.execute(text("SELECT count(*) FROM audit_events WHERE action = 'run:recover'")
                                     ).scalar_one()
        engine.dispose()
        succeeded_seen = {rid for rid, status in seen if status == "succeeded"}
        assert len(succeeded_seen) > 10, "the load did not get going"
        assert "running" not in runs.values()
        per_run = {}
        for source, outcome in events:
            per_run[source] = per_run.get(source, 0) + 1
            assert outcome == runs[source]
        assert per_run == dict.fromkeys(runs, 1)  # every run exactly one usage event, none twice
        assert all(runs[r] == "succeeded" for r in succeeded_seen)
        assert interrupted, f"no run in flight at the kill: {len(runs)} runs, {len(seen)} answers"
        assert recovered == len(interrupted)
        assert all("server stopped" in (m or "") for m in interrupted.values())
        assert n_downloads >= len(downloads)
        with httpx.Client(base_url=server.base, timeout=120) as http:
            bills = bill_every_month(http, served)
        charged = sum(int(ln["base_quantity"]) for ln in _lines(bills, "runs", "succeeded"))
        assert charged == sum(1 for s in runs.values() if s == "succeeded")
        assert sum(int(ln["base_quantity"]) for ln in _lines(bills, "runs", "failed")) == sum(
            1 for s in runs.values() if s == "failed")
        assert all(ln["amount"] == "0.00" for ln in _lines(bills, "runs", "failed"))
        for period in sorted({b["period"] for b in bills}):
            cli = subprocess.run([sys.executable, "-m", "sandbox.cli", "--url", server.base, "--api-key",
                                  served.finance_key, "bills", "reconcile", "--period", period],
                                 capture_output=True, text=True, env=server.env)
            assert cli.returncode == 0, cli.stdout + cli.stderr
        print(f"crash test: {len(runs)} runs, {len(succeeded_seen)} seen succeeded, {len(interrupted)} interrupted, "
              f"{n_downloads} download events for {len(downloads)} downloads seen")
    finally:
        server.stop()
