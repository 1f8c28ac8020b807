"""The governed run path, shared by job runs and product calls, so output control, the release audit and metering
can never diverge between them:

check (job approved, grant usable, versions covered) -> `metering.start_run_async` (the start record, committed
while the run executes)
-> execute in the locked worker (k, dominance, row limits) -> the release audit under the population locks
(`state.releases.releasing`) -> `metering.finish_run` (the run's usage event, plus what the caller adds, e.g. a
product call's record and its product-fee event) -> one group commit with the audit record.

A run refused at its checks is committed with its (never charged) usage event, what the caller adds, and the
audit record of the refusal, in one transaction; the refusal is then raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio.to_thread
from sqlalchemy.orm import Session

from metering.events import DatasetUse
from sandbox import runs
from sandbox.app.deps import AppState, Guard
from sandbox.errors import Refused
from sandbox.executor import RunStatus
from sandbox.jobs import GrantTable
from sandbox.store.models import Grant, Job, Run

RefusedRows = Callable[[Run, Refused], list[Any]]
"""Rows to commit with a run refused at its checks (given the run, already marked refused, and the refusal)."""
FinishedRows = Callable[[Run, Sequence[DatasetUse]], list[Any]]
"""Rows to commit with a finished run (given the run's final record and the rows it read per dataset)."""


@dataclass(frozen=True)
class Governed:
    """What the governed path did: `run` finished and committed, or `earlier` when a concurrent request with the
    same Idempotency-Key started first (this run was then discarded: no record, no usage)."""

    run: Run
    earlier: Run | None = None


async def execute_governed(state: AppState, guard: Guard, session: Session, job: Job, grant: Grant, run: Run,
                           params: dict[str, Any], now: datetime, *, refused: RefusedRows | None = None,
                           finished: FinishedRows | None = None, own_writes: bool = False) -> Governed:
    """Run `run` of `job` through the governed path and commit it with its usage and audit record.

    A coroutine end to end on the event loop: the start record and the final commit join the recorder's group
    commit (`Recorder.submit`, one thread hop per batch, not per run) and the worker's answer is awaited on its
    pipe. What may block for long runs in a thread: preparing a grant's inputs the first time, a Spark run, and a
    result over entity data, whose release audit holds its population locks until the commit. `own_writes`: the
    caller wrote to `session` (e.g. a subscription period), so the final commit goes through that session.
    """
    tracer = state.tracer
    service = state.runs
    try:
        with tracer.start_as_current_span("sluice.run.check"):
            tables = runs.check_runnable(session, job, grant, now, service)
    except Refused as exc:
        runs.set_status(run, RunStatus.REFUSED, now=now, error_code=exc.code, error_message=exc.message)
        exc.context["run_id"] = run.id
        usage = state.metering.refused_run(session, run, grant, now, guard.trace_id)  # metered, never charged
        extra = refused(run, exc) if refused is not None else []
        with tracer.start_as_current_span("sluice.run.audit"):
            # the refused run, its usage, the caller's rows and the refusal's audit record, together
            raise guard.refuse_with(session, exc, [run, usage, *extra]) from None
    started = state.metering.start_run_async(session, run, job)  # crash safety: committed meanwhile
    try:
        outcome = await runs.execute_async(service, run, job, grant, tables, params, state.clock.now, tracer=tracer)
    except BaseException:
        with contextlib.suppress(BaseException):  # settle the start, so a rollback can mark the run failed
            await started.wait()
        raise
    with tracer.start_as_current_span("sluice.run.start"):
        earlier = await started.wait()
    if earlier is not None:  # a concurrent request with the same Idempotency-Key won
        guard.note(run_id=earlier.id, idempotent_replay=True)
        return Governed(run, earlier)
    if outcome.pending is None and not own_writes:  # no release audit to hold locks for: stay on the loop
        with state.releases.releasing(run, job, grant, outcome, now) as ledger:
            finish = _finish(state, guard, session, job, grant, run, tables, finished)
            with tracer.start_as_current_span("sluice.run.audit"):
                await guard.commit_with_async([*finish, *ledger], status=201)
        return Governed(run)

    def release_and_commit() -> None:
        with state.releases.releasing(run, job, grant, outcome, now) as ledger:  # audit, under the population lock
            finish = _finish(state, guard, session, job, grant, run, tables, finished)
            with tracer.start_as_current_span("sluice.run.audit"):
                # run record, usage events, the caller's rows, ledger rows and audit row, committed together
                guard.commit_with(session, [*finish, *ledger], status=201)

    await anyio.to_thread.run_sync(release_and_commit)  # anyio carries the context (the trace) into the thread
    return Governed(run)


def _finish(state: AppState, guard: Guard, session: Session, job: Job, grant: Grant, run: Run,
            tables: dict[str, GrantTable], finished: FinishedRows | None) -> list[Any]:
    """Note the outcome on the audit record; the run's final record, its usage event and the caller's rows."""
    guard.note(run_id=run.id, job_id=job.id, status=run.status, sql_sha256=job.frozen_sql_sha256,
               dataset_versions=job.dataset_versions, rows_scanned=run.rows_scanned,
               result_rows=run.result_rows, suppressed_cells=run.suppressed_cells,
               suppression=run.suppression, truncated_rows=run.truncated_rows,
               result_sha256=run.result_sha256, error_code=run.error_code)
    also = None if finished is None else (lambda datasets: finished(run, datasets))
    return state.metering.finish_run(session, run, grant, tables, job, state.runs, state.clock.now(),
                                     guard.trace_id, also=also)

