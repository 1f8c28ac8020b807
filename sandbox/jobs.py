"""Jobs: submission (analysed once), review, approval that freezes the checked SQL. One state function."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from policy.analysis import DEFAULT_MAX_SQL_LENGTH, Analysis, Verdict, analyse
from policy.constraints import ColumnPolicy, Constraint, Grade, MaskKind, TablePolicy
from policy.sql_engines import DEFAULT_ENGINE
from sandbox.catalogue.registry import CERTIFIED, latest_certified_versions
from sandbox.errors import Conflict, Forbidden, InvalidInput, NotFound, Refused
from sandbox.grants import covers, effective_constraints, effective_status
from sandbox.run_inputs import AnyGrant
from sandbox.store.models import DatasetVersion, Grant, Job, JobReview
from sandbox.store.types import new_id

PARAM_TYPES = ("VARCHAR", "INTEGER", "BIGINT", "DOUBLE", "DECIMAL", "DATE", "TIMESTAMP", "BOOLEAN")
IMPORTANT_REVIEWS = 2


class JobState(StrEnum):
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    STOPPED = "stopped"  # a dataset version it reads was revoked; `stopped_reason` says which and why


# state -> states it may move to
_MOVES: dict[JobState | None, frozenset[JobState]] = {
    None: frozenset({JobState.PENDING_REVIEW, JobState.APPROVED, JobState.REJECTED}),
    JobState.PENDING_REVIEW: frozenset({JobState.APPROVED, JobState.REJECTED, JobState.STOPPED}),
    JobState.APPROVED: frozenset({JobState.STOPPED}),
    JobState.REJECTED: frozenset(),
    JobState.STOPPED: frozenset(),
}


@dataclass(frozen=True)
class GrantTable:
    """A dataset version as one grant sees it: the policy for analysis and the stored version."""

    policy: TablePolicy
    version: DatasetVersion


def table_policy(grant: AnyGrant, version: DatasetVersion) -> TablePolicy:
    """The dataset version's columns with the grant's tightening applied."""
    constraints = effective_constraints(grant, version)
    cols = tuple(ColumnPolicy(name=c["name"], type=c["type"], constraint=Constraint(constraints[c["name"]]),
                              tags=tuple(c.get("tags") or ()), mask=MaskKind(c["mask"]) if c.get("mask") else None)
                 for c in version.columns)
    return TablePolicy(name=version.dataset_id, columns=cols, entity_column=version.entity_column,
                       grade=Grade(version.grade), dataset_id=version.dataset_id, version=version.version,
                       population=version.population)


def grant_tables(session: Session, grant: AnyGrant, pinned: dict[str, int] | None = None) -> dict[str, GrantTable]:
    """Datasets the grant covers (latest certified versions, or the `pinned` ones), keyed by their SQL name.

    Only certified versions are ever covered: a pinned version that is no longer certified is left out.
    """
    if pinned is not None:
        versions: list[DatasetVersion | None] = [
            session.scalar(select(DatasetVersion).where(DatasetVersion.dataset_id == d, DatasetVersion.version == v))
            for d, v in sorted(pinned.items())]
    else:
        versions = list(latest_certified_versions(session))
    out = {}
    for v in versions:
        if v is None or v.registration_state != CERTIFIED:
            continue
        if covers(grant, v).covered:
            out[v.dataset_id] = GrantTable(table_policy(grant, v), v)
    return out


def check_grant_usable(grant: AnyGrant, now: datetime) -> None:
    """Refuse when the grant is suspended, revoked, expired or not yet valid."""
    status = effective_status(grant, now)
    if status != "active":
        raise Refused(f"grant {grant.id} is {status}" + (f": {grant.status_reason}" if grant.status != "active"
                                                         else ""), code=f"grant_{status}", grant_id=grant.id)


def validate_parameters(parameters: dict[str, str]) -> dict[str, str]:
    """Declared parameters: `$name` -> one of PARAM_TYPES."""
    out = {}
    for name, typ in parameters.items():
        if not name.isidentifier():
            raise InvalidInput(f"parameter name {name!r} is not an identifier", code="invalid_parameter")
        base = typ.upper().split("(")[0].strip()
        if base not in PARAM_TYPES:
            raise InvalidInput(f"parameter {name}: type must be one of {', '.join(PARAM_TYPES)}",
                               code="invalid_parameter")
        out[name] = typ.upper()
    return out


def stop_jobs_on_version(session: Session, dataset_id: str, version: int, *, now: datetime, reason: str
                         ) -> list[str]:
    """Stop every pending or approved job that reads `dataset_id` at `version`; returns their ids."""
    stopped = []
    live = session.scalars(select(Job).where(Job.state.in_([JobState.PENDING_REVIEW.value,
                                                              JobState.APPROVED.value])).order_by(Job.id))
    for job in live:
        if job.dataset_versions.get(dataset_id) == version:
            _set_state(job, JobState.STOPPED, now=now, reason=reason)
            stopped.append(job.id)
    session.flush()
    return stopped


def _set_state(job: Job, to: JobState, *, now: datetime, source: str | None = None, reason: str | None = None
               ) -> None:
    """The one function that changes a job's state."""
    current = JobState(job.state) if job.state else None
    if to not in _MOVES[current]:
        raise Conflict(f"job {job.id} is {job.state}; it cannot become {to.value}", code="invalid_job_transition",
                       state=job.state)
    job.state = to.value
    if to == JobState.REJECTED:
        job.rejection_source = source
    if to == JobState.STOPPED:
        job.stopped_reason = reason
    if to != JobState.PENDING_REVIEW:
        job.decided_at = now
    if to == JobState.APPROVED:
        sql = job.analysis["sql"]
        job.frozen_sql = sql
        job.frozen_sql_sha256 = hashlib.sha256(sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Submission:
    """The stored job and the analysis it got."""

    job: Job
    analysis: Analysis
    auto_approved: bool


def check(session: Session, *, grant: Grant, sql: str, parameters: dict[str, str], now: datetime) -> dict[str, Any]:
    """Static analysis only, nothing stored and no data read: the verdict, the findings, the SQL that would run,
    and whether a submission would need review (and by how many reviewers)."""
    check_grant_usable(grant, now)
    params = validate_parameters(parameters)
    tables = grant_tables(session, grant)
    analysis = analyse(sql, {name: t.policy for name, t in tables.items()}, parameters=params)
    read = {t: tables[t].version.version for t in analysis.tables_read if t in tables}
    important = any(tables[t].version.grade == Grade.IMPORTANT for t in read)
    accepted = analysis.verdict == Verdict.ACCEPTED
    auto = accepted and grant.auto_approve and not important and not analysis.joins_datasets
    return {"grant_id": grant.id, "verdict": analysis.verdict.value,
            "findings": [f.to_dict() for f in analysis.findings], "sql": analysis.sql, "dataset_versions": read,
            "tables_read": list(analysis.tables_read), "joins_datasets": analysis.joins_datasets,
            "is_aggregate": analysis.is_aggregate, "output_columns": list(analysis.output_columns),
            "would_be": (JobState.APPROVED if auto else JobState.PENDING_REVIEW if accepted
                         else JobState.REJECTED).value,
            "reviews_required": 0 if auto or not accepted else IMPORTANT_REVIEWS if important else 1}


def submit(session: Session, *, grant: Grant, submitted_by: str, title: str, purpose: str, sql: str,
           parameters: dict[str, str], now: datetime, replaces: str | None = None) -> Submission:
    """Analyse the SQL against the grant's datasets and store the job (rejected, pending review or approved);
    `replaces` links it to the job it corrects (same grant, replaced at most once)."""
    check_grant_usable(grant, now)
    if replaces is not None:
        check_replaceable(session, grant, replaces)
    if not title.strip() or not purpose.strip():
        raise InvalidInput("a job needs a title and a purpose", code="title_and_purpose_required")
    params = validate_parameters(parameters)
    tables = grant_tables(session, grant)
    analysis = analyse(sql, {name: t.policy for name, t in tables.items()}, parameters=params,
                       engine=grant.engine or DEFAULT_ENGINE)
    read = {t: tables[t].version.version for t in analysis.tables_read if t in tables}
    important = any(tables[t].version.grade == Grade.IMPORTANT for t in read)
    stored = sql if len(sql) <= DEFAULT_MAX_SQL_LENGTH else sql[:DEFAULT_MAX_SQL_LENGTH]  # a refused 40 MiB body
    job = Job(id=new_id("job"), grant_id=grant.id, operator_org_id=grant.operator_org_id, submitted_by=submitted_by,
              title=title.strip(), purpose=purpose.strip(), sql=stored, parameters=params, state="",
              findings=[f.to_dict() for f in analysis.findings], analysis=analysis.to_dict(),
              dataset_versions=read, reviews_required=IMPORTANT_REVIEWS if important else 1, created_at=now,
              replaces=replaces)
    session.add(job)
    auto = False
    if analysis.verdict == Verdict.REFUSED:
        _set_state(job, JobState.REJECTED, now=now, source="analysis")
    elif grant.auto_approve and not important and not analysis.joins_datasets:
        _set_state(job, JobState.APPROVED, now=now)
        auto = True
    else:
        _set_state(job, JobState.PENDING_REVIEW, now=now)
    session.flush()
    return Submission(job, analysis, auto)


def _check_pending(job: Job) -> None:
    if JobState(job.state) != JobState.PENDING_REVIEW:
        raise Conflict(f"job {job.id} is {job.state}; only pending_review jobs are reviewed",
                       code="job_not_pending_review", state=job.state)


def review(session: Session, job: Job, *, reviewer_id: str, decision: str, comment: str, now: datetime) -> Job:
    """Record a reviewer's decision; important data needs two different approving reviewers.

    Once the request is valid, the job's row is locked (SELECT ... FOR UPDATE on PostgreSQL; SQLite has one
    writer) and its state read again, so concurrent reviews of one job are decided one after the other, each
    seeing the reviews committed before it.
    """
    _check_pending(job)
    if decision not in ("approve", "reject"):
        raise InvalidInput("decision must be approve or reject", code="invalid_review_decision")
    if not comment.strip():
        raise InvalidInput("a review needs a comment", code="comment_required")
    if job.submitted_by == reviewer_id:
        raise Forbidden("a reviewer may not review their own job", code="self_review")
    session.refresh(job, with_for_update=True)
    _check_pending(job)  # another reviewer may have decided it meanwhile
    done = session.scalar(select(JobReview.id).where(JobReview.job_id == job.id, JobReview.reviewer_id == reviewer_id))
    if done is not None:
        raise Conflict("this reviewer has already reviewed the job; a second approval needs a different reviewer",
                       code="already_reviewed")
    session.add(JobReview(job_id=job.id, reviewer_id=reviewer_id, decision=decision, comment=comment.strip(),
                          at=now))
    session.flush()
    if decision == "reject":
        _set_state(job, JobState.REJECTED, now=now, source="reviewer")
    else:
        approvals = session.scalars(select(JobReview.reviewer_id).where(JobReview.job_id == job.id,
                                                                         JobReview.decision == "approve")).all()
        if len(set(approvals)) >= job.reviews_required:
            _set_state(job, JobState.APPROVED, now=now)
    session.flush()
    return job


def check_replaceable(session: Session, grant: Grant, replaces: str) -> Job:
    """The job a correction replaces: one of the same grant, not replaced already."""
    earlier = session.get(Job, replaces)
    if earlier is None or earlier.grant_id != grant.id:
        raise NotFound(f"job {replaces} does not exist under grant {grant.id}", code="replaced_job_not_found",
                       job_id=replaces)
    later = session.scalar(select(Job.id).where(Job.replaces == replaces))
    if later is not None:
        raise Conflict(f"job {replaces} was already replaced by {later}; replace {later} instead",
                       code="job_already_replaced", job_id=replaces, replaced_by=later)
    return earlier


def history(session: Session, job: Job) -> list[dict[str, Any]]:
    """The chain of corrections this job belongs to, oldest first (each replaces the one before)."""
    chain = [job]
    while chain[0].replaces is not None:
        earlier = session.get(Job, chain[0].replaces)
        if earlier is None or earlier in chain:
            break
        chain.insert(0, earlier)
    while True:
        later = session.scalar(select(Job).where(Job.replaces == chain[-1].id))
        if later is None or later in chain:
            break
        chain.append(later)
    return [{"id": j.id, "state": j.state, "title": j.title, "replaces": j.replaces,
             "created_at": j.created_at.isoformat()} for j in chain]


def job_out(job: Job, reviews: list[JobReview] | None = None) -> dict[str, Any]:
    """A job as the API shows it."""
    out: dict[str, Any] = {
        "id": job.id, "grant_id": job.grant_id, "operator_org_id": job.operator_org_id,
        "submitted_by": job.submitted_by, "title": job.title, "purpose": job.purpose, "sql": job.sql,
        "parameters": job.parameters, "state": job.state, "rejection_source": job.rejection_source,
        "stopped_reason": job.stopped_reason,
        "findings": job.findings, "dataset_versions": job.dataset_versions,
        "reviews_required": job.reviews_required, "frozen_sql": job.frozen_sql,
        "frozen_sql_sha256": job.frozen_sql_sha256, "created_at": job.created_at.isoformat(),
        "decided_at": job.decided_at.isoformat() if job.decided_at else None, "replaces": job.replaces,
        "analysis": {k: job.analysis.get(k) for k in ("verdict", "tables_read", "joins_datasets", "is_aggregate",
                                                      "output_columns", "entity_tables")},
    }
    if reviews is not None:
        out["reviews"] = [{"reviewer_id": r.reviewer_id, "decision": r.decision, "comment": r.comment,
                           "at": r.at.isoformat()} for r in reviews]
    return out
