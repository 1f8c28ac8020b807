"""The release audit's cost: time added per run and ledger size, as the ledger grows over a large population.

Releases follow the shape of aggregate tables: each entity has attributes (region, age band, income band, sex,
visit month); each run releases up to 50 cells, one per group of a GROUP BY over one or two attributes, restricted
by a WHERE on a third one (the cells of one run partition that subpopulation). Every cell releases `rows` and one
value measure. The ledger is grown run by run to each target size; at each size, a batch of further runs is timed.
Ledger size is what the store keeps: one Roaring bitmap per distinct entity set, one row per (measure, set) released.

`python -m bench.release_audit [--population 1000000] [--sizes 1000,10000,100000] [--reduced]`; `make bench` runs it
after the other parts (or alone: `python -m bench --release-audit-only`) and writes `release-audit-<date>.md`.

Its figures are one process's: whole processes of the same code differ by ±30% in the median run. To compare two
code versions, replay the same timed runs from one snapshot, the versions alternating (`bench/release_audit_replay.py`:
`python -m bench.release_audit_replay --replays 10 --code <tree A>,<tree B>`); to compare whole processes of this
bench instead, alternate them with the same arguments and `PYTHONHASHSEED=0`.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import resource
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pyroaring import BitMap

from policy.release_audit import AuditCell, AuditPart, PopulationAudit, audit

ATTRIBUTES = {"region": 50, "age": 10, "income": 5, "sex": 2, "month": 12}
K = 10
CELLS_PER_RUN = 50
MEASURES = ("rows", "value")


def population(size: int, seed: int = 7) -> dict[str, np.ndarray]:
    """Attribute values of each entity (index 1..size)."""
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, values, size + 1) for name, values in ATTRIBUTES.items()}


def runs(attributes: dict[str, np.ndarray], seed: int = 11) -> Any:
    """An endless stream of runs: lists of up to 50 entity sets (a GROUP BY under a WHERE)."""
    rng = random.Random(seed)
    names = list(ATTRIBUTES)
    ids = np.arange(len(next(iter(attributes.values()))), dtype=np.uint32)
    while True:
        where, *group = rng.sample(names, 3)
        group = group[: rng.choice((1, 2))]
        chosen = rng.randrange(ATTRIBUTES[where])
        mask = (attributes[where] == chosen) & (ids > 0)
        keys = np.zeros(len(ids), dtype=np.int64)
        for name in group:
            keys = keys * ATTRIBUTES[name] + attributes[name]
        keys = np.where(mask, keys, -1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
        sets = []
        for part in np.split(order, bounds):
            if keys[part[0]] < 0 or len(part) < K:
                continue
            sets.append(BitMap(ids[part]))
        rng.shuffle(sets)
        yield sets[:CELLS_PER_RUN]


def measure(population_size: int, sizes: list[int], timed_runs: int, out: Path | None = None) -> dict[str, Any]:
    """Grow one population's ledger to each size; time further runs there; report time per run and size (written
    to `out` after each size, so that a long run leaves its smaller sizes behind)."""
    attributes = population(population_size)
    stream = runs(attributes)
    state = PopulationAudit("bench", K)
    released = 0
    result: dict[str, Any] = {"population": population_size, "k": K, "cells_per_run": CELLS_PER_RUN, "sizes": []}
    key = 0

    def one_run(sets: list[BitMap]) -> tuple[float, float, int, int]:
        nonlocal key
        cells = []
        for entities in sets:
            key += 1
            cells.append(AuditCell(key, (AuditPart("bench", entities, MEASURES),)))
        start, cpu = time.perf_counter(), time.process_time()
        decision = audit({"bench": state}, cells)
        return ((time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000, len(cells),
                len(decision.suppressed))

    grow_ms: list[float] = []
    started_cpu = time.process_time()
    for target in sorted(sizes):
        while released < target:
            ms, _, count, _ = one_run(next(stream))
            grow_ms.append(ms)
            released += count * len(MEASURES)
        times, cpus, suppressed, cells = [], [], 0, 0
        for _ in range(timed_runs):
            ms, cpu_ms, count, blocked = one_run(next(stream))
            times.append(ms)
            cpus.append(cpu_ms)
            cells += count
            suppressed += blocked
            released += count * len(MEASURES)
        rss_mb = _rss_mb()  # the audit state, before the replay below builds a second one
        distinct = {bytes(b.serialize()) for _, b in state.history}
        bitmap_bytes = sum(len(b) for b in distinct)
        ledger = state.ledger("value")
        start, cpu = time.perf_counter(), time.process_time()
        replayed = PopulationAudit("bench", K)
        replayed.replay(state.history)
        reload_s, reload_cpu = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        save_s = time.perf_counter() - start
        start = time.perf_counter()
        pickle.loads(blob)
        restore_s = time.perf_counter() - start
        snapshot_bytes = len(blob)
        del replayed, blob  # not carried into the next size (they doubled the process's memory)
        row = {"ledger_cells": released, "distinct_sets": len(distinct), "bitmap_bytes": bitmap_bytes,
               "ledger_rows_bytes_estimate": released * 160, "atoms": ledger.atoms,
               "v_s_dimension": len(ledger.vrows), "audit_ms_median": round(statistics.median(times), 3),
               "audit_ms_p95": round(_p95(times), 3), "audit_cpu_ms_median": round(statistics.median(cpus), 3),
               "audit_cpu_ms_p95": round(_p95(cpus), 3), "cells_audited": cells, "suppressed": suppressed,
               "reload_seconds": round(reload_s, 2), "reload_cpu_seconds": round(reload_cpu, 2),
               "snapshot_bytes": snapshot_bytes,
               "rss_mb": rss_mb, "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
               "snapshot_save_seconds": round(save_s, 3),
               "snapshot_load_seconds": round(restore_s, 3), "load_average": round(os.getloadavg()[0], 1),
               "grow_cpu_seconds": round(time.process_time() - started_cpu, 1),
               "unconfirmed": sum(ledger.unconfirmed for ledger in {id(x): x for x in state.ledgers.values()}.values()),
               "exact": any(x.modulus is None for x in state.ledgers.values())}
        result["sizes"].append(row)
        print(f"ledger {released:>7} cells: audit median {row['audit_ms_median']} ms/run "
              f"(p95 {row['audit_ms_p95']}; CPU median {row['audit_cpu_ms_median']}, p95 {row['audit_cpu_ms_p95']}), "
              f"{row['distinct_sets']} sets, {bitmap_bytes / 1e6:.1f} MB bitmaps, "
              f"{row['atoms']} atoms, dim V_s {row['v_s_dimension']}, {suppressed}/{cells} suppressed, "
              f"replay {row['reload_seconds']} s (CPU {row['reload_cpu_seconds']} s), snapshot "
              f"{snapshot_bytes / 1e6:.1f} MB saved in {row['snapshot_save_seconds']} s, loaded in "
              f"{row['snapshot_load_seconds']} s, load average {row['load_average']}, "
              f"{row['unconfirmed']} unconfirmed, CPU so far {row['grow_cpu_seconds']} s, "
              f"RSS {rss_mb} MB before the replay, peak {row['max_rss_mb']} MB",
              flush=True)
        if out is not None:
            write(result, out)
    result["grow_ms_median"] = round(statistics.median(grow_ms), 3) if grow_ms else None
    return result


def _rss_mb() -> int:
    """The process's resident memory now, in MB (Linux; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20)


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, int(0.95 * len(values)) - 1)]


