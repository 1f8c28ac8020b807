"""Crash recovery: runs a crash interrupted (still `running` at start-up) are marked failed, metered, never charged."""

from __future__ import annotations

from sqlalchemy import select

from metering.events import EventKind, event_id
from sandbox.audit import AuditDraft, record
from sandbox.billing.convert import event_row
from sandbox.billing.usage import run_event
from sandbox.clock import Clock
from sandbox.config import Settings
from sandbox.executor import RunStatus
from sandbox.runs import set_status
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import Grant, Organization, Run, UsageEventRow

INTERRUPTED = "interrupted"


def recover_interrupted_runs(settings: Settings, clock: Clock) -> list[str]:
    """Mark every `running` run failed (code `interrupted`), with its usage event and an audit record.

    Called by `sluice serve` before it accepts requests, so no run of this server can be in flight. One
    `sluice serve` (with any number of worker processes) serves one control store.
    """
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_factory(engine).begin() as s:
            platform = s.scalar(select(Organization.id).where(Organization.is_platform.is_(True)))
            running = list(s.scalars(select(Run).where(Run.status == RunStatus.RUNNING.value)
                                     .order_by(Run.created_at, Run.id)))
            now = clock.now()
            for run in running:
                message = (f"the server stopped while this run was in progress; marked failed when `sluice serve` "
                           f"restarted at {now.isoformat()}")
                set_status(run, RunStatus.FAILED, now=now, error_code=INTERRUPTED, error_message=message)
                grant = s.get(Grant, run.grant_id)
                assert grant is not None and platform is not None
                if s.get(UsageEventRow, event_id(EventKind.RUN, run.id)) is None:
                    s.add(event_row(run_event(run, grant, platform, (), now)))
                draft = AuditDraft(action="run:recover", resource=f"run/{run.id}", via="system", decision="allow",
                                   rule="start-up recovery", reason=message, code=INTERRUPTED, status=200,
                                   resource_org_id=run.operator_org_id)
                draft.note(run_id=run.id, job_id=run.job_id, grant_id=run.grant_id, status=RunStatus.FAILED.value,
                           dataset_versions=dict(run.dataset_versions), sql_sha256=run.frozen_sql_sha256)
                record(s, draft, now)
            return [r.id for r in running]
    finally:
        engine.dispose()
