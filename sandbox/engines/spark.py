"""The Spark engine (optional extra `sluice[spark]`): Spark Connect when SLUICE_SPARK_REMOTE is set, else local mode.

Spark's settings alone cannot sandbox SQL (docs/engines.md, shared notes): what holds is that Spark only ever sees
the SQL regenerated from the checked tree and transpiled at approval, in a new session per run whose only tables
are temporary views of the grant's prepared (granted, masked) inputs. The hardening settings are defence in depth.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from policy.sql_engines import SPARK
from sandbox.engines.spark_errors import classify_spark_failure
from sandbox.executor.control import RunClock, control_output
from sandbox.executor.engine import failed_outcome
from sandbox.executor.errors import ExecutorError, InputUnavailable, QueryTimedOut, StatementRefused
from sandbox.executor.lockdown import checked_name
from sandbox.executor.types import EngineLimits, InputTable, RunOutcome, RunSpec

CANCEL_REPEAT_S: Final = 0.25
# Static settings: fixed when the JVM starts (local mode); a Connect server must be started with them.
STATIC_HARDENING: Final[Mapping[str, str]] = {
    "spark.sql.reflect.allowList": "^$",  # no reflect/java_method
    "spark.ui.enabled": "false",
    "spark.sql.catalogImplementation": "in-memory",
}
# pyspark's loggers for a failing query's context (silence_query_context_logs).
QUERY_CONTEXT_LOGGERS: Final = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")
# Session settings: set on every new session, before its views are created.
SESSION_HARDENING: Final[Mapping[str, str]] = {
    "spark.sql.runSQLOnFiles": "false",  # no parquet.`/path`
    "spark.sql.variable.substitute": "false",  # no ${env:...}
    "spark.sql.scripting.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
}


class SparkEngine:
    """Runs checked queries on Spark: one root session per process, a new session per run."""

    name = SPARK
    input_format: Literal["arrow", "parquet"] = "parquet"  # executors read the prepared Parquet by path

    def __init__(self, limits: EngineLimits, *, remote: str | None, master: str, work_dir: Path) -> None:
        self.limits = limits
        self.remote = remote
        self.master = master
        self.work_dir = Path(work_dir)
        self._root: Any = None
        self._owned = False  # whether close() stops it: a local Spark already running in this process is shared
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start (or connect to) Spark; raises ExecutorError `engine_unavailable` when it cannot."""
        self._session()

    def _session(self) -> Any:
        root = self._root
        if root is not None and not _stopped(root):
            return root
        with self._lock:
            if self._root is None or _stopped(self._root):  # a shared local Spark stopped elsewhere is rebuilt
                self._root, self._owned = _build_root(self.remote, self.master, self.work_dir)
            return self._root

    def run(self, spec: RunSpec) -> RunOutcome:
        """Run `spec` through output control; every failure becomes a status, a stable code and a generic message."""
        clock = RunClock()
        try:
            table = self.execute(spec)
            clock.mark()
            return control_output(table, spec, clock)
        except Exception as exc:
            return failed_outcome(classify_spark_failure(exc, timeout_ms=self.limits.timeout_ms),
                                  cpu_ms=clock.cpu_ms(), wall_ms=clock.wall_ms())

    def execute(self, spec: RunSpec) -> pa.Table:
        """The Arrow result of `spec`'s Spark SQL in a new session over temp views of its inputs (raises)."""
        single_spark_query(spec.sql)
        session = self._session().newSession()
        views: list[str] = []
        try:
            for key, value in SESSION_HARDENING.items():
                session.conf.set(key, value)
            for table in spec.inputs:
                views.append(_register(session, table))
            return normalise(self._collect(session, spec.sql, spec.params))
        finally:
            if self.remote:  # a Connect session lives on the server until released
                with contextlib.suppress(Exception):
                    session.stop()
            else:  # stopping a local session would stop Spark itself; its views go with it
                for name in views:
                    with contextlib.suppress(Exception):
                        session.catalog.dropTempView(name)

    def _collect(self, session: Any, sql: str, params: Mapping[str, Any]) -> pa.Table:
        """Execute under the run's time limit: its jobs carry a tag that a timer cancels.

        Locally the tag is a SparkContext job tag (a thread-local property that the threads Spark starts for the
        Arrow collection inherit); over Connect it is the session's operation tag.
        """
        tag = f"sluice-{uuid.uuid4().hex}"
        fired = threading.Event()
        context = None if self.remote else session.sparkContext
        if context is not None:
            context.addJobTag(tag)
            context.setInterruptOnCancel(True)
        else:
            session.addTag(tag)

        def cancel() -> None:
            if context is not None:
                context.cancelJobsWithTag(tag)
            else:
                session.interruptTag(tag)

        def watchdog() -> None:  # a cancel reaches running jobs only: repeat it until the run gives up
            if done.wait(self.limits.timeout_ms / 1000.0):
                return
            fired.set()
            while not done.is_set():
                with contextlib.suppress(Exception):
                    cancel()
                done.wait(CANCEL_REPEAT_S)

        done = threading.Event()
        timer = threading.Thread(target=watchdog, name=f"sluice-spark-watchdog-{tag[-8:]}", daemon=True)
        timer.start()
        try:
            frame = session.sql(sql, args=dict(params)) if params else session.sql(sql)
            table: pa.Table = frame.toArrow()
        except Exception:
            if fired.is_set():
                raise QueryTimedOut(f"the query ran past the time limit of {self.limits.timeout_ms} ms and was "
                                    "stopped", detail="spark jobs cancelled") from None
            raise
        finally:
            done.set()
            if context is not None:
                context.removeJobTag(tag)
            else:
                session.removeTag(tag)
        return table

    def close(self) -> None:
        """Stop the local Spark (or close the Connect client)."""
        with self._lock:
            root, self._root = self._root, None
        if root is not None and self._owned:
            root.stop()


