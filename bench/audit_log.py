"""Audit-log benchmark: `python -m bench.audit_log [--sizes 10000,100000,1000000] [--records 20000]`.

- appends/s: `--threads` concurrent "runs" commit audit records through the run path's group-commit recorder
  while the sequencer integrates them (numbers, leaves, nodes) in batches in its own thread. Reported: the
  log's append rate (records integrated per second of sequencer time: its capacity, the figure the target is
  for) and the end-to-end rate (committed *and* integrated per second of wall time, which in one Python
  process also pays for the committers' ORM inserts under the same GIL).
- proof latency: inclusion and consistency proofs at each size, from a control store holding that many
  leaves' nodes (one `IN` query of O(log n) nodes per proof), medians and p99 over random indices.
- the log's cost per governed run: the sequencer's CPU time per record plus the record's share of the group
  commit, compared with the governed small-aggregate median of the latest TPC-H report if there is one.

The store is SQLite in a temporary folder unless `--database-url` names another (e.g. PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from disclosure.merkle import leaf_hash
from disclosure.proofs import append_leaves, consistency_plan, evaluate, inclusion_plan, node_id
from disclosure.signing import KeyRing
from sandbox.audit import AuditDraft
from sandbox.audit_log import AuditLog, SqlNodes
from sandbox.clock import SystemClock
from sandbox.recorder import Recorder
from sandbox.store.db import make_engine, session_factory, upgrade
from sandbox.store.models import AuditLogNode, AuditLogState

ROOT = Path(__file__).resolve().parents[1]


def _store(url: str | None, folder: Path, name: str) -> str:
    if url:
        engine = make_engine(url)
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log_nodes"))
            conn.execute(text("DELETE FROM audit_log_state"))
            conn.execute(text("DELETE FROM audit_checkpoints"))
            conn.execute(text("DELETE FROM audit_events"))
        engine.dispose()
        return url
    store = f"sqlite:///{folder / name}"
    engine = make_engine(store)
    upgrade(engine)
    engine.dispose()
    return store


def _draft(i: int) -> AuditDraft:
    return AuditDraft(action="run:create", resource=f"run/run_{i:012x}", via="api", actor_id="prn_0123456789abcdef",
                      actor_org_id="org_0123456789abcdef", actor_key_id="0123456789ab", decision="allow",
                      rule="operator.operator may create run (own)", reason="operator.operator may create run",
                      status=201, grant_id="grt_0123456789abcdef", datasets=["clinic_visits", "residents"],
                      sql_sha256="a" * 64, result_sha256="b" * 64,
                      rows={"scanned": 120000, "result": 9, "suppressed": 1}, client="127.0.0.1",
                      trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
                      detail={"run_id": f"run_{i:012x}", "job_id": "job_0123456789abcdef", "status": "succeeded"})


def appends(url: str, keys: Path, records: int, threads: int) -> dict[str, Any]:
    """Records committed by concurrent runs through the group-commit recorder and integrated, per second."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    recorder = Recorder(sessions)
    log = AuditLog(sessions, KeyRing(keys), "bench.sluice/audit-log", SystemClock())
    per_thread = records // threads
    stop = threading.Event()
    integrate_cpu = [0.0]
    integrate_wall = [0.0]

    def run(t: int) -> None:
        now = datetime.now(UTC)
        for i in range(per_thread):
            recorder.record([_draft(t * per_thread + i).to_row(now)])

    def sequencer() -> None:
        while not stop.is_set():
            start, wall = time.thread_time(), time.perf_counter()
            log.integrate()
            integrate_cpu[0] += time.thread_time() - start
            integrate_wall[0] += time.perf_counter() - wall
            stop.wait(0.1)  # as `sluice serve` does every SLUICE_LOG_INTEGRATE_INTERVAL_MS: batches, not trickles

    start = time.perf_counter()
    seq_thread = threading.Thread(target=sequencer)
    seq_thread.start()
    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    committed = time.perf_counter() - start
    stop.set()
    seq_thread.join()
    wall = time.perf_counter()
    log.integrate()
    integrate_wall[0] += time.perf_counter() - wall
    elapsed = time.perf_counter() - start
    total = per_thread * threads
    assert log.head().size == total and log.pending() == 0
    engine.dispose()
    return {"records": total, "threads": threads, "seconds": round(elapsed, 3),
            "appends_per_second": round(total / integrate_wall[0], 1),
            "end_to_end_per_second": round(total / elapsed, 1), "commits_per_second": round(total / committed, 1),
            "group_commit_batches": recorder.batches, "sequencer_cpu_us_per_record": round(
                integrate_cpu[0] / total * 1e6, 2)}


