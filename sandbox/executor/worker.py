"""The worker process: caps its own address space, then serves runs from its pipe until told to stop."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pyarrow as pa

from sandbox.executor.engine import LockedEngine
from sandbox.executor.types import EngineLimits, RunSpec

READY = "ready"
START_FAILED = "start_failed"
M_ARENA_MAX = -8  # glibc mallopt parameter: the most malloc arenas the process may create


def limit_malloc_arenas(threads: int) -> bool:
    """Let glibc create at most max(2, threads) malloc arenas; True if the C library accepted it.

    glibc reserves 64 MiB of address space for each arena and by default makes up to 8 per core as threads
    first allocate. A worker's DuckDB, pyarrow and BLAS threads then reserved about 900 MiB more than they use,
    which counts against RLIMIT_AS: near the cap, a small query's Arrow scan failed with MemoryError.
    """
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, max(2, threads)))
    except (OSError, AttributeError):  # not glibc: nothing to bound
        return False


def limit_address_space(megabytes: int) -> None:
    """Cap this process's address space (RLIMIT_AS); allocations beyond it fail instead of growing."""
    limit = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def worker_main(
    conn: Connection, limits: EngineLimits, max_instances: int, work_dir: str, started: float
) -> None:
    """Worker entry point: set limits, warm up, report ready, then serve runs until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    try:
        limit_malloc_arenas(limits.threads)
        limit_address_space(limits.address_space_mb)
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        os.chdir(work_dir)
        pa.set_cpu_count(max(1, limits.threads))
        pa.set_io_thread_count(max(1, limits.threads))
        engine = LockedEngine(limits, max_instances=max_instances)
        engine.warm_up()
    except Exception as exc:
        conn.send((START_FAILED, type(exc).__name__))
        return
    conn.send((READY, os.getpid(), (time.time() - started) * 1000.0))
    _serve(conn, engine)


def _serve(conn: Connection, engine: LockedEngine) -> None:
    """Answer each RunSpec with a RunOutcome; stop on None or when the parent goes away."""
    while True:
        try:
            message: Any = conn.recv()
        except (EOFError, OSError):
            break
        if message is None:
            break
        if not isinstance(message, RunSpec):
            break
        outcome = engine.run(message)
        try:
            conn.send(outcome)
        except (BrokenPipeError, OSError):
            break
    engine.close()
