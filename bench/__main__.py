"""Run the benchmark: `python -m bench [--sf 1] [--reps 5] [--small-reps 200] [--seconds 10] [--log-only]`.

The audit-log benchmark (bench/audit_log.py: appends/s, proof latency at 10^4..10^6, the log's cost per run)
runs after the TPC-H part, or alone with `--log-only`; then the release-audit benchmark (bench/release_audit.py:
audit time per run and ledger size at 10^3, 10^4 and 10^5 released cells over 10^6 entities), or alone with
`--release-audit-only` (`--release-audit-reduced` for a quick check); then product calls (bench/products.py,
`--products-only`); then the preparation-lock benchmark (bench/prepare_lock.py: two grants' run latency with and
without a third grant's large input preparation in flight, as ratios), or alone with `--prepare-lock-only`; last
the throughput benchmark (bench/throughput.py, `--throughput-only`; it needs wrk, checked before the first
benchmark, `--skip-throughput` leaves it out): governed small-query runs/s against a bare
FastAPI + DuckDB endpoint with the same number of processes (target >= 0.7x) and TPC-H Q1 with its result
download against raw DuckDB (target <= 1.10x).

Governed runs go through the full path (HTTP, authentication, grant check, worker, output control and
recording) of a real `sluice serve`; raw runs execute the same SQL in plain DuckDB over the same Parquet
inputs the sandbox reads. The two alternate within one process run, so both see the same machine state.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa

from bench import metering, tpch
from bench.http import ok
from bench.server import Server

ROOT = Path(__file__).resolve().parents[1]
SMALL_SQL = "SELECT s_nationkey, count(*) AS suppliers, sum(s_acctbal) AS balance FROM supplier GROUP BY s_nationkey"


def setup(server: Server, admin_key: str, data_dir: Path, tables: tuple[str, ...] = tpch.TABLES) -> dict[str, Any]:
    """Organizations, principals, the TPC-H datasets (server-side import) and a scenario grant."""
    http = httpx.Client(base_url=server.base, timeout=3600)
    admin = {"Authorization": f"Bearer {admin_key}"}
    provider = ok(http.post("/v1/orgs", headers=admin, json={"name": "TPC-H Provider", "kind": "provider"}))["id"]
    operator = ok(http.post("/v1/orgs", headers=admin, json={"name": "Bench Operator", "kind": "operator"}))["id"]
    me = ok(http.get("/v1/me", headers=admin))

    def principal(org: str, name: str, role: str) -> dict[str, str]:
        key = ok(http.post("/v1/principals", headers=admin, json={"org_id": org, "name": name, "roles": [role]}))
        return {"Authorization": f"Bearer {key['api_key']}"}

    steward = principal(provider, "steward", "data_steward")
    op = principal(operator, "analyst", "operator")
    reviewers = [principal(me["org_id"], f"reviewer-{i}", "reviewer") for i in (1, 2)]
    doc = tpch.policy()
    import_seconds = {}
    for name in tables:
        spec = doc["tables"][name]
        meta = {"id": name, "title": f"TPC-H {name}", "domain": "economy", "update_frequency": "static",
                "grade": spec["grade"], "entity_column": spec["entity_column"], "path": f"{name}.parquet",
                "columns": {c[0]: {"constraint": c[2]} for c in spec["columns"]}}
        start = time.perf_counter()
        ok(http.post("/v1/datasets", headers=steward, data={"metadata": json.dumps(meta)}))
        import_seconds[name] = round(time.perf_counter() - start, 3)  # import + quality profile
        ok(http.post(f"/v1/registrations/{name}/1/certify-now", headers=admin,
                      json={"reason": "benchmark set-up (shortcut)"}))
    until = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    grant = ok(http.post("/v1/grants", headers=admin, json={
        "operator_org_id": operator, "scope": "scenario", "purpose_class": "industry", "valid_until": until,
        "datasets": list(tables), "max_result_rows": 1_000_000,
        "scenario": {"name": "TPC-H benchmark", "data_used": "TPC-H tables", "supply": "governed runs",
                     "problem": "measure the governed path against raw DuckDB"}}))["id"]
    return {"http": http, "op": op, "reviewers": reviewers, "grant": grant, "import_seconds": import_seconds}


def approved_job(ctx: dict[str, Any], title: str, sql: str) -> tuple[str, str]:
    """Submit and (if needed) review a job until it is approved."""
    http: httpx.Client = ctx["http"]
    job = ok(http.post("/v1/jobs", headers=ctx["op"], json={"grant_id": ctx["grant"], "title": title,
                                                                 "purpose": "benchmark", "sql": sql}))
    for reviewer in ctx["reviewers"]:
        if job["state"] == "approved":
            break
        job = ok(http.post(f"/v1/jobs/{job['id']}/review", headers=reviewer,
                            json={"decision": "approve", "comment": "benchmark"}))
    if job["state"] != "approved":
        raise RuntimeError(f"job {title} not approved: {job['state']}")
    return str(job["id"]), str(job["frozen_sql"])


def governed(ctx: dict[str, Any], job_id: str) -> tuple[float, dict[str, Any]]:
    """One governed run, timed at the client (ms)."""
    start = time.perf_counter()
    run = ok(ctx["http"].post(f"/v1/jobs/{job_id}/runs", headers=ctx["op"], json={"params": {}}))
    elapsed = (time.perf_counter() - start) * 1000
    if run["status"] != "succeeded":
        raise RuntimeError(f"run failed: {run}")
    return elapsed, run


def raw_connection(home: Path, data_dir: Path) -> duckdb.DuckDBPyConnection:
    """Plain DuckDB with a view per table over the Parquet file the sandbox reads for it."""
    con = duckdb.connect()
    for name in tpch.TABLES:
        prepared = sorted((home / "prepared").glob(f"*/{name}/v1.parquet"))
        path = prepared[0] if prepared else data_dir / f"{name}.parquet"
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{path}')")
    return con


def raw_arrow_connection(home: Path) -> duckdb.DuckDBPyConnection:
    """Plain DuckDB over the same memory-mapped Arrow inputs the sandbox scans: isolates the governance cost."""
    con = duckdb.connect()
    for name in tpch.TABLES:
        found = sorted((home / "prepared").glob(f"*/{name}/v1.arrow"))
        if found:
            table = pa.ipc.open_file(pa.memory_map(str(found[0]), "r")).read_all()
            con.from_arrow(table).create_view(name)
    return con


def raw(con: duckdb.DuckDBPyConnection, sql: str) -> float:
    """One raw run, fully fetched (ms)."""
    start = time.perf_counter()
    con.sql(sql).to_arrow_table()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sf", type=float, default=1.0, help="TPC-H scale factor (default 1)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per TPC-H query and side")
    parser.add_argument("--small-reps", type=int, default=200, help="repetitions of the small aggregate")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the runs-per-second loop")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--only", default="", help="comma-separated query names to run (default: all accepted)")
    parser.add_argument("--log-sizes", default="10000,100000,1000000", help="audit-log tree sizes for proofs")
    parser.add_argument("--log-records", type=int, default=40000, help="audit records in the appends run")
    parser.add_argument("--log-only", action="store_true", help="only the audit-log benchmark (bench.audit_log)")
    parser.add_argument("--release-audit-only", action="store_true", help="only the release-audit benchmark")
    parser.add_argument("--release-audit-reduced", action="store_true",
                        help="release-audit benchmark at ledgers of 10^3 and 3*10^3 cells only")
    parser.add_argument("--metering-events", type=int, default=1_000_000,
                        help="events in the one-bill metering benchmark (default 10^6)")
    parser.add_argument("--products-only", action="store_true",
                        help="only the product-call throughput benchmark (bench/products.py)")
    parser.add_argument("--products-seconds", type=float, default=10.0, help="seconds per side and round")
    parser.add_argument("--products-clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--prepare-lock-only", action="store_true",
                        help="only the preparation-lock benchmark (bench/prepare_lock.py)")
    parser.add_argument("--prepare-lock-rows", type=int, default=1_000_000,
                        help="rows of the large input the third grant prepares (default 10^6)")
    parser.add_argument("--throughput-only", action="store_true",
                        help="only the throughput benchmark (bench/throughput.py: governed vs bare runs/s, Q1)")
    parser.add_argument("--throughput-processes", type=int, default=1,
                        help="API processes for the throughput benchmark (and bare uvicorn workers); above 1 "
                             "needs --throughput-database-url")
    parser.add_argument("--throughput-database-url", default="",
                        help="PostgreSQL store for the throughput benchmark (a database it may clear)")
    parser.add_argument("--skip-throughput", action="store_true",
                        help="leave out the throughput benchmark (it needs wrk, which make bench does not install)")
    parser.add_argument("--metering-only", action="store_true",
                        help="only the metering benchmarks (no TPC-H); writes metering-latest.* instead")
    args = parser.parse_args()
    if args.release_audit_only:
        release_audit_bench(args)
        return
    if args.products_only:
        products_bench(args)
        return
    if args.prepare_lock_only:
        prepare_lock_bench(args)
        return
    if args.throughput_only:
        throughput_bench(args)
        return
    if args.log_only:
        from bench import audit_log

        audit_log.write(audit_log.run(args.log_sizes, args.log_records, 16, 500), args.out)
        return
    if args.metering_only:
        report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": _machine(),
                  "metering": metering_figures(args.metering_events)}
        write_metering_report(report, args.out)
        return

    if not args.skip_throughput:  # the full run ends with it: say what is missing now, not after the others
        from bench.throughput import require_wrk

        require_wrk()
    work = ROOT / "bench" / "data"
    sf_label = f"{args.sf:g}"
    data_dir = tpch.generate(args.sf, work / f"tpch-sf{sf_label}")
    home = work / f"home-sf{sf_label}"
    shutil.rmtree(home, ignore_errors=True)
    server = Server(home, {
        "SLUICE_IMPORT_ROOT": str(data_dir), "SLUICE_WORKERS": "2", "SLUICE_RUN_THREADS": "2",
        "SLUICE_RUN_TIMEOUT_MS": "600000", "SLUICE_RUN_MEMORY_LIMIT_MB": "8192",
        "SLUICE_WORKER_ADDRESS_SPACE_MB": "16384", "SLUICE_MAX_UPLOAD_BYTES": str(64 * 1024**3)})
    admin_key = server.init()
    server.start()
    try:
        ctx = setup(server, admin_key, data_dir)
        print(f"imported TPC-H SF {sf_label}: {ctx['import_seconds']}", flush=True)
        wanted = {n for n in args.only.split(",") if n}
        queries = [(q.name, q.title, *approved_job(ctx, q.title, q.sql), q.sql) for q in tpch.accepted_queries()
                   if not wanted or q.name in wanted]
        small_job, _ = approved_job(ctx, "small aggregate", SMALL_SQL)
        for _, _, job_id, _, _ in queries:  # warm: prepares grant inputs, opens the instance in each worker
            governed(ctx, job_id)
            governed(ctx, job_id)
        governed(ctx, small_job)
        con = raw_connection(home, data_dir)
        con_arrow = raw_arrow_connection(home)
        results = []
        for name, title, job_id, frozen, sql in queries:
            raw(con, sql)
            raw(con_arrow, sql)
            g_times, r_times, a_times, last = [], [], [], {}
            for _ in range(args.reps):
                t, last = governed(ctx, job_id)
                g_times.append(t)
                r_times.append(raw(con, sql))
                a_times.append(raw(con_arrow, sql))
            g, r, a = statistics.median(g_times), statistics.median(r_times), statistics.median(a_times)
            results.append({"query": name, "title": title, "governed_ms": round(g, 2), "raw_ms": round(r, 2),
                            "ratio": round(g / r, 3), "raw_arrow_ms": round(a, 2), "ratio_arrow": round(g / a, 3),
                            "result_rows": last["result_rows"], "suppressed_cells": last["suppressed_cells"],
                            "threshold_rewrite": "__sluice_i0_n" in frozen})
            print(f"{name:4} governed {g:9.1f} ms  raw parquet {r:9.1f} ms ({g / r:5.2f})  "
                  f"raw arrow {a:9.1f} ms ({g / a:5.2f})", flush=True)
        g_small, r_small = [], []
        for _ in range(args.small_reps):
            g_small.append(governed(ctx, small_job)[0])
            r_small.append(raw(con, SMALL_SQL))
        small = {"sql": SMALL_SQL, "reps": args.small_reps,
                 "governed_median_ms": round(statistics.median(g_small), 3),
                 "raw_median_ms": round(statistics.median(r_small), 3),
                 "added_median_ms": round(statistics.median(g_small) - statistics.median(r_small), 3),
                 "governed_p95_ms": round(sorted(g_small)[int(0.95 * len(g_small)) - 1], 3)}
        print(f"small aggregate: governed {small['governed_median_ms']} ms, raw {small['raw_median_ms']} ms, "
              f"added {small['added_median_ms']} ms", flush=True)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            governed(ctx, small_job)
            count += 1
        rps = count / (time.perf_counter() - start)
        print(f"single-client governed runs per second: {rps:.1f}", flush=True)
        served_start = metering.served_start_cost(httpx.get(f"{server.base}/metrics", timeout=10).text)
    finally:
        server.stop()
    analysis = time_analysis()
    print(f"SQL analysis (in process, once per job at submission): {analysis}", flush=True)
    metering_report = {**metering_figures(args.metering_events), "served_start": served_start}
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "scale_factor": args.sf, "reps": args.reps,
        "machine": _machine(),
        "versions": {p: version(p) for p in ("duckdb", "pyarrow", "sqlglot", "fastapi", "uvicorn", "sqlalchemy")},
        "import_seconds": ctx["import_seconds"], "queries": results, "small_aggregate": small,
        "runs_per_second_single_client": round(rps, 1), "analysis_ms": analysis, "metering": metering_report,
        "targets": {"ratio_max_for_queries_over_100ms_raw": 1.10, "added_median_ms_max_small": 5.0},
    }
    write_report(report, args.out)
    from bench import audit_log

    audit_log.write(audit_log.run(args.log_sizes, args.log_records, 16, 500), args.out)
    release_audit_bench(args)
    products_bench(args)
    prepare_lock_bench(args)
    if not args.skip_throughput:
        throughput_bench(args)


def prepare_lock_bench(args: argparse.Namespace) -> None:
    """Two grants' run latency while a third prepares a large input (bench/prepare_lock.py)."""
    from bench import prepare_lock

    prepare_lock.write(prepare_lock.measure(ROOT / "bench" / "data", big_rows=args.prepare_lock_rows), args.out)


