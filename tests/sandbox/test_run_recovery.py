"""Start-up recovery: a run left `running` by a crash is marked failed with a reason, metered, never charged."""

from __future__ import annotations

from billing_world import build_world
from sqlalchemy import select

from sandbox.billing.recovery import recover_interrupted_runs
from sandbox.executor import RunStatus
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditEvent, Job, Run, UsageEventRow
from sandbox.store.types import new_id


def test_an_interrupted_run_is_marked_failed_once_with_a_reason_and_billed_at_zero(api) -> None:  # type: ignore[no-untyped-def]
    w = build_world(api)
    w.set_platform_fees()
    engine = make_engine(api.settings.resolved_database_url)
    sessions = session_factory(engine)
    with sessions.begin() as s:
        job = s.get(Job, w.industry_job)
        assert job is not None
        run = Run(id=new_id("run"), job_id=job.id, grant_id=job.grant_id, operator_org_id=job.operator_org_id,
                  requested_by="prn_x", idempotency_key=None, params={"s": "7"}, status=RunStatus.RUNNING.value,
                  frozen_sql_sha256=job.frozen_sql_sha256 or "", dataset_versions=dict(job.dataset_versions),
                  created_at=api.clock.now())
        s.add(run)
    assert recover_interrupted_runs(api.settings, api.clock) == [run.id]
    assert recover_interrupted_runs(api.settings, api.clock) == []
    with sessions() as s:
        stored = s.get(Run, run.id)
        assert stored is not None and stored.status == "failed" and stored.error_code == "interrupted"
        assert "server stopped" in (stored.error_message or "") and stored.finished_at is not None
        [event] = s.scalars(select(UsageEventRow).where(UsageEventRow.source_id == run.id))
        assert event.outcome == "failed" and event.quantities["runs"] == 1
        audit = s.scalars(select(AuditEvent).where(AuditEvent.action == "run:recover")).one()
        assert audit.resource == f"run/{run.id}" and audit.code == "interrupted"
    engine.dispose()
    bill = w.bill(w.industry, "2026-06")
    [line] = [ln for ln in bill["lines"] if ln["meter"] == "runs"]
    assert (line["outcome"], line["amount"], line["quantity"]) == ("failed", "0.00", "1")
