"""Providers see who uses their data: the jobs and runs that read a dataset, as metadata only (docs/catalogue.md)."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select
from sqlalchemy.orm import Session

from sandbox.app.deps import SESSION, Guard, require
from sandbox.errors import Forbidden, NotFound
from sandbox.store.models import Dataset, Job, Organization, Run

router = APIRouter(prefix="/v1", tags=["catalogue"])

READERS = ("data_steward", "admin")


@router.get("/datasets/{dataset_id}/usage")
def dataset_usage(dataset_id: str, guard: Guard = require("dataset", "read"),
                  session: Session = SESSION) -> dict[str, Any]:
    """The jobs and runs that read a dataset: operator, title, purpose, SQL hash, status and dates; never the SQL
    or any result. For the dataset's provider (data stewards and admins) and the platform agency's admins."""
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise NotFound(f"dataset {dataset_id} does not exist", code="dataset_not_found")
    caller = guard.caller
    own = caller.org_id == ds.provider_org_id and any(r in READERS for r in caller.roles)
    if not own and not (caller.is_platform and "admin" in caller.roles):
        raise Forbidden(f"who uses {dataset_id} is shown to a data_steward or admin of its provider organization",
                        code="not_the_provider", dataset=dataset_id)
    guard.audit.resource = f"dataset/{dataset_id}"
    names = {org_id: name for org_id, name in session.execute(select(Organization.id, Organization.name))}
    jobs = [j for j in session.scalars(select(Job).order_by(Job.created_at, Job.id))
            if dataset_id in j.dataset_versions]
    runs_by_job: dict[str, list[Run]] = {}
    if jobs:
        for run in session.scalars(select(Run).where(Run.job_id.in_([j.id for j in jobs]))
                                   .order_by(Run.created_at, Run.id)):
            runs_by_job.setdefault(run.job_id, []).append(run)
    out = [{
        "job_id": j.id, "operator_org_id": j.operator_org_id, "operator": names.get(j.operator_org_id, ""),
        "title": j.title, "purpose": j.purpose, "sql_sha256": hashlib.sha256(j.sql.encode("utf-8")).hexdigest(),
        "version": j.dataset_versions[dataset_id], "state": j.state, "created_at": j.created_at.isoformat(),
        "decided_at": j.decided_at.isoformat() if j.decided_at else None,
        "runs": [{"run_id": r.id, "status": r.status, "created_at": r.created_at.isoformat(),
                  "finished_at": r.finished_at.isoformat() if r.finished_at else None}
                 for r in runs_by_job.get(j.id, [])],
    } for j in jobs]
    guard.note(dataset=dataset_id, jobs=len(out))
    return {"dataset": dataset_id, "jobs": out}
