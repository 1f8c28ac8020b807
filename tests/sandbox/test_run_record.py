"""The run path's plain run record writes and reads the same row as the ORM model, column for column."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from billing_world import build_world
from sqlalchemy.orm import Session, sessionmaker

from sandbox.executor import RunStatus
from sandbox.run_record import COLUMNS, RUN_FINISH, RUN_INSERT, AnyRun, RunRecord, finish_params
from sandbox.runs import new_run, set_status
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import Job, Run


def test_the_run_record_has_exactly_the_columns_of_the_runs_table() -> None:
    assert sorted(COLUMNS) == sorted(Run.__table__.c.keys())


Store = tuple[sessionmaker[Session], str]


def record_of(run: AnyRun) -> RunRecord:
    """A copy of `run` (record or ORM object) as a plain record."""
    return RunRecord(**{name: getattr(run, name) for name in COLUMNS})


@pytest.fixture()
def store(api: Any) -> Iterator[Store]:
    """Sessions on the test store and the id of an approved job in it."""
    w = build_world(api)
    engine = make_engine(api.settings.resolved_database_url)
    yield session_factory(engine), w.industry_job
    engine.dispose()


def test_a_new_run_record_inserts_the_row_the_orm_model_would(api: Any, store: Store) -> None:
    sessions, job_id = store
    with sessions.begin() as s:
        job = s.get(Job, job_id)
        assert job is not None
        record = new_run(job, requested_by="prn_x", idempotency_key=None, params={"s": "7"}, now=api.clock.now())
        given = ("job_id", "grant_id", "operator_org_id", "requested_by", "idempotency_key", "params", "status",
                 "frozen_sql_sha256", "dataset_versions", "created_at")
        s.add(Run(id=record.id + "m", **{name: getattr(record, name) for name in given}))  # model's defaults
        s.execute(RUN_INSERT, record.values())
    with sessions() as s:
        ours, theirs = s.get(Run, record.id), s.get(Run, record.id + "m")
        assert ours is not None and theirs is not None
        assert replace(record_of(theirs), id=record.id) == record_of(ours) == record


def test_a_finished_run_record_updates_every_column_of_its_running_row(api: Any, store: Store) -> None:
    sessions, job_id = store
    with sessions.begin() as s:
        job = s.get(Job, job_id)
        assert job is not None
        record = new_run(job, requested_by="prn_x", idempotency_key="key-1", params={"s": "7"},
                         now=api.clock.now(), instance="srv_1")
        s.execute(RUN_INSERT, record.values())
    finished = RunRecord(**record.values())
    set_status(finished, RunStatus.SUCCEEDED, now=api.clock.now() + timedelta(seconds=3), error_code="c",
               error_message="m")
    values = {"rows_scanned": 11, "bytes_scanned": 12, "result_rows": 13, "result_bytes": 14, "suppressed_cells": 15,
              "suppression": {"k": 15}, "truncated_rows": 16, "cpu_ms": 1.5, "wall_ms": 2.5,
              "result_path": "results/x.parquet", "result_sha256": "ab" * 32}
    finished = replace(finished, **values)  # type: ignore[arg-type]
    with sessions.begin() as s:
        assert s.execute(RUN_FINISH, finish_params(finished, RunStatus.RUNNING.value)).rowcount == 1  # type: ignore[attr-defined]
        again = s.execute(RUN_FINISH, finish_params(finished, RunStatus.RUNNING.value))
        assert again.rowcount == 0  # type: ignore[attr-defined]  # no longer running: matches nothing
    with sessions() as s:
        stored = s.get(Run, record.id)
        assert stored is not None
        assert record_of(stored) == finished
