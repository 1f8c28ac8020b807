"""Interleaved replays of the release audit's timed runs: an A/B of two code versions the bench can decide.

`bench/release_audit.py` grows one ledger per process and times 20 runs once; whole processes of the same code
differ by ±30% in its median (docs/performance.md, "The release audit"). Here the ledger is grown once, exactly as
the bench grows it (same population, same runs, same cell keys, same schedule of sizes), and pickled just before
the last `--warmup` runs that precede the timed ones. Each replay is a forked child that loads that snapshot, fills
the cache of each released set's atoms that a snapshot drops (the bench's process, which grew the ledger, has it;
without it, 8 median runs recomputed 37 sets' atoms at 70-80 us each, against 2 in the bench's process), runs the
warm-up runs untimed (they refill the other caches), collects garbage, then times the same `--runs` runs (CPU per
run, `time.process_time`, around `audit` only, as the bench). Every replay of every code version starts from the
same bytes, so the decisions must be the same in every replay: the child reports them (suppressed per run, sets
and atoms at the end), and a difference stops the comparison.

Two code versions: `--code ROOT[,ROOT…]` names source trees (a worktree's root, holding `policy/`). A child for
ROOT drops the imported `policy` modules, puts ROOT first on `sys.path` and imports `policy` from there before it
unpickles the snapshot, so the snapshot's classes are ROOT's (the snapshot format, `Ledger.__getstate__`, must
be the same in both trees). Without `--code`, the only version is the tree this module was imported from. The
versions alternate within each round, in reversed order every other round (A B B A …), so both see the same
machine. Children share the parent's hash seed; for runs in separate processes (the plain bench of each tree, one
after the other) set `PYTHONHASHSEED=0` in both. The secret prime of the ledger is drawn once, in the parent, and
is in the snapshot.

    python -m bench.release_audit_replay --sizes 1000,10000 --runs 20 --replays 10 \\
        --code /work/wt/base,/work/wt/audit-margin [--out DIR]

Reported per version: per run, the minimum and median CPU over its replays; the **median run** (median over the
runs of the per-run minimum, and of the per-run median); the total of the per-run medians; with two versions,
the median over the runs of the per-run ratio (second / first) of the minimums and of the medians. The minimums
are the figure to compare: two trees of the same code (A/A, 10 replays, load 1.4-1.6) gave a median run of 5.13
and 5.03 ms and a ratio of minimums of 0.99, while their medians over replays differed by 13% (the machine's
other processes come and go within a replay).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import pickle
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyroaring import BitMap

from bench.release_audit import CELLS_PER_RUN, MEASURES, K, population, runs
from policy.release_audit import AuditCell, AuditPart, PopulationAudit, audit

Run = tuple[int, list[BitMap]]  # the key of its first cell, and its sets


@dataclass
class Prepared:
    """The snapshot before the warm-up runs, and the runs replayed from it."""

    snapshot: bytes
    warmup: list[Run]
    timed: list[Run]
    ledger_cells: int  # released cells once the timed runs are in (the bench's figure)


def prepare(population_size: int, sizes: list[int], timed_runs: int, warmup: int) -> Prepared:
    """Grow the ledger as `bench.release_audit.measure` does (to each size, then `timed_runs` runs; the timed runs
    of the last size are the ones replayed), and snapshot it `warmup` runs before those."""
    stream = runs(population(population_size))
    schedule: list[Run] = []
    key = released = 0

    def take() -> None:
        nonlocal key, released
        sets = next(stream)
        schedule.append((key, sets))
        key += len(sets)
        released += len(sets) * len(MEASURES)

    for target in sorted(sizes):
        while released < target:
            take()
        for _ in range(timed_runs):
            take()
    cut = len(schedule) - timed_runs - warmup
    if cut < 0:
        raise ValueError("fewer runs before the timed ones than --warmup")
    state = PopulationAudit("bench", K)
    for first, sets in schedule[:cut]:
        audit({"bench": state}, _cells(AuditCell, AuditPart, first, sets))
    return Prepared(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL), schedule[cut: cut + warmup],
                    schedule[cut + warmup:], released)


def _cells(cell: Any, part: Any, first: int, sets: list[BitMap]) -> list[Any]:
    """A run's cells, keyed as the bench keys them (one counter over every cell of the process, from 1)."""
    return [cell(first + i + 1, (part("bench", entities, MEASURES),)) for i, entities in enumerate(sets)]


