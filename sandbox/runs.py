"""Runs: re-check the grant, prepare masked inputs once per grant, execute in the worker pool, record."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from opentelemetry.trace import NoOpTracer, Tracer
from sqlalchemy import select
from sqlalchemy.orm import Session

from policy.output import Dominance
from policy.sql_engines import DUCKDB, SPARK
from sandbox.catalogue.registry import CERTIFIED, get_version
from sandbox.engines import CheckedQuery, DuckDBEngine, Engine, run_checked
from sandbox.errors import Conflict, InvalidInput, Refused
from sandbox.executor import EngineLimits, InputTable, RunOutcome, RunStatus, WorkerPool
from sandbox.inputs import arrow_copy, prepare_input
from sandbox.jobs import GrantTable, JobState, check_grant_usable, grant_tables
from sandbox.populations import EntityIndex
from sandbox.regrade import check_regrade
from sandbox.run_inputs import AnyGrant, AnyJob
from sandbox.run_record import AnyRun, RunRecord
from sandbox.store.models import Run
from sandbox.store.types import new_id
from sandbox.tracing import phase_spans

# status -> statuses it may move to; every final status is final.
_MOVES: dict[RunStatus | None, frozenset[RunStatus]] = {
    None: frozenset({RunStatus.RUNNING}),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REFUSED, RunStatus.TIMED_OUT}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.REFUSED: frozenset(),
    RunStatus.TIMED_OUT: frozenset(),
}


def set_status(run: AnyRun, to: RunStatus, *, now: datetime | None = None, error_code: str | None = None,
               error_message: str | None = None) -> None:
    """The one function that changes a run's status; a final status also stamps `finished_at`."""
    current = RunStatus(run.status) if run.status else None
    if to not in _MOVES[current]:
        raise Conflict(f"run {run.id} is {run.status}; it cannot become {to.value}", code="invalid_run_transition",
                       status=run.status)
    run.status = to.value
    if to != RunStatus.RUNNING:
        run.error_code, run.error_message = error_code, error_message
        run.finished_at = now


