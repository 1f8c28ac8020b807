"""Measure the executor's costs against raw DuckDB: `python -m bench.executor [--runs N]`."""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from sandbox.executor.engine import LockedEngine
from sandbox.executor.lockdown import open_instance
from sandbox.executor.pool import WorkerPool
from sandbox.executor.results import write_result
from sandbox.executor.statement import single_select
from sandbox.executor.types import EngineLimits, InputTable, RunSpec

SQL = ("SELECT district, count(*) AS n, avg(income) AS avg_income FROM people "
       "GROUP BY district ORDER BY district")
LIMITS = EngineLimits(memory_limit_mb=1024, threads=2, timeout_ms=30_000, address_space_mb=6144)


def median_ms(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of `fn` in ms over `runs` calls, after five warm-up calls."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def make_inputs(root: Path, rows: int = 5000, tables: int = 5) -> list[InputTable]:
    """`tables` Parquet files of `rows` rows each; the first is called `people`."""
    table = pa.table({
        "person_id": [f"{i:032x}" for i in range(rows)],
        "district": [f"d{i % 12}" for i in range(rows)],
        "age": [20 + i % 60 for i in range(rows)],
        "income": [1000 + (i * 37) % 9000 for i in range(rows)],
    })
    out = []
    for n in range(tables):
        path = root / f"t{n}.parquet"
        pq.write_table(table, path, compression="zstd")
        out.append(InputTable("people" if n == 0 else f"t{n}", path))
    return out


def main(argv: list[str] | None = None) -> None:
    """Print a table of medians: raw DuckDB, in-process locked engine, pool, and the one-off costs."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    runs = args.runs
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = make_inputs(root)
        people = inputs[0]

        raw = duckdb.connect()
        raw.from_arrow(ds.dataset(str(people.path), format="parquet")).create_view("people")
        rows.append(("raw DuckDB: cursor + small aggregate over 5k rows, to_arrow_table",
                     median_ms(lambda: raw.cursor().sql(SQL).to_arrow_table(), runs)))
        table = raw.sql(SQL).to_arrow_table()
        rows.append(("  single_select (extract_statements)", median_ms(lambda: single_select(SQL), runs)))
        counter = iter(range(10**9))
        rows.append(("  write_result (Parquet in memory + SHA-256 + write + rename)",
                     median_ms(lambda: write_result(table, root / "w" / f"{next(counter)}.parquet"), runs)))

        engine = LockedEngine(LIMITS)
        engine.warm_up()

        def spec() -> RunSpec:
            return RunSpec("bench", (people,), SQL, {}, 1, None, root / "r" / f"{next(counter)}.parquet")

        pair = (spec(), engine.run(spec()))
        rows.append(("  pickle RunSpec + RunOutcome round trip",
                     median_ms(lambda: pickle.loads(pickle.dumps(pair)), runs)))
        rows.append(("locked engine in process: LockedEngine.run",
                     median_ms(lambda: engine.run(spec()), runs)))
        rows.append(("instance: open + lock + 1 Arrow view",
                     median_ms(lambda: open_instance(inputs[:1], LIMITS).con.close(), 30)))
        rows.append(("instance: open + lock + 5 Arrow views",
                     median_ms(lambda: open_instance(inputs, LIMITS).con.close(), 30)))
        engine.close()

        started = time.perf_counter()
        with WorkerPool(2, LIMITS, work_dir=root / "work") as pool:
            rows.append(("pool start, 2 workers in parallel (spawn + rlimit + warm-up)",
                         (time.perf_counter() - started) * 1000.0))
            rows.append(("  worker spawn-to-ready, mean of the 2", statistics.mean(pool.startup_ms())))
            rows.append(("pool path: WorkerPool.run, same query",
                         median_ms(lambda: pool.run(spec()), runs)))
    width = max(len(name) for name, _ in rows)
    print(f"| {'step'.ljust(width)} | median ms |")
    print(f"|{'-' * (width + 2)}|-----------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value:9.3f} |")


if __name__ == "__main__":
    main()