def throughput_bench(args: argparse.Namespace) -> None:
    """Governed small-query runs/s against a bare FastAPI + DuckDB endpoint, and Q1 with its download."""
    from bench import throughput

    options = argparse.Namespace(sf=args.sf, processes=args.throughput_processes, workers=2, connections=32,
                                 seconds=args.seconds, reps=args.reps, entity=False, skip_q1=False,
                                 database_url=args.throughput_database_url, profile=None,
                                 floor=args.throughput_processes == 1)
    throughput.write(throughput.measure(options), args.out)


def products_bench(args: argparse.Namespace) -> None:
    """Product calls per second with 32 concurrent clients against a bare FastAPI + DuckDB endpoint."""
    from bench import products

    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": _machine(),
              **products.measure(ROOT / "bench" / "data", seconds=args.products_seconds,
                                   clients=args.products_clients)}
    products.write(report, args.out)


def release_audit_bench(args: argparse.Namespace) -> None:
    """The release audit's cost per run and ledger size (bench/release_audit.py)."""
    from bench import release_audit

    sizes = [1000, 3000] if args.release_audit_reduced else [1000, 10_000, 100_000]
    release_audit.write(release_audit.measure(1_000_000, sizes, 5 if args.release_audit_reduced else 20), args.out)


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def metering_figures(events: int) -> dict[str, Any]:
    """Rating throughput, one bill over `events` events, and the cost of recording each run's start."""
    rating = metering.rating(n_bill=events, n_rate=min(200_000, events))
    print(f"metering: {rating['events_rated_per_second']:,} events rated/s; one bill over {events:,} events in "
          f"{rating['bill_build_seconds']} s", flush=True)
    start = metering.start_record_cost()
    print(f"run start record: +{start['start_record_added_ms']} ms per run (SQLite, in process)", flush=True)
    return {"rating": rating, "start_record": start}