def coerce_params(declared: dict[str, str], given: dict[str, Any]) -> dict[str, Any]:
    """Bind run parameters to their declared types; parameters are values, never SQL."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InvalidInput(f"undeclared parameters: {', '.join(unknown)}", code="invalid_parameter")
    out: dict[str, Any] = {}
    for name, typ in declared.items():
        if name not in given:
            raise InvalidInput(f"parameter ${name} ({typ}) is missing", code="invalid_parameter", parameter=name)
        value = given[name]
        base = typ.split("(")[0]
        try:
            if value is None:
                out[name] = None
            elif base == "VARCHAR":
                out[name] = str(value)
            elif base in ("INTEGER", "BIGINT"):
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                out[name] = int(value)
            elif base == "DOUBLE":
                out[name] = float(value)
            elif base == "DECIMAL":
                out[name] = Decimal(str(value))
            elif base == "DATE":
                out[name] = date.fromisoformat(str(value))
            elif base == "TIMESTAMP":
                out[name] = datetime.fromisoformat(str(value))
            elif base == "BOOLEAN":
                if not isinstance(value, bool):
                    raise ValueError
                out[name] = value
        except (ValueError, TypeError, InvalidOperation):
            raise InvalidInput(f"parameter ${name} is not a valid {typ}", code="invalid_parameter",
                               parameter=name) from None
    return out


@dataclass
class RunService:
    """The run path's long-lived parts: the worker pool, prepared inputs and the masking secret."""

    home: Path
    pool_size: int
    limits: EngineLimits
    shared_pool: WorkerPool | None = None
    _pool: WorkerPool | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _prepare_locks: dict[tuple[str, str, int], threading.Lock] = field(default_factory=dict)
    _prepared: dict[tuple[str, str, int], tuple[InputTable, InputTable]] = field(default_factory=dict)
    _secret: bytes | None = None
    tables: dict[tuple[str, tuple[tuple[str, int], ...]], dict[str, GrantTable]] = field(default_factory=dict)
    regrades: dict[tuple[str, str, int, int], str | None] = field(default_factory=dict)
    job_datasets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # job id -> its datasets (immutable)
    dominance: Dominance = field(default_factory=Dominance)
    spark_remote: str | None = None
    spark_master: str = "local[2]"
    _entities: EntityIndex | None = None
    _duckdb: DuckDBEngine | None = None
    _spark: Engine | None = None
    instance: str | None = None  # this process's server instance (sandbox/server_lease.py), stamped on its runs

    @property
    def entities(self) -> EntityIndex:
        """The populations' dense entity indexes (SLUICE_HOME/populations)."""
        if self._entities is None:
            self._entities = EntityIndex(self.home / "populations")
        return self._entities

    def pool(self) -> WorkerPool:
        """The worker pool, started on first use."""
        if self.shared_pool is not None:
            self.shared_pool.start()
            return self.shared_pool
        pool = self._pool
        if pool is not None:  # started: no lock on the run path
            return pool
        with self._lock:
            if self._pool is None:
                pool = WorkerPool(self.pool_size, self.limits, work_dir=self.home / "workers")
                pool.start()
                self._pool = pool
            return self._pool

    def engine(self, name: str) -> Engine:
        """The engine a grant chose: DuckDB's worker pool, or Spark (started on first use)."""
        if name == DUCKDB or not name:
            duck = self._duckdb
            if duck is None:
                duck = self._duckdb = DuckDBEngine(self.pool)
            return duck
        if name != SPARK:
            raise Conflict(f"unknown engine {name!r}", code="unknown_engine", engine=name)
        with self._lock:
            if self._spark is None:
                from sandbox.engines.spark import SparkEngine

                self._spark = SparkEngine(self.limits, remote=self.spark_remote, master=self.spark_master,
                                          work_dir=self.home / "spark")
            return self._spark

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            spark, self._spark = self._spark, None
        if spark is not None:
            spark.close()

    def forget_version(self, dataset_id: str, version: int) -> None:
        """Drop cached coverage and prepared inputs of a dataset version (its registration was revoked)."""
        with self._lock:
            for key in [k for k, tables in self.tables.items() if (dataset_id, version) in k[1]]:
                self.tables.pop(key, None)
            for pkey in [k for k in self._prepared if k[1:] == (dataset_id, version)]:
                self._prepared.pop(pkey, None)

    def grant_key(self, grant_id: str) -> bytes:
        """The HMAC key for `hash` masks, scoped to one grant (derived from a secret in SLUICE_HOME/keys)."""
        secret = self._secret
        if secret is None:
            with self._lock:
                if self._secret is None:
                    self._secret = _mask_secret(self.home / "keys" / "mask.secret")
                secret = self._secret
        return hmac.new(secret, f"sluice/mask/{grant_id}".encode(), hashlib.sha256).digest()

    def ready(self, grant: AnyGrant, tables: Mapping[str, GrantTable]) -> bool:
        """Whether every input of `tables` is already prepared for `grant` in this process."""
        prepared = self._prepared
        return all((grant.id, t.version.dataset_id, t.version.version) in prepared for t in tables.values())

    def prepared(self, grant: AnyGrant, table: GrantTable) -> tuple[InputTable, InputTable]:
        """The grant's masked, cut-down copy of a dataset version as (Arrow IPC for the engine, Parquet).

        Prepared once per grant and version, then reused: masks are computed here, never in SQL. Each key has
        its own lock, so preparing a large input never holds up runs on other grants or versions.
        """
        key = (grant.id, table.version.dataset_id, table.version.version)
        cached = self._prepared.get(key)
        if cached is not None:
            return cached
        with self._lock:
            lock = self._prepare_locks.setdefault(key, threading.Lock())
        with lock:
            cached = self._prepared.get(key)
            if cached is not None:
                return cached
            folder = self.home / "prepared" / grant.id / table.version.dataset_id
            parquet = folder / f"v{table.version.version}.e.parquet"  # `.e`: with the entity index column
            arrow = folder / f"v{table.version.version}.e.arrow"
            population = table.policy.entity_population
            entity = None
            if table.policy.entity_column is not None and population is not None:
                entity = (table.policy.entity_column,
                          lambda ids: self.entities.indexes(population, ids))
            if not parquet.exists():
                prepare_input(self.home / table.version.storage_path, parquet, table.policy.columns,
                              grant_key=self.grant_key(grant.id), entity=entity)
            if not arrow.exists():
                arrow_copy(parquet, arrow)
            entry = (InputTable(name=table.policy.name, path=arrow), InputTable(name=table.policy.name, path=parquet))
            self._prepared[key] = entry
            return entry


