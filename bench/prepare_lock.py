"""Input preparation does not hold up other grants' runs (issue 7, bug 2): `python -m bench --prepare-lock-only`.

Two grants (A, B) run a small aggregate in a loop, each on its own thread, through the run path a server request
takes after its database checks (`sandbox.runs.execute`: prepared inputs, the locked DuckDB worker pool, output
control, the result file). Their latency is measured first with nothing else in flight (baseline), then while a
third grant (C) prepares a large input (its first run: masks computed in Python, a Parquet and an Arrow copy
written). The ratio in-flight / baseline, in the same process run, is the cost the preparation puts on the others;
the baseline pools 5 s of runs just before the preparation and 5 s just after it.

The same two phases then run against `SerialisedRunService`, which emulates the design the issue reported (one
service lock held for the whole preparation, and taken by every run to reach the pool): there, A and B wait for
the whole preparation. Both designs share the machine state of one run of this module.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from policy.analysis import analyse
from sandbox.executor import EngineLimits, InputTable, WorkerPool
from sandbox.jobs import GrantTable, table_policy
from sandbox.runs import RunService, execute
from sandbox.store.models import DatasetVersion, Grant, Job, Run

SMALL_SQL = "SELECT district, count(*) AS days, avg(temperature) AS t FROM weather GROUP BY district"
BIG_SQL = "SELECT district, count(*) AS n, sum(amount) AS total FROM tax GROUP BY district"
LIMITS = EngineLimits(memory_limit_mb=1024, threads=1, timeout_ms=120_000, address_space_mb=8192)


@dataclass
class SerialisedRunService(RunService):
    """The reported design, for comparison only: one lock around every preparation and every pool lookup."""

    _lock: Any = field(default_factory=threading.RLock)

    def pool(self) -> WorkerPool:
        with self._lock:
            return super().pool()

    def prepared(self, grant: Grant, table: GrantTable) -> tuple[InputTable, InputTable]:
        with self._lock:
            return super().prepared(grant, table)


def _write_inputs(home: Path, big_rows: int) -> None:
    rng = np.random.default_rng(7)
    districts = np.array([f"d{i:02d}" for i in range(12)])
    weather = home / "data" / "weather" / "1" / "data.parquet"
    weather.parent.mkdir(parents=True, exist_ok=True)
    n = 12 * 365
    pq.write_table(pa.table({"district": districts[np.arange(n) % 12],
                             "temperature": rng.normal(15, 8, n)}), weather)
    tax = home / "data" / "tax" / "1" / "data.parquet"
    tax.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "taxpayer_no": pa.array(rng.permutation(big_rows) + 91_000_000, pa.int64()),  # distinct: one HMAC each
        "phone": pa.array([f"138{i:08d}" for i in rng.integers(0, 10**8, big_rows)]),
        "district": districts[rng.integers(0, 12, big_rows)],
        "amount": rng.integers(100, 100_000, big_rows)}), tax)


def _version(dataset: str, columns: list[tuple[str, str, str, str | None]]) -> DatasetVersion:
    return DatasetVersion(dataset_id=dataset, version=1, storage_path=f"data/{dataset}/1/data.parquet",
                          columns=[{"name": n, "type": t, "constraint": c, "tags": [], "mask": m}
                                   for n, t, c, m in columns], entity_column=None, grade="general", population=None)


WEATHER = _version("weather", [("district", "VARCHAR", "open", None), ("temperature", "DOUBLE", "open", None)])
TAX = _version("tax", [("taxpayer_no", "BIGINT", "aggregate", "hash"), ("phone", "VARCHAR", "aggregate", "partial"),
                       ("district", "VARCHAR", "group", None), ("amount", "BIGINT", "aggregate", None)])


class _Grant:
    """A grant with one dataset and one approved job, run without the store (as `execute` runs them)."""

    def __init__(self, grant_id: str, version: DatasetVersion, sql: str) -> None:
        self.grant = Grant(id=grant_id, engine="duckdb", min_group_size=5, max_result_rows=10_000,
                           column_overrides={})
        table = GrantTable(table_policy(self.grant, version), version)
        self.tables = {version.dataset_id: table}
        analysis = analyse(sql, {version.dataset_id: table.policy})
        if analysis.sql is None:
            raise RuntimeError(f"benchmark query refused: {analysis.findings}")
        self.job = Job(id=f"job_{grant_id}", grant_id=grant_id, frozen_sql=analysis.sql,
                       analysis=analysis.to_dict(), dataset_versions={version.dataset_id: 1})
        self.runs = 0

    def run(self, service: RunService) -> float:
        """One run through `sandbox.runs.execute`; its wall time in ms."""
        self.runs += 1
        run = Run(id=f"run_{self.grant.id}_{self.runs}", status="running")
        start = time.perf_counter()
        execute(service, run, self.job, self.grant, self.tables, {}, lambda: datetime.now(UTC))
        elapsed = (time.perf_counter() - start) * 1000
        if run.status != "succeeded":
            raise RuntimeError(f"run failed: {run.error_code} {run.error_message}")
        return elapsed


def _loop(service: RunService, grants: list[_Grant], stop: threading.Event, min_runs: int
          ) -> list[float]:
    """Runs of each grant on its own thread until `stop` is set (and at least `min_runs` each)."""
    times: list[list[float]] = [[] for _ in grants]

    def worker(i: int) -> None:
        while not stop.is_set() or len(times[i]) < min_runs:
            times[i].append(grants[i].run(service))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(grants))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [t for each in times for t in each]


def _summary(times: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(times), 2),
            "p95_ms": round(sorted(times)[max(0, int(0.95 * len(times)) - 1)], 2), "max_ms": round(max(times), 2)}


def _phase(service: RunService, grants: list[_Grant], big: _Grant | None, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    prepare: dict[str, float] = {}

    def prepare_big() -> None:
        assert big is not None
        start = time.perf_counter()
        service.prepared(big.grant, big.tables["tax"])
        prepare["seconds"] = time.perf_counter() - start
        stop.set()

    cpu, wall = time.process_time(), time.perf_counter()
    if big is None:
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        times = _loop(service, grants, stop, 3)
    else:
        preparer = threading.Thread(target=prepare_big)
        preparer.start()
        times = _loop(service, grants, stop, 1)
        preparer.join()
    out = {"runs": len(times), **_summary(times), "wall_s": round(time.perf_counter() - wall, 2),
           "process_cpu_s": round(time.process_time() - cpu, 2), "times": times}
    if big is not None:
        out["preparation_s"] = round(prepare["seconds"], 2)
    return out


def _design(name: str, service: RunService, big_rows: int) -> dict[str, Any]:
    a, b = _Grant(f"grt_{name}_a", WEATHER, SMALL_SQL), _Grant(f"grt_{name}_b", WEATHER, SMALL_SQL)
    for _ in range(3):  # warm: prepares A's and B's inputs and opens an instance per worker
        a.run(service)
        b.run(service)
    big = _Grant(f"grt_{name}_c", TAX, BIG_SQL)
    before = _phase(service, [a, b], None, 5.0)
    during = _phase(service, [a, b], big, 0)
    after = _phase(service, [a, b], None, 5.0)
    times = before.pop("times") + after.pop("times")
    during.pop("times")
    baseline = {"runs": len(times), **_summary(times), "before": before, "after": after}
    big.run(service)  # C's run itself, once its input is prepared
    return {"baseline": baseline, "during_preparation": during,
            "ratio_median": round(during["median_ms"] / baseline["median_ms"], 2),
            "ratio_max": round(during["max_ms"] / baseline["max_ms"], 2), "big_rows": big_rows}


def measure(work: Path, *, big_rows: int = 1_000_000) -> dict[str, Any]:
    """Run both designs (per-key locks, then the serialised emulation) and return the figures."""
    home = work / "prepare-lock-home"
    shutil.rmtree(home, ignore_errors=True)
    (home / "results").mkdir(parents=True)
    _write_inputs(home, big_rows)
    out: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                           "loadavg_before": [round(x, 2) for x in os.getloadavg()], "big_rows": big_rows}
    for name, cls in (("current", RunService), ("serialised", SerialisedRunService)):
        service = cls(home=home, pool_size=2, limits=LIMITS)
        try:
            out[name] = _design(name, service, big_rows)
        finally:
            service.close()
        print(f"prepare-lock [{name}]: baseline median {out[name]['baseline']['median_ms']} ms, during "
              f"preparation ({out[name]['during_preparation']['preparation_s']} s) median "
              f"{out[name]['during_preparation']['median_ms']} ms, max {out[name]['during_preparation']['max_ms']} "
              f"ms: ratio {out[name]['ratio_median']} (max {out[name]['ratio_max']})", flush=True)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    shutil.rmtree(home, ignore_errors=True)
    return out


def markdown(report: dict[str, Any]) -> list[str]:
    """The report as Markdown lines."""
    lines = [f"# Preparation-lock benchmark {report['date']}", "",
             f"Two grants run `{SMALL_SQL}` in a loop (one thread each) while a third grant prepares a "
             f"{report['big_rows']:,}-row input (hash and partial masks, Parquet and Arrow copies). Latency of "
             "their runs (`sandbox.runs.execute`, ms) with nothing else in flight and during the preparation; "
             f"{report['cpus']} CPUs, load average {report['loadavg_before']} before, {report['loadavg_after']} after.",
             "", "| design | baseline median | baseline max | preparation s | runs during it | median during "
             "| max during | ratio median | ratio max | bench process CPU s during |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, label in (("current", "per-key locks (current)"), ("serialised", "one lock (reported design)")):
        d = report[name]
        b, p = d["baseline"], d["during_preparation"]
        lines.append(f"| {label} | {b['median_ms']} | {b['max_ms']} | {p['preparation_s']} | {p['runs']} | "
                     f"{p['median_ms']} | {p['max_ms']} | {d['ratio_median']} | {d['ratio_max']} | "
                     f"{p['process_cpu_s']} |")
    return lines


def write(report: dict[str, Any], out: Path) -> None:
    """prepare-lock-latest.json and .md under `out`."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "prepare-lock-latest.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    (out / "prepare-lock-latest.md").write_text("\n".join(markdown(report)) + "\n", "utf-8")
    print(f"wrote {out / 'prepare-lock-latest'}.json and .md")
