"""The governed run path, shared by job runs and product calls, so output control, the release audit and metering
can never diverge between them:

check (job approved, grant usable, versions covered) -> `metering.start_run` (the start record, committed while
the run waits for its worker or runs in it) -> execute in the locked worker (k, dominance, row limits) -> the release
audit under the population locks (`state.releases.releasing`) -> `metering.finish_run` (the run's usage event,
plus what the caller adds, e.g. a product call's record and its product-fee event) -> one group commit with the
audit record.

A run refused at its checks is committed with its (never charged) usage event, what the caller adds, and the
audit record of the refusal, in one transaction; the refusal is then raised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from metering.events import DatasetUse
from policy.sql_engines import DUCKDB
from sandbox import runs
from sandbox.app.deps import AppState, Guard
from sandbox.billing.usage import run_insert
from sandbox.errors import Refused
from sandbox.executor import RunStatus
from sandbox.executor.pool import while_running
from sandbox.run_inputs import AnyGrant, AnyJob
from sandbox.run_record import RunRecord
from sandbox.store.models import Run

RefusedRows = Callable[[RunRecord, Refused], list[Any]]
"""Rows to commit with a run refused at its checks (given the run, already marked refused, and the refusal)."""
FinishedRows = Callable[[RunRecord, Sequence[DatasetUse]], list[Any]]
"""Rows to commit with a finished run (given the run's final record and the rows it read per dataset)."""


@dataclass(frozen=True)
class Governed:
    """What the governed path did: `run` finished and committed, or `earlier` when a concurrent request with the
    same Idempotency-Key started first (this run was then discarded: no record, no usage)."""

    run: RunRecord
    earlier: Run | None = None


def execute_governed(state: AppState, guard: Guard, session: Session, job: AnyJob, grant: AnyGrant, run: RunRecord,
                     params: dict[str, Any], now: datetime, *, refused: RefusedRows | None = None,
                     finished: FinishedRows | None = None, latest: Mapping[str, int] | None = None) -> Governed:
    """Run `run` of `job` through the governed path and commit it with its usage and audit record (`latest`: the
    latest certified versions of its datasets, if they were read with the job)."""
    tracer = state.tracer
    service = state.runs
    try:
        with tracer.start_as_current_span("sluice.run.check"):
            tables = runs.check_runnable(session, job, grant, now, service, latest=latest)
    except Refused as exc:
        runs.set_status(run, RunStatus.REFUSED, now=now, error_code=exc.code, error_message=exc.message)
        exc.context["run_id"] = run.id
        usage = state.metering.refused_run(session, run, grant, now, guard.trace_id)  # metered, never charged
        extra = refused(run, exc) if refused is not None else []
        with tracer.start_as_current_span("sluice.run.audit"):
            # the refused run, its usage, the caller's rows and the refusal's audit record, together
            raise guard.refuse_with(session, exc, [run_insert(run), usage, *extra]) from None
    # crash safety: the start is recorded while the run executes; with the worker pool's engine, by this thread
    # if it waits for a busy worker (no hand-off to another thread), else by a run-start thread from dispatch on
    started = state.metering.start_run(session, run, job, meanwhile=(grant.engine or DUCKDB) == DUCKDB)
    if session.in_transaction() and not (session.new or session.dirty or session.deleted):
        session.commit()  # end the checks' read transaction: no pooled connection is held while the engine runs
    if not service.ready(grant, tables):
        started.in_background()  # its inputs are prepared first (maybe at length): record the start meanwhile
    with while_running(started.record, started.in_background):
        outcome = runs.execute(service, run, job, grant, tables, params, state.clock.now, tracer=tracer)
    with tracer.start_as_current_span("sluice.run.start"):
        earlier = started.wait()
    if earlier is not None:  # a concurrent request with the same Idempotency-Key won
        guard.note(run_id=earlier.id, idempotent_replay=True)
        return Governed(run, earlier)
    with state.releases.releasing(run, job, grant, outcome, now) as ledger:  # audit, under the population lock
        guard.note(run_id=run.id, job_id=job.id, status=outcome.status, sql_sha256=job.frozen_sql_sha256,
                   dataset_versions=job.dataset_versions, rows_scanned=run.rows_scanned,
                   result_rows=run.result_rows, suppressed_cells=run.suppressed_cells,
                   suppression=run.suppression, truncated_rows=run.truncated_rows,
                   result_sha256=run.result_sha256, error_code=outcome.error_code)
        also = None if finished is None else (lambda datasets: finished(run, datasets))
        finish = state.metering.finish_run(session, run, grant, tables, job, service, state.clock.now(),
                                           guard.trace_id, also=also)
        with tracer.start_as_current_span("sluice.run.audit"):
            # run record, usage events, the caller's rows, ledger rows and audit row, committed together
            guard.commit_with(session, [*finish, *ledger], status=201)
    return Governed(run)
