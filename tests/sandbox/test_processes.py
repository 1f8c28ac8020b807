"""Several API processes on one store: SQLite refuses them, recovery leaves live servers' runs alone, and jobs and
runs change state by conditional UPDATE (a second, concurrent change fails instead of overwriting the first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from billing_world import build_world
from sluice_api import Api
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from bench.server import Server
from sandbox import jobs
from sandbox.billing.recovery import recover_interrupted_runs
from sandbox.billing.usage import _run_update
from sandbox.executor import RunStatus
from sandbox.recorder import Recorder
from sandbox.runs import set_status
from sandbox.server_lease import ServerLease
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditEvent, Job, Run
from sandbox.store.types import new_id


def _serve(home: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["SLUICE_HOME"] = str(home)
    if url:
        env["SLUICE_DATABASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "sandbox.cli", "serve", "--port", "1", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_sqlite_refuses_several_processes_with_a_clear_error(tmp_path: Path) -> None:
    for flag in ("--processes", "--http-workers"):
        done = _serve(tmp_path / "home", flag, "3")
        assert done.returncode == 2, done.stderr
        assert "processes_need_postgresql" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_second_server_on_one_sqlite_store_is_refused(tmp_path: Path) -> None:
    server = Server(tmp_path / "home")
    server.init()
    server.start()
    try:
        done = _serve(tmp_path / "home")
        assert done.returncode == 2 and "store_in_use" in done.stderr and "Traceback" not in done.stderr
    finally:
        server.stop()


def _running_run(api: Api, job_id: str, instance: str | None) -> str:
    sessions = session_factory(make_engine(api.settings.resolved_database_url))
    with sessions.begin() as s:
        job = s.get(Job, job_id)
        assert job is not None
        run = Run(id=new_id("run"), job_id=job.id, grant_id=job.grant_id, operator_org_id=job.operator_org_id,
                  requested_by="prn_x", idempotency_key=None, params={"s": "7"}, status=RunStatus.RUNNING.value,
                  frozen_sql_sha256=job.frozen_sql_sha256 or "", dataset_versions=dict(job.dataset_versions),
                  created_at=api.clock.now(), server_instance=instance)
        s.add(run)
        return run.id


def test_recovery_fails_only_runs_of_instances_that_are_gone(api: Api) -> None:
    w = build_world(api)
    engine = make_engine(api.settings.resolved_database_url)
    live = ServerLease(engine, api.settings.resolved_home).acquire()
    gone = ServerLease(engine, api.settings.resolved_home).acquire()
    gone.release()
    try:
        in_flight = _running_run(api, w.industry_job, live.id)
        interrupted = _running_run(api, w.industry_job, gone.id)
        legacy = _running_run(api, w.industry_job, None)
        assert sorted(recover_interrupted_runs(api.settings, api.clock)) == sorted([interrupted, legacy])
        assert recover_interrupted_runs(api.settings, api.clock) == []
        with session_factory(engine)() as s:
            assert s.get(Run, in_flight).status == "running"  # type: ignore[union-attr]
            recovered = s.scalars(select(AuditEvent.resource).where(AuditEvent.action == "run:recover")).all()
            assert sorted(recovered) == sorted([f"run/{interrupted}", f"run/{legacy}"])
    finally:
        live.release()
    assert recover_interrupted_runs(api.settings, api.clock) == [in_flight]  # its server has stopped now
    engine.dispose()


def test_a_run_recovered_meanwhile_cannot_be_finished_again(api: Api) -> None:
    w = build_world(api)
    engine = make_engine(api.settings.resolved_database_url)
    sessions = session_factory(engine)
    run_id = _running_run(api, w.industry_job, None)
    with sessions() as s:
        finishing = s.get(Run, run_id)
        assert finishing is not None
        s.expunge(finishing)
    assert recover_interrupted_runs(api.settings, api.clock) == [run_id]
    set_status(finishing, RunStatus.SUCCEEDED, now=api.clock.now())
    with pytest.raises(StaleDataError):
        Recorder(sessions).record([_run_update(finishing)])
    with sessions() as s:
        stored = s.get(Run, run_id)
        assert stored is not None and (stored.status, stored.error_code) == ("failed", "interrupted")
    engine.dispose()


def test_a_job_decided_in_another_session_is_not_decided_again(api: Api) -> None:
    w = build_world(api)
    grant = api.grant(w.industry, purpose_class="industry")["id"]
    job_id = api.ok("POST", "/v1/jobs", w.industry_key, json={
        "grant_id": grant, "title": "t", "purpose": "p", "sql": f"SELECT count(*) AS n FROM {w.dataset}"})["id"]
    engine = make_engine(api.settings.resolved_database_url)
    sessions = session_factory(engine)
    first, second = sessions(), sessions()
    try:
        a, b = first.get(Job, job_id), second.get(Job, job_id)
        assert a is not None and b is not None and a.state == b.state == "pending_review"
        jobs._set_state(a, jobs.JobState.APPROVED, now=api.clock.now())
        first.commit()
        jobs._set_state(b, jobs.JobState.REJECTED, now=api.clock.now(), source="reviewer")
        with pytest.raises(StaleDataError):
            second.commit()
    finally:
        first.close()
        second.close()
    with sessions() as s:
        assert s.get(Job, job_id).state == "approved"  # type: ignore[union-attr]
    engine.dispose()


def test_a_lost_race_is_answered_409_concurrent_state_change() -> None:
    from sandbox.app.deps import concurrent_conflict
    from sandbox.app.problems import outcome_of

    conflict = concurrent_conflict(StaleDataError("0 rows matched"))
    assert outcome_of(conflict) == ("refused", 409, "concurrent_state_change")
    other = ValueError("x")
    assert concurrent_conflict(other) is other


@pytest.mark.parametrize("given", [None, "elsewhere"])
def test_serve_gives_its_worker_processes_a_metrics_folder_and_leaves_the_callers_environment_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None) -> None:
    """PROMETHEUS_MULTIPROC_DIR is set for the uvicorn workers only: an in-process caller that later builds an app
    must not find its metrics switched to multi-process mode over the server's folder."""
    import uvicorn
    from typer.testing import CliRunner

    from sandbox import logs
    from sandbox.billing import recovery
    from sandbox.cli import app

    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SLUICE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/unused")
    if given is None:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    else:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / given))
    seen: dict[str, Any] = {}

    def served(target: str, **options: Any) -> None:
        seen.update(target=target, workers=options["workers"], folder=os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

    monkeypatch.setattr(uvicorn, "run", served)
    monkeypatch.setattr(recovery, "recover_interrupted_runs", lambda settings, clock: [])
    monkeypatch.setattr(logs, "configure_json_logging", lambda: None)
    result = CliRunner().invoke(app, ["serve", "--processes", "2"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / (given or "home/metrics")
    assert seen == {"target": "sandbox.app:app_from_environment", "workers": 2, "folder": str(folder)}
    assert folder.is_dir()
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") == (None if given is None else str(folder))
