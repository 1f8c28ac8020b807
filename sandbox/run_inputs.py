"""The job and grant a run reads: one Core SELECT per run, into plain rows (no ORM entities on the run path).

They are read fresh on every run, so a stopped job or a suspended, revoked or expired grant is refused at once in
every process. The run path's functions take `JobView` and `GrantView`: these rows, or the ORM models (a product
call loads those), which have the same attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from sandbox.store.models import Grant, Job


class JobView(Protocol):
    """What the run path reads of a job."""

    @property
    def id(self) -> str: ...
    @property
    def grant_id(self) -> str: ...
    @property
    def operator_org_id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def stopped_reason(self) -> str | None: ...
    @property
    def parameters(self) -> dict[str, str]: ...
    @property
    def analysis(self) -> dict[str, Any]: ...
    @property
    def dataset_versions(self) -> dict[str, int]: ...
    @property
    def frozen_sql(self) -> str | None: ...
    @property
    def frozen_sql_sha256(self) -> str | None: ...


class GrantView(Protocol):
    """A grant's columns, as the run path and the coverage and validity checks read them."""

    @property
    def id(self) -> str: ...
    @property
    def operator_org_id(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def domains(self) -> list[str]: ...
    @property
    def datasets(self) -> list[str]: ...
    @property
    def scenario(self) -> dict[str, Any] | None: ...
    @property
    def purpose_class(self) -> str: ...
    @property
    def valid_from(self) -> datetime: ...
    @property
    def valid_until(self) -> datetime: ...
    @property
    def min_group_size(self) -> int: ...
    @property
    def max_result_rows(self) -> int: ...
    @property
    def auto_approve(self) -> bool: ...
    @property
    def column_overrides(self) -> dict[str, dict[str, str]]: ...
    @property
    def status(self) -> str: ...
    @property
    def status_reason(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def created_by(self) -> str: ...
    @property
    def engine(self) -> str: ...


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


JOB_COLUMNS = tuple(f.name for f in fields(JobRow))
GRANT_COLUMNS = tuple(f.name for f in fields(GrantRow))
_JOBS: Table = Job.__table__  # type: ignore[assignment]
_GRANTS: Table = Grant.__table__  # type: ignore[assignment]
# Built once; its compiled form is cached. Grant columns are labelled so that no name clashes with a job's.
_JOB_WITH_GRANT = (select(*(_JOBS.c[name] for name in JOB_COLUMNS),
                          *(_GRANTS.c[name].label(f"grant_{name}") for name in GRANT_COLUMNS))
                   .join_from(_JOBS, _GRANTS, _GRANTS.c.id == _JOBS.c.grant_id)
                   .where(_JOBS.c.id == bindparam("job_id")))
_SPLIT = len(JOB_COLUMNS)


def read_job_with_grant(session: Session, job_id: str) -> tuple[JobRow, GrantRow] | None:
    """The job and its grant, read now in one query on the session's connection; None if there is no such job."""
    row = session.connection().execute(_JOB_WITH_GRANT, {"job_id": job_id}).first()
    if row is None:
        return None
    return JobRow(*row[:_SPLIT]), GrantRow(*row[_SPLIT:])