def backlog(url: str, keys: Path, records: int) -> dict[str, Any]:
    """The sequencer alone: integrate a backlog of committed records (its capacity when nothing else competes
    for this process's GIL, as when runs commit from other API processes)."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    log = AuditLog(sessions, KeyRing(keys), "bench.sluice/audit-log", SystemClock())
    log.integrate()
    now = datetime.now(UTC)
    with sessions.begin() as s:
        s.add_all([_draft(i).to_row(now) for i in range(records)])
    start, wall = time.process_time(), time.perf_counter()
    done = log.integrate()
    cpu, elapsed = time.process_time() - start, time.perf_counter() - wall
    assert done == records and log.pending() == 0
    engine.dispose()
    return {"records": records, "appends_per_second": round(records / elapsed, 1),
            "cpu_us_per_record": round(cpu / records * 1e6, 2)}


def build_tree(url: str, size: int) -> None:
    """A store holding the nodes of a tree of `size` leaves (as the sequencer would have written them)."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    done = append_leaves(0, {}, [leaf_hash(i.to_bytes(8, "big")) for i in range(size)])
    rows = [{"id": node_id(*key), "hash": value} for key, value in done.nodes]
    with sessions.begin() as s:
        for chunk in range(0, len(rows), 50_000):
            s.execute(insert(AuditLogNode), rows[chunk:chunk + 50_000])
        s.add(AuditLogState(id=1, size=size, root=done.root, updated_at=datetime.now(UTC)))
    engine.dispose()