def write_metering_report(report: dict[str, Any], out: Path) -> None:
    """The metering-only run: metering-latest.json and .md (the full report is left alone)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metering-latest.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    lines = [f"# Metering benchmark {report['date']}", "", *metering.markdown(report["metering"])]
    (out / "metering-latest.md").write_text("\n".join(lines), "utf-8")
    print(f"wrote {out / 'metering-latest'}.json and .md")


def time_analysis(reps: int = 15) -> dict[str, float]:
    """Median milliseconds of `policy.analysis.analyse` per accepted TPC-H query (it runs once, at submission)."""
    from policy.analysis import analyse
    from policy.constraints import ColumnPolicy, Constraint, Grade, TablePolicy

    doc = tpch.policy()
    tables = {name: TablePolicy(name=name, columns=tuple(ColumnPolicy(c[0], c[1], Constraint(c[2]))
                                                        for c in spec["columns"]),
                                entity_column=spec["entity_column"], grade=Grade(spec["grade"]))
              for name, spec in doc["tables"].items()}
    out = {}
    for q in tpch.accepted_queries():
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            analyse(q.sql, tables)
            times.append((time.perf_counter() - start) * 1000)
        out[q.name] = round(statistics.median(times), 2)
    return out


def write_report(report: dict[str, Any], out: Path) -> None:
    """JSON plus a Markdown table, named by date and scale factor; `latest.*` points at the newest."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench-{report['date'][:10]}-sf{report['scale_factor']:g}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    lines = [f"# Benchmark {report['date']} — TPC-H SF {report['scale_factor']:g}", "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
             + f"; Python {report['machine']['python']}; {report['machine']['cpus']} CPUs.", "",
             f"Medians of {report['reps']} alternating runs per side. Governed = HTTP round trip of "
             "`POST /v1/jobs/{id}/runs` on `sluice serve`; raw = plain DuckDB over the same Parquet, fully fetched.",
             "Raw Arrow = plain DuckDB over the same memory-mapped Arrow inputs the sandbox scans. (k) marks queries "
             "over entity data, which run with the release rewrite (per-group entity sets and dominance statistics) "
             "and the release audit; raw runs the submitted SQL without them.", "",
             "| query | raw Parquet ms | raw Arrow ms | governed ms | governed/raw Parquet | governed/raw Arrow "
             "| rows | suppressed |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for q in report["queries"]:
        mark = " (k)" if q["threshold_rewrite"] else ""
        lines.append(f"| {q['query']}{mark} | {q['raw_ms']:.1f} | {q['raw_arrow_ms']:.1f} | {q['governed_ms']:.1f} | "
                     f"{q['ratio']:.3f} | {q['ratio_arrow']:.3f} | {q['result_rows']} | {q['suppressed_cells']} |")
    s = report["small_aggregate"]
    big = [q for q in report["queries"] if q["raw_ms"] > 100]
    worst = max((q["ratio"] for q in big), default=float("nan"))
    lines += ["", f"Small aggregate (`{s['sql']}`), {s['reps']} runs: raw median {s['raw_median_ms']} ms, "
              f"governed median {s['governed_median_ms']} ms (p95 {s['governed_p95_ms']} ms): "
              f"**{s['added_median_ms']} ms added**.", "",
              f"Single-client governed runs per second (small aggregate): "
              f"**{report['runs_per_second_single_client']}**.", "",
              "SQL analysis per query (ms, median; once per job at submission, never per run): "
              + ", ".join(f"{k} {v}" for k, v in report["analysis_ms"].items()) + ".",
              "", f"Worst governed/raw among queries over 100 ms raw: **{worst:.3f}** (target ≤ 1.10).", "",
              *metering.markdown(report["metering"])]
    (out / f"{stem}.md").write_text("\n".join(lines), "utf-8")
    shutil.copy(out / f"{stem}.md", out / "latest.md")
    shutil.copy(out / f"{stem}.json", out / "latest.json")
    print(f"wrote {out / stem}.json and .md")


if __name__ == "__main__":
    main()