def _stopped(root: Any) -> bool:
    """Whether a local root session's SparkContext has been stopped (Connect sessions have none here)."""
    context = getattr(root, "_sc", None)
    return context is not None and getattr(context, "_jsc", None) is None


def single_spark_query(sql: str) -> None:
    """Defence in depth: the Spark SQL a run executes parses as exactly one query (no SET, no DDL)."""
    try:
        statements = sqlglot.parse(sql, dialect=SPARK)
    except SqlglotError:
        raise StatementRefused("the query could not be parsed", code="parser_error") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise StatementRefused("a run executes exactly one query", code="statement_not_allowed")


def _register(session: Any, table: InputTable) -> str:
    """A temp view of one prepared input (its columns are exactly the granted, masked ones) in `session`."""
    name = checked_name(table.name)
    if not table.path.exists():
        raise InputUnavailable(f"input {table.name} could not be opened", detail="missing prepared file")
    session.read.parquet(str(table.path)).createTempView(name)
    return name


def normalise(table: pa.Table) -> pa.Table:
    """Spark's Arrow result in the types output control and clients expect from DuckDB.

    Timestamps come back in UTC with a zone; DuckDB's TIMESTAMP has none. Everything else (decimal precision,
    64-bit entity indexes in the helper lists) output control reads as it is.
    """
    fields = []
    changed = False
    for field in table.schema:
        dtype = field.type
        if pa.types.is_timestamp(dtype) and dtype.tz is not None:
            fields.append(field.with_type(pa.timestamp(dtype.unit)))
            changed = True
        else:
            fields.append(field)
    return table.cast(pa.schema(fields)) if changed else table


class _DropAll(logging.Filter):
    """Drops every record: a filter on the logger itself outlives a configuration that re-enables it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


def silence_query_context_logs() -> None:
    """Silence pyspark's query-context loggers for good: a failing query's message there can quote data values.

    pyspark logs every failing query with a context through these two loggers, as
    `logger.exception(message, errorClass=...)`: the keyword arguments only a PySparkLogger accepts. They used to be
    created here with logging.getLogger (plain Loggers) and `disabled`. Any logging configuration applied later in
    the process with `disable_existing_loggers=False` (uvicorn.Config's default does that, as does
    logging.config.fileConfig/dictConfig so asked) sets `disabled = False` on every existing logger, and from then
    on each failing Spark query raised TypeError in the plain Logger: an internal_error instead of its own code.
    So they are created as PySparkLoggers, and silenced by a level above CRITICAL and a drop-all filter, which such
    a configuration leaves alone; `disabled` is kept as well.
    """
    from pyspark.logger import PySparkLogger

    for name in QUERY_CONTEXT_LOGGERS:
        logger = PySparkLogger.getLogger(name)
        logger.setLevel(logging.CRITICAL + 1)
        if not any(isinstance(f, _DropAll) for f in logger.filters):
            logger.addFilter(_DropAll())
        logger.disabled = True


def _build_root(remote: str | None, master: str, work_dir: Path) -> tuple[Any, bool]:
    """The process's root Spark session, hardened, and whether this call started it.

    Raises ExecutorError `engine_unavailable` when pyspark is missing or Spark does not start. Spark's own
    error logs quote data values (a failing CAST names its input), so they are silenced: runs report a code.
    """
    try:
        from pyspark import SparkContext
        from pyspark.sql import SparkSession
    except ImportError:
        raise ExecutorError("the spark engine is not installed here (pip install 'sluice[spark]')",
                            code="engine_unavailable", detail="pyspark not importable") from None
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    silence_query_context_logs()
    try:
        if remote:
            return SparkSession.builder.remote(remote).create(), True  # getOrCreate would reuse any session
        running = SparkContext._active_spark_context is not None
        work_dir.mkdir(parents=True, exist_ok=True)
        builder = SparkSession.builder.master(master).appName("sluice")
        settings = {**STATIC_HARDENING, **SESSION_HARDENING,
                    "spark.sql.warehouse.dir": str(work_dir / "warehouse"),
                    "spark.local.dir": str(work_dir / "tmp"),
                    "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                    "spark.ui.showConsoleProgress": "false",
                    "spark.sql.shuffle.partitions": "4", "spark.sql.adaptive.enabled": "true"}
        for key, value in settings.items():
            builder = builder.config(key, value)
        root = builder.getOrCreate()
        root.sparkContext.setLogLevel("OFF")
        return root, not running
    except Exception as exc:
        raise ExecutorError("the spark engine could not be started", code="engine_unavailable",
                            detail=type(exc).__name__) from None
