"""The job and grant a run reads: one Core SELECT per run, into plain rows (no ORM entities on the run path).

They are read fresh on every run, so a stopped job or a suspended, revoked or expired grant is refused at once in
every process. The run path's functions take `AnyJob` and `AnyGrant`: these rows, or the ORM models (a product
call loads those), which have the same attributes.

Given the datasets the job reads (a job's pinned datasets never change, so the caller may remember them from an
earlier run), the same SELECT also reads the latest certified version of each (one scalar subquery each): the
re-grading check (sandbox/regrade.py) then needs no query of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.orm import Session

from sandbox.catalogue.registry import CERTIFIED
from sandbox.prepared import Prepared
from sandbox.store.models import DatasetVersion, Grant, Job


@dataclass(frozen=True, slots=True)
class JobRow:
    """The columns of a job that a run reads (not its SQL text, findings or title)."""

    id: str
    grant_id: str
    operator_org_id: str
    state: str
    stopped_reason: str | None
    parameters: dict[str, str]
    analysis: dict[str, Any]
    dataset_versions: dict[str, int]
    frozen_sql: str | None
    frozen_sql_sha256: str | None


@dataclass(frozen=True, slots=True)
class GrantRow:
    """Every column of a grant."""

    id: str
    operator_org_id: str
    scope: str
    domains: list[str]
    datasets: list[str]
    scenario: dict[str, Any] | None
    purpose_class: str
    valid_from: datetime
    valid_until: datetime
    min_group_size: int
    max_result_rows: int
    auto_approve: bool
    column_overrides: dict[str, dict[str, str]]
    status: str
    status_reason: str
    created_at: datetime
    created_by: str
    engine: str


@dataclass(frozen=True, slots=True)
class RunInputs:
    """A job and its grant as read for a run, with the latest certified version of each dataset the job reads
    (None when they were not read with them; a dataset with no certified version is absent)."""

    job: JobRow
    grant: GrantRow
    latest: dict[str, int] | None


AnyJob = Job | JobRow
"""A job as the run path reads it (a plain row) or as the store loads it (the ORM model, e.g. for product calls)."""
AnyGrant = Grant | GrantRow
"""A grant as the run path reads it (a plain row) or as the store loads it (the ORM model)."""

JOB_COLUMNS = tuple(f.name for f in fields(JobRow))
GRANT_COLUMNS = tuple(f.name for f in fields(GrantRow))
_JOBS: Table = Job.__table__  # type: ignore[assignment]
_GRANTS: Table = Grant.__table__  # type: ignore[assignment]
_VERSIONS: Table = DatasetVersion.__table__  # type: ignore[assignment]
_SPLIT = len(JOB_COLUMNS)
_END = _SPLIT + len(GRANT_COLUMNS)
_STATEMENTS: dict[int, Prepared] = {}


def _statement(datasets: int) -> Prepared:
    """The SELECT for a job reading `datasets` datasets, built and prepared once per count (sandbox/prepared.py).
    Grant columns are labelled so that no name clashes with a job's."""
    found = _STATEMENTS.get(datasets)
    if found is None:
        latest = [select(func.max(_VERSIONS.c.version))
                  .where(_VERSIONS.c.dataset_id == bindparam(f"dataset_{i}"),
                         _VERSIONS.c.registration_state == CERTIFIED)
                  .scalar_subquery().label(f"latest_{i}") for i in range(datasets)]
        found = _STATEMENTS[datasets] = Prepared(
            select(*(_JOBS.c[name] for name in JOB_COLUMNS),
                   *(_GRANTS.c[name].label(f"grant_{name}") for name in GRANT_COLUMNS), *latest)
            .join_from(_JOBS, _GRANTS, _GRANTS.c.id == _JOBS.c.grant_id)
            .where(_JOBS.c.id == bindparam("job_id")))
    return found


def read_job_with_grant(session: Session, job_id: str, datasets: Sequence[str] = ()) -> RunInputs | None:
    """The job and its grant, read now in one query; None if there is no such job. The query runs on the
    session's connection when it has a transaction open, else on a pooled connection of its own, returned at once
    (so the session begins no transaction for it).

    With `datasets` (the job's, sorted), the latest certified version of each is read in the same query; they are
    returned only if they are the job's datasets.
    """
    params = {"job_id": job_id, **{f"dataset_{i}": name for i, name in enumerate(datasets)}}
    statement = _statement(len(datasets))
    if session.in_transaction():  # it holds a connection already: read on it, never hold two
        row = statement.first(session.connection(), params)
    else:  # a short read of its own: the session opens no transaction that would need ending
        with session.get_bind().connect() as connection:  # type: ignore[union-attr]
            row = statement.first(connection, params)
    if row is None:
        return None
    job = JobRow(*row[:_SPLIT])
    latest = None
    if datasets and list(datasets) == sorted(job.dataset_versions):
        latest = {name: int(version) for name, version in zip(datasets, row[_END:], strict=True)
                  if version is not None}
    return RunInputs(job, GrantRow(*row[_SPLIT:_END]), latest)
