"""The default engine: DuckDB in the pool of long-lived, locked-down worker processes (sandbox.executor)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from policy.sql_engines import DUCKDB
from sandbox.executor.pool import WorkerPool
from sandbox.executor.types import RunOutcome, RunSpec


class DuckDBEngine:
    """The worker pool behind the engine interface: one call through, nothing added to the run path."""

    name = DUCKDB
    input_format: Literal["arrow", "parquet"] = "arrow"  # memory-mapped IPC: scans as fast as native storage

    def __init__(self, pool: Callable[[], WorkerPool]) -> None:
        self._pool = pool

    def start(self) -> None:
        """Start the pool (spawn and warm the workers)."""
        self._pool()

    def run(self, spec: RunSpec) -> RunOutcome:
        """Run `spec` on an idle worker."""
        return self._pool().run(spec)

    def close(self) -> None:
        """Nothing: the pool's owner closes it."""
