"""Crash recovery: runs a crash interrupted (still `running` at start-up) are marked failed, metered, never charged."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from metering.events import EventKind, event_id
from sandbox.audit import AuditDraft, record
from sandbox.billing.convert import event_row
from sandbox.billing.usage import run_event
from sandbox.clock import Clock
from sandbox.config import Settings
from sandbox.executor import RunStatus
from sandbox.runs import set_status
from sandbox.server_lease import claim_if_gone
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import Grant, Organization, Run, UsageEventRow

INTERRUPTED = "interrupted"


def recover_interrupted_runs(settings: Settings, clock: Clock) -> list[str]:
    """Mark failed (code `interrupted`), with a usage event and an audit record, every `running` run whose server
    instance is gone; runs of live instances (other `sluice serve` processes on the same store) are left alone.

    Safe to run from any number of processes at once: an instance is claimed by one transaction at a time
    (sandbox/server_lease.py), and each run moves from `running` by a conditional UPDATE, so it is recovered,
    metered and audited exactly once.
    """
    engine = make_engine(settings.resolved_database_url)
    recovered: list[str] = []
    try:
        sessions = session_factory(engine)
        with sessions() as s:
            instances = sorted({i for (i,) in s.execute(select(Run.server_instance).distinct()
                                                       .where(Run.status == RunStatus.RUNNING.value))},
                               key=lambda i: i or "")
        for instance in instances:
            with sessions.begin() as s:
                if not claim_if_gone(s, settings.resolved_home, instance):
                    continue
                recovered += _recover_instance(s, instance, clock.now())
        return recovered
    finally:
        engine.dispose()


def _recover_instance(s: Session, instance: str | None, now: datetime) -> list[str]:
    platform = s.scalar(select(Organization.id).where(Organization.is_platform.is_(True)))
    owner = Run.server_instance.is_(None) if instance is None else Run.server_instance == instance
    running = list(s.scalars(select(Run).where(Run.status == RunStatus.RUNNING.value, owner)
                             .order_by(Run.created_at, Run.id)))
    done = []
    for run in running:
        message = (f"the server stopped while this run was in progress; marked failed when `sluice serve` "
                   f"restarted at {now.isoformat()}")
        s.expunge(run)  # changed below by one conditional UPDATE, never by a flush of this object
        set_status(run, RunStatus.FAILED, now=now, error_code=INTERRUPTED, error_message=message)
        moved = s.execute(update(Run).where(Run.id == run.id, Run.status == RunStatus.RUNNING.value)
                          .values(status=run.status, error_code=run.error_code, error_message=run.error_message,
                                  finished_at=run.finished_at).execution_options(synchronize_session=False))
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            continue  # it finished (or was recovered) meanwhile: left as it is
        grant = s.get(Grant, run.grant_id)
        assert grant is not None and platform is not None
        if s.get(UsageEventRow, event_id(EventKind.RUN, run.id)) is None:
            s.add(event_row(run_event(run, grant, platform, (), now)))
        draft = AuditDraft(action="run:recover", resource=f"run/{run.id}", via="system", decision="allow",
                           rule="start-up recovery", reason=message, code=INTERRUPTED, status=200,
                           resource_org_id=run.operator_org_id)
        draft.note(run_id=run.id, job_id=run.job_id, grant_id=run.grant_id, status=RunStatus.FAILED.value,
                   dataset_versions=dict(run.dataset_versions), sql_sha256=run.frozen_sql_sha256,
                   server_instance=instance)
        record(s, draft, now)
        done.append(run.id)
    return done
