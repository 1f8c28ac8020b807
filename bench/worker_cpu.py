"""CPU per run of the sandbox worker and of its caller: `python -m bench.worker_cpu [--runs N] [--workers N]`.

Drives `WorkerPool` directly (no HTTP, no store) with the throughput benchmark's small query over TPC-H `nation`
(an Arrow IPC copy of the Parquet file, as the service prepares it), sequentially from one thread. Reports the
worker processes' CPU (user + system from /proc/<pid>/stat) and the calling process's CPU per run: figures that
depend much less on the machine's load than wall time does.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import tpch
from sandbox.executor.pool import WorkerPool
from sandbox.executor.types import EngineLimits, InputTable, RunSpec
from sandbox.inputs import arrow_copy

SQL = "SELECT n_regionkey, count(*) AS n FROM nation GROUP BY 1"
LIMITS = EngineLimits(memory_limit_mb=4096, threads=2, timeout_ms=600_000, address_space_mb=16384)
TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def process_cpu_ms(pid: int) -> float:
    """User + system CPU of process `pid` so far, in ms (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_MS


def own_cpu_ms() -> float:
    """User + system CPU of this process (all its threads) so far, in ms."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000.0


def measure(pool: WorkerPool, spec_for: Callable[[int], RunSpec], runs: int) -> dict[str, float]:
    """Run `runs` specs one after another; CPU per run of the workers and of this process, wall per run."""
    pids = pool.worker_pids()
    workers0 = sum(process_cpu_ms(pid) for pid in pids)
    own0, wall0 = own_cpu_ms(), time.perf_counter()
    for i in range(runs):
        outcome = pool.run(spec_for(i))
        if outcome.status != "succeeded":
            raise SystemExit(f"run failed: {outcome.error_code} {outcome.internal_detail}")
    wall = time.perf_counter() - wall0
    own = own_cpu_ms() - own0
    workers = sum(process_cpu_ms(pid) for pid in pids) - workers0
    return {"worker_ms": workers / runs, "caller_ms": own / runs, "wall_ms": wall * 1000.0 / runs}


def main(argv: list[str] | None = None) -> None:
    """Print worker and caller CPU per run for a few rounds."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--data", type=Path, default=Path("bench/data"))
    args = parser.parse_args(argv)
    nation = tpch.generate(1, args.data / "tpch-sf1") / "nation.parquet"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        arrow = arrow_copy(nation, root / "nation.arrow")
        inputs = (InputTable("nation", arrow),)
        results = root / "results"
        results.mkdir()

        def spec_for(i: int) -> RunSpec:
            return RunSpec(instance_key="grant:nation", inputs=inputs, sql=SQL, params={}, k=5, max_rows=None,
                           result_path=results / f"{i:08d}.parquet")

        with WorkerPool(args.workers, LIMITS, work_dir=root / "work") as pool:
            measure(pool, spec_for, 50)  # warm: instance opened, caches filled
            rounds = [measure(pool, spec_for, args.runs) for _ in range(args.rounds)]
    for n, r in enumerate(rounds):
        print(f"round {n}: worker {r['worker_ms']:.3f} ms/run, caller {r['caller_ms']:.3f} ms/run, "
              f"wall {r['wall_ms']:.3f} ms/run")
    print(f"median: worker {statistics.median(r['worker_ms'] for r in rounds):.3f}, "
          f"caller {statistics.median(r['caller_ms'] for r in rounds):.3f}, "
          f"wall {statistics.median(r['wall_ms'] for r in rounds):.3f} ms/run; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