def _mask_secret(path: Path) -> bytes:
    """The mask secret at `path`, created once: the first writer wins, across threads and processes.

    A fresh secret is written to a temporary file private to this process and thread, then hard-linked to
    `path`, which fails if another writer got there first; either way every caller reads the one file, so all
    workers and API processes mask with the same key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another writer's secret is the one
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


def find_idempotent(session: Session, job: AnyJob, requested_by: str, key: str | None) -> Run | None:
    """The run an earlier request with the same Idempotency-Key created, if any."""
    if not key:
        return None
    return session.scalar(select(Run).where(Run.job_id == job.id, Run.requested_by == requested_by,
                                            Run.idempotency_key == key))


def new_run(job: AnyJob, *, requested_by: str, idempotency_key: str | None, params: dict[str, Any],
            now: datetime, instance: str | None = None) -> RunRecord:
    """A run record for `job`, before execution, owned by server `instance` (see sandbox/server_lease.py)."""
    return RunRecord(id=new_id("run"), job_id=job.id, grant_id=job.grant_id, operator_org_id=job.operator_org_id,
                     requested_by=requested_by, idempotency_key=idempotency_key,
                     params={k: (v.isoformat() if isinstance(v, date | datetime) else str(v) if isinstance(v, Decimal)
                                 else v) for k, v in params.items()},
                     status=RunStatus.RUNNING.value, frozen_sql_sha256=job.frozen_sql_sha256 or "",
                     dataset_versions=dict(job.dataset_versions), created_at=now, server_instance=instance)


def check_runnable(session: Session, job: AnyJob, grant: AnyGrant, now: datetime,
                   service: RunService | None = None, latest: Mapping[str, int] | None = None
                   ) -> dict[str, GrantTable]:
    """Everything checked again at run time: job approved, grant usable, pinned versions still covered.

    Coverage of a pinned version depends only on immutable facts (the grant's scope and lists, the version's
    grade), so `service` may cache it; the grant's state and validity are checked on every run. `latest`: the
    latest certified versions of the job's datasets when they were read with the job (see `check_regrade`).
    """
    if JobState(job.state) == JobState.STOPPED:
        raise Refused(f"job {job.id} was stopped: {job.stopped_reason}", code="job_stopped", state=job.state,
                      reason=job.stopped_reason)
    if JobState(job.state) != JobState.APPROVED or not job.frozen_sql:
        raise Conflict(f"job {job.id} is {job.state}; only approved jobs run", code="job_not_approved",
                       state=job.state)
    check_grant_usable(grant, now)
    key = (grant.id, tuple(sorted(job.dataset_versions.items())))
    cached = service.tables.get(key) if service is not None else None
    tables = cached if cached is not None else grant_tables(session, grant, pinned=job.dataset_versions)
    if service is not None and cached is None:
        for table in tables.values():  # cached across requests: a later rollback in this session must not expire
            if table.version in session:  # the (immutable) versions it holds, so take them out of the session
                session.expunge(table.version)
        service.tables[key] = tables
    missing = sorted(set(job.dataset_versions) - set(tables))
    if missing:
        for name in missing:
            pinned = get_version(session, name, job.dataset_versions[name])
            if pinned.registration_state != CERTIFIED:
                raise Refused(f"{name} v{pinned.version} is {pinned.registration_state}, not certified: "
                              f"{pinned.state_reason}", code="dataset_version_not_certified", dataset=name,
                              version=pinned.version, state=pinned.registration_state)
        raise Refused(f"the grant no longer covers {', '.join(missing)}", code="dataset_not_covered",
                      datasets=missing)
    if job.analysis.get("entity_tables") and not job.analysis.get("release"):
        raise Refused("this job was analysed before the release audit existed; submit it again",
                      code="job_reanalysis_required", job_id=job.id)
    CheckedQuery.of_analysis(job.frozen_sql or "", job.analysis).sql_for(grant.engine or DUCKDB)  # before any input
    check_regrade(session, grant, {name: t.version for name, t in tables.items()},
                  job.analysis.get("columns_read") or {}, service.regrades if service is not None else {},
                  latest=latest)
    return tables


def execute(service: RunService, run: RunRecord, job: AnyJob, grant: AnyGrant, tables: dict[str, GrantTable],
            params: dict[str, Any], now_fn: Any, tracer: Tracer | None = None) -> RunOutcome:
    """Run the frozen SQL on the grant's prepared inputs and fill in the run's record.

    With a tracer, the run's phases become child spans of the current span: `sluice.run.queue`, `.execute`,
    `.output_control` and `.write` (timed in the pool and the worker) and `.meter` (what the run is charged).
    """
    tracer = tracer or NoOpTracer()
    prepared = [service.prepared(grant, tables[name]) for name in sorted(tables)]
    fingerprint = hashlib.sha256("|".join(f"{i.name}:{i.path}" for i, _ in prepared).encode()).hexdigest()[:16]
    engine = service.engine(grant.engine or DUCKDB)
    ran = run_checked(engine, CheckedQuery.of_analysis(job.frozen_sql or "", job.analysis),
                      instance_key=f"{grant.id}:{fingerprint}", inputs=prepared, params=params,
                      k=grant.min_group_size, max_rows=grant.max_result_rows,
                      result_path=service.home / "results" / f"{run.id}.parquet", dominance=service.dominance)
    outcome, stats = ran.outcome, ran.usage
    phase_spans(tracer, outcome.phases, prefix="sluice.run.")
    with tracer.start_as_current_span("sluice.run.meter") as span:
        span.set_attribute("sluice.engine", engine.name)
        span.set_attribute("sluice.rows_scanned", stats.rows)
        span.set_attribute("sluice.bytes_scanned", stats.bytes)
    set_status(run, RunStatus(outcome.status), now=now_fn(), error_code=outcome.error_code,
               error_message=outcome.error_message)
    run.rows_scanned, run.bytes_scanned = stats.rows, stats.bytes
    run.result_rows, run.result_bytes = outcome.result_rows, outcome.result_bytes
    run.suppressed_cells, run.truncated_rows = outcome.suppressed_cells, outcome.truncated_rows
    run.suppression = dict(outcome.suppression)
    run.cpu_ms, run.wall_ms = outcome.cpu_ms, outcome.wall_ms
    run.result_path = str(outcome.result_path.relative_to(service.home)) if outcome.result_path else None
    run.result_sha256 = outcome.result_sha256
    return outcome


def params_digest(params: dict[str, Any]) -> str:
    """SHA-256 of a run's parameters as canonical JSON: the audit record keeps this, never the values."""
    import json

    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":"), default=str,
                                     ensure_ascii=False).encode("utf-8")).hexdigest()


def run_out(run: AnyRun) -> dict[str, Any]:
    """A run as the API shows it."""
    return {
        "id": run.id, "job_id": run.job_id, "grant_id": run.grant_id, "operator_org_id": run.operator_org_id,
        "requested_by": run.requested_by, "idempotency_key": run.idempotency_key, "params": run.params,
        "status": run.status, "frozen_sql_sha256": run.frozen_sql_sha256, "dataset_versions": run.dataset_versions,
        "rows_scanned": run.rows_scanned, "bytes_scanned": run.bytes_scanned, "result_rows": run.result_rows,
        "result_bytes": run.result_bytes, "suppressed_cells": run.suppressed_cells,
        "suppression": dict(run.suppression or {}),
        "truncated_rows": run.truncated_rows, "cpu_ms": round(run.cpu_ms, 3), "wall_ms": round(run.wall_ms, 3),
        "error_code": run.error_code, "error_message": run.error_message, "result_sha256": run.result_sha256,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