def replay_once(prepared: Prepared, root: Path | None) -> dict[str, Any]:
    """One replay in a forked child (see module doc): per timed run its CPU ms and its suppressed cells, and the
    ledger's sets and atoms at the end."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        status = 0
        try:
            payload = json.dumps(_child(prepared, root)).encode()
        except BaseException:
            payload, status = json.dumps({"error": traceback.format_exc()}).encode(), 1
        with os.fdopen(write, "wb") as out:
            out.write(payload)
        os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as source:
        payload = source.read()
    os.waitpid(pid, 0)
    answer: dict[str, Any] = json.loads(payload)
    if "error" in answer:
        raise RuntimeError(f"replay of {root or 'this tree'} failed:\n{answer['error']}")
    return answer


def _child(prepared: Prepared, root: Path | None) -> dict[str, Any]:
    module = _import_from(root)
    cell, part, run_audit = module.AuditCell, module.AuditPart, module.audit
    importlib.import_module("policy.audit_kernel").warm()  # (from numba's cache: not in the timed runs)
    state = pickle.loads(prepared.snapshot)
    populations = {"bench": state}
    for ledger in {id(x): x for x in state.ledgers.values()}.values():
        cache = getattr(ledger, "_atoms_of_set", None)
        for index in range(len(ledger.sets) if cache is not None else 0):
            cache(index)  # (see module doc: the growing process has every set's atoms cached)
    for first, sets in prepared.warmup:
        run_audit(populations, _cells(cell, part, first, sets))
    gc.collect()
    cpu_ms, suppressed = [], []
    for first, sets in prepared.timed:
        cells = _cells(cell, part, first, sets)
        start = time.process_time()
        decision = run_audit(populations, cells)
        cpu_ms.append((time.process_time() - start) * 1000)
        suppressed.append(sorted(decision.suppressed))
    ledger = state.ledger("value")
    return {"cpu_ms": cpu_ms, "suppressed": suppressed, "sets": len(ledger.sets), "atoms": ledger.atoms,
            "policy": str(Path(importlib.import_module("policy").__file__ or "").parent)}


def _import_from(root: Path | None) -> Any:
    """`policy.release_audit` from `root` (None: the modules already imported)."""
    if root is None:
        return importlib.import_module("policy.release_audit")
    for name in [n for n in sys.modules if n == "policy" or n.startswith("policy.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    module = importlib.import_module("policy.release_audit")
    where = Path(module.__file__ or "").absolute()
    if not where.is_relative_to(root.absolute()):
        raise RuntimeError(f"policy imported from {where}, not from {root}")
    return module


def compare(prepared: Prepared, roots: list[Path | None], replays: int) -> dict[str, Any]:
    """`replays` rounds; in each, one replay of every version, in reversed order every other round."""
    labels = [str(root) if root is not None else "this tree" for root in roots]
    figures: dict[str, list[list[float]]] = {label: [] for label in labels}
    decisions: Any = None
    for round_ in range(replays):
        order = list(zip(labels, roots, strict=True))
        for label, root in order if round_ % 2 == 0 else order[::-1]:
            answer = replay_once(prepared, root)
            seen = (answer["suppressed"], answer["sets"], answer["atoms"])
            if decisions is None:
                decisions = seen
            elif seen != decisions:
                raise RuntimeError(f"replay {round_} of {label} decided differently from the first replay")
            figures[label].append(answer["cpu_ms"])
    result: dict[str, Any] = {"ledger_cells": prepared.ledger_cells, "runs": len(prepared.timed),
                              "replays": replays, "warmup": len(prepared.warmup),
                              "suppressed": sum(len(s) for s in decisions[0]),
                              "cells": sum(len(sets) for _, sets in prepared.timed), "versions": {}}
    for label in labels:
        per_run = list(zip(*figures[label], strict=True))  # per run, its CPU in each replay
        mins = [min(values) for values in per_run]
        medians = [statistics.median(values) for values in per_run]
        result["versions"][label] = {
            "run_min_ms": [round(v, 3) for v in mins], "run_median_ms": [round(v, 3) for v in medians],
            "median_run_of_mins_ms": round(statistics.median(mins), 3),
            "median_run_of_medians_ms": round(statistics.median(medians), 3),
            "total_of_medians_ms": round(sum(medians), 1)}
    if len(labels) == 2:
        for name, figure in (("median_ratio", "run_median_ms"), ("min_ratio", "run_min_ms")):
            first, second = (result["versions"][label][figure] for label in labels)
            ratios = [b / a for a, b in zip(first, second, strict=True) if a > 0]
            result[name] = round(statistics.median(ratios), 3) if ratios else None
    return result


def report(result: dict[str, Any]) -> str:
    """The figures as text."""
    lines = [f"{result['ledger_cells']:,} ledger cells, {result['runs']} timed runs, {result['replays']} replays "
             f"per version, {result['warmup']} warm-up runs, {result['suppressed']}/{result['cells']} suppressed "
             f"(every replay), load average {os.getloadavg()[0]:.1f}"]
    for label, row in result["versions"].items():
        lines.append(f"{label}: median run {row['median_run_of_mins_ms']} ms (min over replays), "
                     f"{row['median_run_of_medians_ms']} ms (median over replays); total {row['total_of_medians_ms']}"
                     f" ms; per run (min): {' '.join(f'{v:.2f}' for v in row['run_min_ms'])}")
    if "median_ratio" in result:
        lines.append(f"median per-run ratio (second / first): of the minimums over replays {result['min_ratio']}, "
                     f"of the medians over replays {result['median_ratio']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--population", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="1000,10000", help="the bench's sizes; the last one's runs are replayed")
    parser.add_argument("--runs", type=int, default=20, help="timed runs at each size (as the bench)")
    parser.add_argument("--replays", type=int, default=10, help="replays of each version")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs replayed before the timed ones")
    parser.add_argument("--code", default="", help="comma-separated source trees (default: this one)")
    parser.add_argument("--out", type=Path, default=None, help="also write release-audit-replay-<time>.json here")
    args = parser.parse_args()
    roots: list[Path | None] = [Path(r) for r in args.code.split(",") if r] or [None]
    started = time.process_time()
    prepared = prepare(args.population, [int(s) for s in args.sizes.split(",")], args.runs, args.warmup)
    print(f"ledger grown in {time.process_time() - started:.1f} s CPU; snapshot {len(prepared.snapshot) / 1e6:.1f} "
          f"MB; runs of up to {CELLS_PER_RUN} cells", flush=True)
    result = compare(prepared, roots, args.replays)
    print(report(result))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        date = datetime.now(UTC).isoformat(timespec="seconds")
        (args.out / f"release-audit-replay-{date}.json").write_text(json.dumps({"date": date, **result}, indent=2))


if __name__ == "__main__":
    main()