def proof_latency(url: str, size: int, samples: int) -> dict[str, Any]:
    """Median and p99 latency (ms) of inclusion and consistency proofs read from the store."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    rng = random.Random(size)
    out: dict[str, Any] = {"size": size}
    with sessions() as s:
        for kind in ("inclusion", "consistency"):
            times, reads = [], []
            for _ in range(samples):
                nodes = SqlNodes(s)
                a = rng.randrange(1, size)
                start = time.perf_counter()  # plan, one read of O(log n) nodes, fold
                evaluate(inclusion_plan(a, size) if kind == "inclusion" else consistency_plan(a, size), nodes)
                times.append((time.perf_counter() - start) * 1000)
                reads.append(nodes.reads)
            times.sort()
            out[kind] = {"median_ms": round(statistics.median(times), 4),
                         "p99_ms": round(times[int(0.99 * len(times)) - 1], 4), "max_nodes_read": max(reads)}
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="tree sizes for proof latency")
    parser.add_argument("--records", type=int, default=40000, help="records appended in the throughput run")
    parser.add_argument("--threads", type=int, default=16, help="concurrent runs recording")
    parser.add_argument("--samples", type=int, default=500, help="proofs timed per size and kind")
    parser.add_argument("--database-url", default=None, help="store to use (default: a temporary SQLite file)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    report = run(args.sizes, args.records, args.threads, args.samples, args.database_url)
    write(report, args.out)


def run(sizes: str, records: int, threads: int, samples: int, database_url: str | None = None) -> dict[str, Any]:
    """Every measurement, as a report dict (also printed)."""
    with tempfile.TemporaryDirectory(prefix="sluice-bench-log-") as tmp:
        folder = Path(tmp)
        KeyRing(folder / "keys").ensure("checkpoint")
        url = _store(database_url, folder, "appends.db")
        throughput = appends(url, folder / "keys", records, threads)
        print(f"audit log: {throughput['appends_per_second']} appends/s integrated, "
              f"{throughput['end_to_end_per_second']}/s committed and integrated end to end "
              f"({throughput['records']} records, {threads} concurrent runs, sequencer "
              f"{throughput['sequencer_cpu_us_per_record']} µs CPU/record)", flush=True)
        alone = backlog(url, folder / "keys", records)
        throughput["backlog"] = alone
        print(f"audit log, sequencer alone on a backlog: {alone['appends_per_second']} appends/s "
              f"({alone['cpu_us_per_record']} µs CPU/record)", flush=True)
        latencies = []
        for size in [int(s) for s in sizes.split(",") if s]:
            url = _store(database_url, folder, f"tree-{size}.db")
            start = time.perf_counter()
            build_tree(url, size)
            built = time.perf_counter() - start
            result = proof_latency(url, size, samples)
            result["build_seconds"] = round(built, 2)
            latencies.append(result)
            print(f"proofs at {size:>8}: inclusion median {result['inclusion']['median_ms']} ms "
                  f"(p99 {result['inclusion']['p99_ms']}), consistency median "
                  f"{result['consistency']['median_ms']} ms (p99 {result['consistency']['p99_ms']}), "
                  f"≤ {max(result['inclusion']['max_nodes_read'], result['consistency']['max_nodes_read'])} "
                  "nodes read", flush=True)
    per_run_us = throughput["sequencer_cpu_us_per_record"] + 1e6 / throughput["commits_per_second"] / threads
    cost: dict[str, Any] = {"log_us_per_run": round(per_run_us, 1)}
    latest = ROOT / "bench" / "results" / "latest.json"
    if latest.exists():
        small = json.loads(latest.read_text("utf-8")).get("small_aggregate", {})
        if small.get("governed_median_ms"):
            cost["governed_small_median_ms"] = small["governed_median_ms"]
            cost["share_of_governed_median"] = round(per_run_us / 1000 / small["governed_median_ms"], 4)
    print(f"the log's cost per governed run: {cost}", flush=True)
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "store": "sqlite" if not database_url else
            database_url.split(":", 1)[0], "appends": throughput, "proofs": latencies, "run_cost": cost,
            "targets": {"appends_per_second_min": 20000, "proof_ms_max_at_1e6": 1.0}}


def write(report: dict[str, Any], out: Path) -> None:
    """bench/results/audit-log-<date>.json and .md, and audit-log-latest.*."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"audit-log-{report['date'][:10]}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    a = report["appends"]
    lines = [f"# Audit log benchmark {report['date']} ({report['store']})", "",
             f"Appends: **{a['appends_per_second']}/s** integrated by the sequencer while {a['threads']} concurrent "
             f"runs committed {a['records']} records through the group-commit recorder ({a['group_commit_batches']} "
             f"commits); end to end (committed and integrated, one process) {a['end_to_end_per_second']}/s; "
             f"sequencer {a['sequencer_cpu_us_per_record']} µs CPU per record. The sequencer alone, integrating a "
             f"backlog of {a['backlog']['records']} committed records: **{a['backlog']['appends_per_second']}/s** "
             f"({a['backlog']['cpu_us_per_record']} µs CPU per record). Target ≥ 20,000/s.", "",
             "| tree size | inclusion median ms | p99 | consistency median ms | p99 | nodes read (max) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for p in report["proofs"]:
        lines.append(f"| {p['size']} | {p['inclusion']['median_ms']} | {p['inclusion']['p99_ms']} | "
                     f"{p['consistency']['median_ms']} | {p['consistency']['p99_ms']} | "
                     f"{max(p['inclusion']['max_nodes_read'], p['consistency']['max_nodes_read'])} |")
    lines += ["", f"The log's cost per governed run: {report['run_cost']}. Target ≤ 1 ms per proof at 10^6.", ""]
    (out / f"{stem}.md").write_text("\n".join(lines), "utf-8")
    (out / "audit-log-latest.md").write_text("\n".join(lines), "utf-8")
    (out / "audit-log-latest.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(f"wrote {out / stem}.json and .md")


if __name__ == "__main__":
    main()
