"""Audit-log benchmark: `python -m bench.audit_log [--sizes 10000,100000,1000000] [--records 40000]`.

- appends/s under concurrent runs, modelled as `sluice serve --processes N` deploys them: `--threads` concurrent
  "runs" spread over `--processes` API processes commit audit records through the run path's group-commit
  recorder, while the sequencer, in a process of its own, integrates whatever is committed every 100 ms (numbers,
  leaves, tiles). Reported: records integrated per second of sequencer time (the log's capacity, the figure the
  target is for), the same while the committers were still committing, the end-to-end rate (committed *and*
  integrated per second of wall time, bounded by how fast the committers commit), CPU per record of the
  sequencer, of its PostgreSQL backend, and of the committers, and the load average. Then the sequencer alone on
  a backlog of committed records.
- proof latency: inclusion and consistency proofs at each size, from a control store holding that many
  leaves' tiles (one `IN` query of O(log n) tiles per proof), medians and p99 over random indices.
- the log's CPU cost per governed run: inserting and committing the record, plus sequencing it, compared with the
  governed small-aggregate median of the latest TPC-H report if there is one.

The store is SQLite in a temporary folder unless `--database-url` names another (e.g. PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.engine import Engine

from disclosure.merkle import leaf_hash
from disclosure.proofs import append_leaves, consistency_plan, evaluate, inclusion_plan, node_id
from disclosure.signing import KeyRing
from disclosure.tiles import MemoryTiles
from sandbox.audit import AuditDraft
from sandbox.audit_log import AuditLog, SqlNodes
from sandbox.clock import SystemClock
from sandbox.recorder import Recorder
from sandbox.store.db import make_engine, session_factory, upgrade
from sandbox.store.models import AuditLogState, AuditLogTile

ROOT = Path(__file__).resolve().parents[1]


def _store(url: str | None, folder: Path, name: str) -> str:
    if url:
        engine = make_engine(url)
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_log_tiles"))
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


class ServerCpu:
    """CPU time the PostgreSQL backends serving an engine's connections have used (None off PostgreSQL, or when
    the server's /proc is not readable from here, e.g. a remote server)."""

    def __init__(self, engine: Engine) -> None:
        self.pids: list[int] = []
        if engine.dialect.name != "postgresql":
            return

        @event.listens_for(engine, "connect")
        def _pid(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute("SELECT pg_backend_pid()")
                self.pids.append(int(cur.fetchone()[0]))

    def seconds(self) -> float | None:
        """User + system CPU seconds of those backends so far."""
        if not self.pids:
            return None
        total = 0
        try:
            for pid in self.pids:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return None
        return total / os.sysconf("SC_CLK_TCK")


def _committer(url: str, go: Any, offset: int, count: int, threads: int, out: Any) -> None:
    """One API process: `threads` concurrent runs each commit audit records through the group-commit recorder."""
    engine = make_engine(url, pool_size=threads, max_overflow=threads)
    recorder = Recorder(session_factory(engine))
    per_thread = count // threads

    def run(t: int) -> None:
        for i in range(per_thread):
            recorder.record([_draft(offset + t * per_thread + i).to_row(datetime.now(UTC))])

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    go.wait()  # a barrier: every process has started and connected
    cpu, start = time.process_time(), time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put({"committed": per_thread * threads, "cpu": time.process_time() - cpu, "started": start,
             "finished": time.monotonic(), "batches": recorder.batches})
    engine.dispose()


def _sequencer(url: str, keys: str, go: Any, stop: Any, total: int, backlog_first: int, interval: float,
               out: Any) -> None:
    """The sequencer's own process. It waits until the committers have `backlog_first` records pending (a burst,
    or a sequencer that fell behind), catches up in batches while they go on committing (its capacity under
    concurrent runs), then integrates whatever is committed every `interval`, as `sluice serve` does."""
    engine = make_engine(url)
    server = ServerCpu(engine)
    log = AuditLog(session_factory(engine), KeyRing(Path(keys)), "bench.sluice/audit-log", SystemClock())
    log.integrate()
    go.wait()  # a barrier: nothing is committed before every process is ready
    while log.pending() < backlog_first and not stop.is_set():
        time.sleep(0.02)
    server_start = server.seconds()
    wall, cpu = time.monotonic(), time.process_time()
    caught = log.integrate()  # batches of up to 5,000 until none is left, runs still committing
    catch_up = {"integrated": caught, "wall": time.monotonic() - wall, "cpu": time.process_time() - cpu,
                "server_cpu": None if server_start is None else (server.seconds() or 0.0) - server_start,
                "committers_running": not stop.is_set(), "load_average": [round(x, 2) for x in os.getloadavg()]}
    busy = catch_up["wall"]
    total_cpu = catch_up["cpu"]
    done, calls, complete = caught, 1, None
    while True:
        stopping = stop.is_set()  # set once every committer has finished: the last pass drains
        if done >= total and complete is None:
            complete = time.monotonic()
        if stopping and (done >= total or log.pending() == 0):  # the latter only if someone else integrated
            break
        time.sleep(interval)
        wall, start = time.monotonic(), time.process_time()
        n = log.integrate()
        total_cpu += time.process_time() - start
        busy += time.monotonic() - wall
        done, calls = done + n, calls + (1 if n else 0)
    server_end = server.seconds()
    out.put({"integrated": done, "busy": busy, "cpu": total_cpu, "batches": calls, "complete": complete,
             "catch_up": catch_up,
             "server_cpu": None if server_start is None or server_end is None else server_end - server_start})
    engine.dispose()


def appends(url: str, keys: Path, records: int, processes: int, threads: int,
            interval: float = 0.1) -> dict[str, Any]:
    """Deployment as `sluice serve --processes N` runs it: `processes` API processes, each with `threads`
    concurrent runs committing audit records through the group-commit recorder, and the sequencer in its own
    process integrating every `interval` s. Reports the sequencer's rate while it works (capacity), the end-to-end
    rate (committed and integrated per second of wall time), CPU per record on each side, and the load average."""
    ctx = multiprocessing.get_context("spawn")
    go, stop, out = ctx.Barrier(processes + 2), ctx.Event(), ctx.Queue()
    per_process = records // processes // threads * threads
    total = per_process * processes
    sequencer = ctx.Process(target=_sequencer, args=(url, str(keys), go, stop, total, total // 2, interval, out))
    committers = [ctx.Process(target=_committer, args=(url, go, p * per_process, per_process, threads, out))
                  for p in range(processes)]
    for proc in [sequencer, *committers]:
        proc.start()
    go.wait(timeout=600)
    load_before = os.getloadavg()
    start = time.monotonic()
    reports = [out.get(timeout=3600) for _ in committers]
    stop.set()
    seq = out.get(timeout=3600)
    for proc in [sequencer, *committers]:
        proc.join()
    load_after = os.getloadavg()
    committed = max(r["finished"] for r in reports) - start
    complete = (seq["complete"] or time.monotonic()) - start
    assert seq["integrated"] == total, seq
    engine = make_engine(url)
    log = AuditLog(session_factory(engine), KeyRing(keys), "bench.sluice/audit-log", SystemClock())
    assert log.head().size == total and log.pending() == 0
    engine.dispose()
    server, burst = seq["server_cpu"], seq["catch_up"]
    return {
        "records": total, "processes": processes, "threads": threads, "concurrent_runs": processes * threads,
        "integrate_interval_ms": round(interval * 1000),
        "appends_per_second": round(burst["integrated"] / burst["wall"], 1),
        "catch_up": {"records": burst["integrated"], "seconds": round(burst["wall"], 3),
                     "committers_still_running": burst["committers_running"],
                     "cpu_us_per_record": round(burst["cpu"] / burst["integrated"] * 1e6, 2),
                     "server_cpu_us_per_record": None if burst["server_cpu"] is None else round(
                         burst["server_cpu"] / burst["integrated"] * 1e6, 2),
                     "load_average": burst["load_average"]},
        "end_to_end_per_second": round(total / complete, 1), "commits_per_second": round(total / committed, 1),
        "seconds": round(complete, 3), "sequencer_batches": seq["batches"],
        "sequencer_busy_share": round(seq["busy"] / complete, 3),
        "sequencer_cpu_us_per_record": round(seq["cpu"] / total * 1e6, 2),
        "sequencer_server_cpu_us_per_record": None if server is None else round(server / total * 1e6, 2),
        "committer_cpu_us_per_record": round(sum(r["cpu"] for r in reports) / total * 1e6, 2),
        "group_commit_batches": sum(r["batches"] for r in reports),
        "load_average": [round(x, 2) for x in load_before] + [round(x, 2) for x in load_after],
    }


def backlog(url: str, keys: Path, records: int) -> dict[str, Any]:
    """The sequencer alone: integrate a backlog of committed records (its capacity with nothing else running)."""
    engine = make_engine(url)
    server = ServerCpu(engine)
    sessions = session_factory(engine)
    log = AuditLog(sessions, KeyRing(keys), "bench.sluice/audit-log", SystemClock())
    log.integrate()
    now = datetime.now(UTC)
    with sessions.begin() as s:
        s.add_all([_draft(i).to_row(now) for i in range(records)])
    before = server.seconds()
    start, wall = time.process_time(), time.perf_counter()
    done = log.integrate()
    cpu, elapsed = time.process_time() - start, time.perf_counter() - wall
    after = server.seconds()
    assert done == records and log.pending() == 0
    engine.dispose()
    return {"records": records, "appends_per_second": round(records / elapsed, 1),
            "cpu_us_per_record": round(cpu / records * 1e6, 2),
            "server_cpu_us_per_record": None if before is None or after is None else round(
                (after - before) / records * 1e6, 2), "load_average": [round(x, 2) for x in os.getloadavg()]}


def insert_cost(url: str, records: int = 4000) -> dict[str, Any]:
    """CPU (client, and PostgreSQL backend) to add one audit row to a transaction that commits anyway: what the
    record adds to a run, whose audit row shares the group commit of its run and usage rows. Rows are flushed 16
    at a time, as a group commit of 16 concurrent runs does."""
    engine = make_engine(url)
    server = ServerCpu(engine)
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    with sessions.begin() as s:  # warm the pool, the ORM and the statement cache
        s.add_all([_draft(i).to_row(now) for i in range(16)])
    before, start = server.seconds(), time.process_time()
    with sessions.begin() as s:
        for i in range(records):
            s.add(_draft(i).to_row(now))
            if i % 16 == 15:
                s.flush()
    cpu, after = time.process_time() - start, server.seconds()
    engine.dispose()
    return {"records": records, "cpu_us_per_record": round(cpu / records * 1e6, 2),
            "server_cpu_us_per_record": None if before is None or after is None else round(
                (after - before) / records * 1e6, 2)}


def build_tree(url: str, size: int) -> None:
    """A store holding the nodes of a tree of `size` leaves (as the sequencer would have written them)."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    done = append_leaves(0, {}, [leaf_hash(i.to_bytes(8, "big")) for i in range(size)])
    tiles = MemoryTiles()
    tiles.store(done.nodes)
    rows = [{"id": node_id(*key), "hashes": value} for key, value in tiles.tiles.items()]
    with sessions.begin() as s:
        for chunk in range(0, len(rows), 50_000):
            s.execute(insert(AuditLogTile), rows[chunk:chunk + 50_000])
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
                reads.append(nodes.reads)  # tiles
            times.sort()
            out[kind] = {"median_ms": round(statistics.median(times), 4),
                         "p99_ms": round(times[int(0.99 * len(times)) - 1], 4), "max_tiles_read": max(reads)}
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="tree sizes for proof latency")
    parser.add_argument("--records", type=int, default=40000, help="records appended in the throughput run")
    parser.add_argument("--threads", type=int, default=16, help="concurrent runs recording, over all processes")
    parser.add_argument("--processes", type=int, default=4, help="API processes the concurrent runs are spread over")
    parser.add_argument("--samples", type=int, default=500, help="proofs timed per size and kind")
    parser.add_argument("--database-url", default=None, help="store to use (default: a temporary SQLite file)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    report = run(args.sizes, args.records, args.threads, args.samples, args.database_url, args.processes)
    write(report, args.out)


def _server(us: float | None) -> str:
    return "" if us is None else f" + {us} µs PostgreSQL server CPU"


def run(sizes: str, records: int, threads: int, samples: int, database_url: str | None = None,
        processes: int = 4) -> dict[str, Any]:
    """Every measurement, as a report dict (also printed). `threads` concurrent runs over `processes` processes."""
    processes = max(1, min(processes, threads))
    with tempfile.TemporaryDirectory(prefix="sluice-bench-log-") as tmp:
        folder = Path(tmp)
        KeyRing(folder / "keys").ensure("checkpoint")
        url = _store(database_url, folder, "appends.db")
        a = appends(url, folder / "keys", records, processes, threads // processes)
        c = a["catch_up"]
        print(f"audit log: {a['appends_per_second']} appends/s: the sequencer caught up {c['records']} records in "
              f"batches while {a['concurrent_runs']} concurrent runs in {processes} processes went on committing "
              f"({c['cpu_us_per_record']} µs CPU/record{_server(c['server_cpu_us_per_record'])}; load average "
              f"{c['load_average']}); end to end {a['end_to_end_per_second']}/s committed and integrated "
              f"({a['records']} records, {a['seconds']} s, committers {a['committer_cpu_us_per_record']} µs "
              f"CPU/record; sequencer busy {a['sequencer_busy_share']:.0%} of the time, "
              f"{a['sequencer_cpu_us_per_record']} µs CPU/record{_server(a['sequencer_server_cpu_us_per_record'])})",
              flush=True)
        url = _store(database_url, folder, "backlog.db")
        alone = backlog(url, folder / "keys", records)
        a["backlog"] = alone
        a["insert"] = insert_cost(url)
        print(f"audit log, sequencer alone on a backlog: {alone['appends_per_second']} appends/s "
              f"({alone['cpu_us_per_record']} µs CPU/record{_server(alone['server_cpu_us_per_record'])}; load "
              f"average {alone['load_average']})", flush=True)
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
                  f"≤ {max(result['inclusion']['max_tiles_read'], result['consistency']['max_tiles_read'])} "
                  "tiles read", flush=True)
    # CPU the log costs per run: adding its record to the run's transaction, and sequencing it (client + backend).
    per_run_us = (a["insert"]["cpu_us_per_record"] + (a["insert"]["server_cpu_us_per_record"] or 0)
                  + a["catch_up"]["cpu_us_per_record"] + (a["catch_up"]["server_cpu_us_per_record"] or 0))
    cost: dict[str, Any] = {"log_cpu_us_per_run": round(per_run_us, 1)}
    latest = ROOT / "bench" / "results" / "latest.json"
    if latest.exists():
        small = json.loads(latest.read_text("utf-8")).get("small_aggregate", {})
        if small.get("governed_median_ms"):
            cost["governed_small_median_ms"] = small["governed_median_ms"]
            cost["share_of_governed_median"] = round(per_run_us / 1000 / small["governed_median_ms"], 4)
    print(f"the log's cost per governed run: {cost}", flush=True)
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "store": "sqlite" if not database_url else
            database_url.split(":", 1)[0], "appends": a, "proofs": latencies, "run_cost": cost,
            "targets": {"appends_per_second_min": 20000, "proof_ms_max_at_1e6": 1.0}}


def write(report: dict[str, Any], out: Path) -> None:
    """bench/results/audit-log-<date>.json and .md, and audit-log-latest.*."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"audit-log-{report['date'][:10]}-{report['store'].split('+')[0]}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    a, b, c = report["appends"], report["appends"]["backlog"], report["appends"]["catch_up"]
    lines = [f"# Audit log benchmark {report['date']} ({report['store']})", "",
             f"Appends under concurrent runs: {a['concurrent_runs']} runs in {a['processes']} processes committed "
             f"{a['records']} records through the group-commit recorder ({a['group_commit_batches']} commits). The "
             f"sequencer, in its own process, waited for half of them to be pending, caught up in batches while the "
             f"runs went on committing, then integrated every {a['integrate_interval_ms']} ms.", "",
             "| figure | value |", "|---|---:|",
             f"| **appends/s** under concurrent runs (the catch-up: {c['records']} records in {c['seconds']} s; runs "
             f"still committing: {c['committers_still_running']}) | **{a['appends_per_second']}** |",
             f"| … sequencer CPU per record (client; PostgreSQL backend) | {c['cpu_us_per_record']} µs; "
             f"{c['server_cpu_us_per_record']} µs |",
             f"| … load average then | {c['load_average']} |",
             f"| end to end: committed and integrated per second of wall time | {a['end_to_end_per_second']} |",
             f"| commits/s (the committers' own rate) | {a['commits_per_second']} |",
             f"| committers' CPU per record | {a['committer_cpu_us_per_record']} µs |",
             f"| sequencer over the whole run: busy share; CPU per record (client; backend) | "
             f"{a['sequencer_busy_share']:.0%}; {a['sequencer_cpu_us_per_record']} µs; "
             f"{a['sequencer_server_cpu_us_per_record']} µs |",
             f"| load average (1, 5, 15 min) before; after | {a['load_average'][:3]}; {a['load_average'][3:]} |",
             f"| sequencer alone on a backlog of {b['records']}: appends/s | **{b['appends_per_second']}** |",
             f"| … CPU per record (client; PostgreSQL backend) | {b['cpu_us_per_record']} µs; "
             f"{b['server_cpu_us_per_record']} µs |", "",
             "Target ≥ 20,000 appends/s.", "",
             "| tree size | inclusion median ms | p99 | consistency median ms | p99 | tiles read (max) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for p in report["proofs"]:
        lines.append(f"| {p['size']} | {p['inclusion']['median_ms']} | {p['inclusion']['p99_ms']} | "
                     f"{p['consistency']['median_ms']} | {p['consistency']['p99_ms']} | "
                     f"{max(p['inclusion']['max_tiles_read'], p['consistency']['max_tiles_read'])} |")
    i = a["insert"]
    lines += ["", "The log's CPU per governed run: adding the record to the run's transaction "
              f"{i['cpu_us_per_record']} µs (backend {i['server_cpu_us_per_record']} µs) plus sequencing it (the "
              "catch-up figures above): "
              f"{report['run_cost']}. Target ≤ 1 ms per proof at 10^6.", ""]
    (out / f"{stem}.md").write_text("\n".join(lines), "utf-8")
    (out / "audit-log-latest.md").write_text("\n".join(lines), "utf-8")
    (out / "audit-log-latest.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(f"wrote {out / stem}.json and .md")


if __name__ == "__main__":
    main()