def write(result: dict[str, Any], out: Path) -> None:
    """JSON and a Markdown table under `out` (release-audit-<date>.*)."""
    out.mkdir(parents=True, exist_ok=True)
    date = datetime.now(UTC).isoformat(timespec="seconds")
    stem = f"release-audit-{date[:10]}"
    (out / f"{stem}.json").write_text(json.dumps({"date": date, **result}, indent=2) + "\n", "utf-8")
    lines = [f"# Release audit {date}", "",
             f"Population {result['population']:,} entities, k = {result['k']}, runs of up to "
             f"{result['cells_per_run']} cells (a GROUP BY under a WHERE), two measures per cell. Time is the audit "
             "alone (in the API process, under the population lock), per run.", "",
             "| ledger cells | distinct sets | bitmaps MB | atoms | dim V_s | audit ms/run median (p95) | CPU ms/run "
             "median (p95) | suppressed | replay s (CPU) | snapshot MB, save / load s | RSS MB (peak) | load avg |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["sizes"]:
        lines.append(f"| {row['ledger_cells']:,} | {row['distinct_sets']:,} | {row['bitmap_bytes'] / 1e6:.1f} | "
                     f"{row['atoms']:,} | {row['v_s_dimension']} | {row['audit_ms_median']} ({row['audit_ms_p95']}) | "
                     f"{row['audit_cpu_ms_median']} ({row['audit_cpu_ms_p95']}) | "
                     f"{row['suppressed']}/{row['cells_audited']} | {row['reload_seconds']} "
                     f"({row['reload_cpu_seconds']}) | {row['snapshot_bytes'] / 1e6:.1f}, "
                     f"{row['snapshot_save_seconds']} / {row['snapshot_load_seconds']} | {row.get('rss_mb', '')} "
                     f"({row.get('max_rss_mb', '')}) | "
                     f"{row['load_average']} |")
    lines += ["", "Target: at most 5 ms added per run of up to 50 cells with a ledger of 10^4 cells.", ""]
    (out / f"{stem}.md").write_text("\n".join(lines), "utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--population", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--runs", type=int, default=20, help="timed runs at each ledger size")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--reduced", action="store_true", help="ledgers of 10^3 and 3*10^3 cells, 5 timed runs")
    args = parser.parse_args()
    if args.reduced:
        args.population, args.sizes, args.runs = 1_000_000, "1000,3000", 5
    result = measure(args.population, [int(s) for s in args.sizes.split(",")], args.runs, args.out)
    write(result, args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
