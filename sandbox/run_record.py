"""The run path's run: a plain record with the `runs` table's columns, written with Core statements.

A run made by a run POST or a product call is never added to an ORM session (its start is a Core INSERT, its end
a conditional Core UPDATE), so it does not need the ORM's attribute instrumentation on every read and write. The
ORM model `sandbox.store.models.Run` stays the model for every other use (reads, listings, recovery); both have the
same attributes, and `sandbox.runs.set_status` changes the status of either.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Table, bindparam, insert, update

from sandbox.store.models import Run


@dataclass(slots=True)
class RunRecord:
    """One run on the run path, with every column of `runs` (defaults as the model's)."""

    id: str
    job_id: str
    grant_id: str
    operator_org_id: str
    requested_by: str
    idempotency_key: str | None
    params: dict[str, Any]
    status: str
    frozen_sql_sha256: str
    dataset_versions: dict[str, int]
    created_at: datetime
    server_instance: str | None = None
    rows_scanned: int = 0
    bytes_scanned: int = 0
    result_rows: int = 0
    result_bytes: int = 0
    suppressed_cells: int = 0
    suppression: dict[str, int] = field(default_factory=dict)
    truncated_rows: int = 0
    cpu_ms: float = 0.0
    wall_ms: float = 0.0
    error_code: str | None = None
    error_message: str | None = None
    result_path: str | None = None
    result_sha256: str | None = None
    finished_at: datetime | None = None

    def values(self) -> dict[str, Any]:
        """Every column's value, keyed by column name (for the Core INSERT)."""
        return dict(zip(COLUMNS, _ALL(self), strict=True))


AnyRun = Run | RunRecord
"""A run as the run path holds it (a record) or as the store loads it (the ORM model)."""

COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RunRecord))
_ALL = attrgetter(*COLUMNS)
_RUNS: Table = Run.__table__  # type: ignore[assignment]
_UPDATED = tuple(name for name in COLUMNS if name != "id")

RUN_INSERT = insert(_RUNS)
"""The INSERT of a run's row (its start, or a run refused at its checks): parameters from `RunRecord.values()`."""
RUN_FINISH = (update(_RUNS).where(_RUNS.c.id == bindparam("run_id"), _RUNS.c.status == bindparam("from_status"))
              .values({name: bindparam(f"v_{name}") for name in _UPDATED}))
"""The conditional UPDATE of a run's row to its final record (matches only while the row is still `running`)."""


def finish_params(run: RunRecord, from_status: str) -> dict[str, Any]:
    """Parameters of `RUN_FINISH` for `run`, matching its row only while the row's status is `from_status`."""
    params = {f"v_{name}": value for name, value in zip(_UPDATED, _ALL(run)[1:], strict=True)}
    params.update(run_id=run.id, from_status=from_status)
    return params

