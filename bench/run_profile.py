"""Deterministic per-run measures of the API process's run path, on one in-process app (docs/performance.md).

`python -m bench.run_profile [--mode calls|cpu] [--runs 300] [--warm 50] [--top N]` sets up a bench home with TPC-H
`nation` (SF 0.01, through a `sluice serve` subprocess), then builds the app in this process (`create_app`,
`TestClient`) and sends sequential run POSTs of the small aggregate:

- `calls`: Python function calls per run in each server thread (a cProfile profiler in every thread, counted over
  the measured runs only; builtins included; the client's thread left out). Independent of the machine's load.
- `cpu`: each thread's CPU time per run (CLOCK_THREAD_CPUTIME_ID), without a profiler. Depends on the load.

The sandbox workers are other processes and are not counted. A measuring instrument: nothing imports it.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import tpch
from bench.__main__ import approved_job, setup
from bench.server import Server
from bench.throughput import SMALL_SQL

ROOT = Path(__file__).resolve().parents[1]
CLIENT = "MainThread"
PACKAGES = ("sqlalchemy", "fastapi", "starlette", "anyio", "opentelemetry", "prometheus_client", "pydantic")
Snapshot = dict[str, Counter[tuple[str, str, int]]]


def _home(work: Path) -> tuple[str, dict[str, str]]:
    """A fresh bench home with an approved small aggregate job; returns the job id and the operator's headers."""
    data = tpch.generate(0.01, work / "tpch-sf0.01")
    home = work / "home-run-profile"
    shutil.rmtree(home, ignore_errors=True)
    settings = {"SLUICE_IMPORT_ROOT": str(data), "SLUICE_WORKERS": "2", "SLUICE_PROCESSES": "1"}
    server = Server(home, settings)
    key = server.init()
    server.start()
    try:
        ctx = setup(server, key, data, ("nation",))
        job, _ = approved_job(ctx, "small aggregate", SMALL_SQL)
    finally:
        server.stop()
    os.environ.update({**settings, "SLUICE_HOME": str(home)})
    os.environ.pop("SLUICE_DATABASE_URL", None)
    return job, dict(ctx["op"])


def _thread_name(name: str) -> str:
    for prefix in ("AnyIO worker thread", "sluice-run-start", "sluice-audit-sequencer"):
        if name.startswith(prefix):
            return prefix
    return "event loop" if "portal" in name else name.rstrip("0123456789_-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("calls", "cpu"), default="calls")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warm", type=int, default=50)
    parser.add_argument("--top", type=int, default=0, help="also list the N most called functions (calls mode)")
    args = parser.parse_args()
    job, headers = _home(ROOT / "bench" / "data")

    profilers: list[tuple[str, cProfile.Profile]] = []
    lock = threading.Lock()

    def hook(frame: Any, event: str, arg: Any) -> None:  # a new thread's first event: give it its own profiler
        profiler = cProfile.Profile()
        with lock:
            profilers.append((threading.current_thread().name, profiler))
        profiler.enable()

    if args.mode == "calls":
        threading.setprofile(hook)

    from fastapi.testclient import TestClient

    from sandbox.app import create_app
    from sandbox.config import load_settings

    def snapshot() -> Snapshot:
        out: Snapshot = {}
        with lock:
            items = list(profilers)
        for name, profiler in items:
            counts = out.setdefault(name, Counter())
            for entry in profiler.getstats():
                code = entry.code
                where = (getattr(code, "co_filename", "<builtin>"), getattr(code, "co_name", str(code)),
                         getattr(code, "co_firstlineno", 0))
                counts[where] += entry.callcount
        return out

    def thread_cpu() -> dict[tuple[str, int], float]:
        out = {}
        for thread in threading.enumerate():
            if thread.ident is not None:
                out[(thread.name, thread.ident)] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        return out

    app = create_app(load_settings())
    url = f"/v1/jobs/{job}/runs"
    with TestClient(app) as client:
        for _ in range(args.warm):
            resp = client.post(url, headers=headers, json={"params": {}})
            assert resp.status_code == 201 and resp.json()["status"] == "succeeded", resp.text
        before, cpu0 = (snapshot() if args.mode == "calls" else {}), thread_cpu()
        for _ in range(args.runs):
            resp = client.post(url, headers=headers, json={"params": {}})
            assert resp.status_code == 201, resp.text
        cpu1, after = thread_cpu(), (snapshot() if args.mode == "calls" else {})
    n = args.runs
    if args.mode == "cpu":
        by_thread: Counter[str] = Counter()
        for key, value in cpu1.items():
            if key[0] != CLIENT:
                by_thread[_thread_name(key[0])] += value - cpu0.get(key, 0.0)
        total = sum(by_thread.values())
        print(f"thread CPU per run, server threads: {total * 1000 / n:.2f} ms ("
              + ", ".join(f"{k} {v * 1000 / n:.2f}" for k, v in by_thread.most_common()) + ")")
        return
    threads: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for name, counts in after.items():
        if name == CLIENT:
            continue
        for (path, function, line), calls in (counts - before.get(name, Counter())).items():
            threads[_thread_name(name)] += calls
            package = next((p for p in PACKAGES if f"/{p}/" in path), "")
            if package:
                packages[package] += calls
            functions[f"{path.split('site-packages/')[-1].replace(str(ROOT) + '/', '')}:{line}({function})"] += calls
    print(f"Python calls per run, server threads: {sum(threads.values()) / n:.0f} ("
          + ", ".join(f"{k} {v / n:.0f}" for k, v in threads.most_common()) + ")")
    print("of which: " + ", ".join(f"{k} {v / n:.0f}" for k, v in packages.most_common()))
    for function, calls in functions.most_common(args.top):
        print(f"{calls / n:10.1f}  {function}")


if __name__ == "__main__":
    main()
