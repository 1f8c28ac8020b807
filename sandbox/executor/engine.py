"""Run one spec in a locked instance, in process: refuse, execute under a watchdog, control output, write."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa
from duckdb import _seam

from sandbox.executor.control import RunClock, control_output
from sandbox.executor.errors import ExecutorError, QueryTimedOut, StatementRefused
from sandbox.executor.failures import classify_failure
from sandbox.executor.instances import InstanceCache
from sandbox.executor.lockdown import Instance
from sandbox.executor.statement import checked_select
from sandbox.executor.types import EngineLimits, RunOutcome, RunSpec
from sandbox.executor.watchdog import Watchdog

DEFAULT_MAX_INSTANCES = 8


def run_locked(
    instance: Instance,
    sql: str | duckdb.Statement,
    params: Mapping[str, Any],
    *,
    timeout_ms: int,
    watchdog: Watchdog,
) -> pa.Table:
    """Execute `sql` (exactly one SELECT) on a fresh cursor of `instance`, fully materialized as Arrow.

    A string is checked with `checked_select` first. Raises the engine's own exception on failure; callers
    map it with `classify_failure`. A query the watchdog interrupted raises `InterruptException` or, when
    the interrupt lands while the result is materialized and DuckDB reports it as another error (an
    `InvalidInputException`), `QueryTimedOut`.
    """
    statement = checked_select(sql) if isinstance(sql, str) else sql
    cursor = instance.con.cursor()
    try:
        with watchdog.guard(cursor, timeout_ms):
            return _arrow_table(cursor, statement, params)
    except duckdb.Error as exc:
        if watchdog.fired and not isinstance(exc, duckdb.InterruptException):
            raise QueryTimedOut(f"the query ran past the time limit of {timeout_ms} ms and was stopped",
                                detail=type(exc).__name__) from exc
        raise
    finally:
        cursor.close()


def _arrow_table(cursor: duckdb.DuckDBPyConnection, statement: duckdb.Statement,
                 params: Mapping[str, Any]) -> pa.Table:
    """Run the one checked statement on `cursor` and fetch its whole result as Arrow, in one engine call.

    `cursor.sql(statement).to_arrow_table()` first binds the statement to build a lazy relation and then submits
    the relation's text, which binds it again: for a small query the first bind was about a third of the query's
    CPU. `_seam.submit` is the call that relation makes (duckdb's one entry point for running a statement), here
    without the relation: it runs the same text (the parsed statement's own) with the same parameter values, and
    DuckDB checks the parameters the same way (tests/sandbox/test_executor_lockdown.py).
    """
    if statement.type != duckdb.StatementType.SELECT:  # single_select refused it already; never run anything else
        raise StatementRefused("a run executes only SELECT statements", code="statement_not_allowed")
    values = dict(params) if params else None
    return _seam.submit(cursor, statement.query, values, "arrow", _seam.DEFAULT_BATCH_SIZE).arrow_table()


class LockedEngine:
    """What a worker process runs: cached locked instances, one watchdog, and the run procedure."""

    def __init__(self, limits: EngineLimits, *, max_instances: int = DEFAULT_MAX_INSTANCES) -> None:
        self.limits = limits
        self.instances = InstanceCache(limits, max_instances=max_instances)
        self._watchdog = Watchdog()

    def run(self, spec: RunSpec) -> RunOutcome:
        """Run `spec` to an outcome; every failure becomes a status, a stable code and a generic message."""
        clock = RunClock()
        try:
            statement = checked_select(spec.sql)  # refuse before opening any input
            instance = self.instances.get(spec.instance_key, spec.inputs)
            table = run_locked(instance, statement, spec.params, timeout_ms=self.limits.timeout_ms,
                               watchdog=self._watchdog)
            clock.mark()
            return control_output(table, spec, clock)
        except Exception as exc:
            error = classify_failure(exc, timeout_ms=self.limits.timeout_ms)
            return failed_outcome(error, cpu_ms=clock.cpu_ms(), wall_ms=clock.wall_ms())

    def warm_up(self) -> None:
        """Open, lock and query an instance without inputs: pays DuckDB's first-connection cost up front."""
        instance = self.instances.get("__warm_up__", ())
        run_locked(instance, "SELECT 1", {}, timeout_ms=self.limits.timeout_ms, watchdog=self._watchdog)
        self.instances.close()

    def close(self) -> None:
        """Close every instance and stop the watchdog."""
        self.instances.close()
        self._watchdog.close()


def failed_outcome(error: ExecutorError, *, cpu_ms: float = 0.0, wall_ms: float = 0.0) -> RunOutcome:
    """The outcome of a run that ended with `error`: its status, code and client-safe message, no result."""
    return RunOutcome(
        status=error.status, result_path=None, result_sha256=None, result_rows=0, result_bytes=0,
        suppressed_cells=0, truncated_rows=0, cpu_ms=cpu_ms, wall_ms=wall_ms, error_code=error.code,
        error_message=error.message, internal_detail=error.detail,
    )




