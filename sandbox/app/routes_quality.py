"""Data quality: a version's self-check profile, quality reports and their answers, feedback statistics."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from sandbox.app.deps import SESSION, AppState, Guard, app_state, require
from sandbox.app.routes_catalogue import public_state, sees_applications
from sandbox.app.schemas import StrictModel
from sandbox.catalogue import feedback, registry
from sandbox.errors import InvalidInput, NotFound
from sandbox.store.models import Dataset, QualityReport

router = APIRouter(prefix="/v1", tags=["quality"])


class ReportIn(StrictModel):
    dataset: str
    version: int | None = Field(None, description="default: the latest certified version")
    category: str = Field(description="missing_values, wrong_values, duplicates, stale_data, schema, "
                                      "documentation or other")
    column: str | None = None
    description: str = Field(min_length=1, max_length=feedback.MAX_DESCRIPTION)


class AnswerIn(StrictModel):
    answer: str = Field(description="acknowledged, fixed_in_version or not_a_defect")
    reason: str = ""
    fixed_in_version: int | None = None


@router.get("/datasets/{dataset_id}/versions/{version}/quality")
def version_quality(dataset_id: str, version: int, guard: Guard = require("dataset", "read"),
                    session: Session = SESSION) -> dict[str, Any]:
    """A version's quality self-check: per-column profile, duplicates, freshness, expectation results.

    Values appear only for `open` columns (min, max, failing examples); everything else is counts and rates.
    """
    ds = session.get(Dataset, dataset_id)
    guard.check(ds.provider_org_id if ds else None, f"dataset/{dataset_id}/{version}/quality")
    v = registry.get_version(session, dataset_id, version)
    if not public_state(v) and not sees_applications(guard, ds.provider_org_id if ds else None):
        raise NotFound(f"dataset {dataset_id} has no version {version}", code="dataset_version_not_found")
    return {"dataset": dataset_id, "version": version, "registration_state": v.registration_state,
            "quality": v.quality}


@router.post("/quality/reports", status_code=201)
def file_report(body: ReportIn, guard: Guard = require("quality_report", "create"),
                session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """File a quality problem found in use. The filer gets a receipt; only the provider and agency read it."""
    guard.check(guard.caller.org_id, f"dataset/{body.dataset}")
    now = state.clock.now()
    report = feedback.file_report(
        session, dataset_id=body.dataset, version=body.version, category=body.category, column=body.column,
        description=body.description, filed_by=guard.caller.principal_id, filer_org_id=guard.caller.org_id, now=now,
        deadline=timedelta(days=state.settings.quality_report_deadline_days))
    guard.note(report=report.id, dataset=report.dataset_id, version=report.version, category=report.category)
    return feedback.receipt(report)


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInput(f"{name} needs a UTC offset, e.g. 2027-01-01T00:00:00Z", code="naive_timestamp")
    return value


@router.get("/quality/reports")
def list_reports(guard: Guard = require("quality_report", "read"), session: Session = SESSION,
                 state: AppState = Depends(app_state), status: str | None = Query(None),
                 overdue: bool = Query(False, description="only open reports past their deadline"),
                 dataset: str | None = Query(None)) -> list[dict[str, Any]]:
    """Reports the caller may read: a provider its own datasets', the agency all (overdue ones flagged)."""
    q = select(QualityReport).order_by(QualityReport.created_at, QualityReport.id)
    if not guard.any_org:
        q = q.where(QualityReport.provider_org_id == guard.caller.org_id)
    if status:
        q = q.where(QualityReport.status == status)
    if dataset:
        q = q.where(QualityReport.dataset_id == dataset)
    now = state.clock.now()
    out = [feedback.report_out(r, now) for r in session.scalars(q)]
    return [r for r in out if r["overdue"]] if overdue else out


def _report(session: Session, guard: Guard, report_id: str) -> QualityReport:
    return guard.owned(session, QualityReport, report_id, owner=lambda r: r.provider_org_id, kind="quality_report")


@router.get("/quality/reports/{report_id}")
def get_report(report_id: str, guard: Guard = require("quality_report", "read"),
               session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """One report: readable by its dataset's provider and the agency only."""
    return feedback.report_out(_report(session, guard, report_id), state.clock.now())


@router.post("/quality/reports/{report_id}/answer")
def answer_report(report_id: str, body: AnswerIn, guard: Guard = require("quality_report", "answer"),
                  session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """The provider answers: acknowledged, fixed_in_version N, or not_a_defect with a reason."""
    report = _report(session, guard, report_id)
    before = report.status
    feedback.answer(session, report, kind=body.answer, reason=body.reason, fixed_in_version=body.fixed_in_version,
                    actor_id=guard.caller.principal_id, now=state.clock.now())
    guard.note(report=report.id, answer=body.answer, from_status=before, to_status=report.status,
               fixed_in_version=report.fixed_in_version)
    return feedback.report_out(report, state.clock.now())


@router.get("/quality/stats")
def quality_stats(guard: Guard = require("quality_stats", "read"), session: Session = SESSION,
                  state: AppState = Depends(app_state), since: datetime | None = Query(None),
                  until: datetime | None = Query(None), provider: str | None = Query(None)) -> dict[str, Any]:
    """Feedback counts and median time to resolve (for disclosure); providers see their own."""
    if not guard.any_org:
        if provider not in (None, guard.caller.org_id):
            guard.check(provider, f"org/{provider}")
        provider = guard.caller.org_id
    return feedback.stats(session, now=state.clock.now(), provider_org_id=provider, since=_aware(since, "since"),
                          until=_aware(until, "until"))
