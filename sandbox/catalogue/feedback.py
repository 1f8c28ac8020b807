"""Quality feedback (质量问题反馈): reports filed in use, answered by the provider, counted for disclosure.

A report's text is stored and shown to the provider and the agency only. It is never matched against the
data: a match (or a different answer when it matches) would make a membership oracle over hidden values.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sandbox.catalogue.registry import CERTIFIED, get_version
from sandbox.errors import Conflict, InvalidInput
from sandbox.store.models import Dataset, DatasetVersion, QualityReport
from sandbox.store.types import new_id

MAX_DESCRIPTION = 4000


class ReportCategory(StrEnum):
    """What kind of quality problem a report is about."""

    MISSING_VALUES = "missing_values"
    WRONG_VALUES = "wrong_values"
    DUPLICATES = "duplicates"
    STALE_DATA = "stale_data"
    SCHEMA = "schema"  # types, column meanings, units
    DOCUMENTATION = "documentation"
    OTHER = "other"


class ReportStatus(StrEnum):
    """Where a report is: open until answered; fixed and not_a_defect resolve it."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    FIXED = "fixed"
    NOT_A_DEFECT = "not_a_defect"


class Answer(StrEnum):
    """How a provider answers a report."""

    ACKNOWLEDGED = "acknowledged"
    FIXED_IN_VERSION = "fixed_in_version"
    NOT_A_DEFECT = "not_a_defect"


_MOVES: dict[ReportStatus | None, frozenset[ReportStatus]] = {
    None: frozenset({ReportStatus.OPEN}),
    ReportStatus.OPEN: frozenset({ReportStatus.ACKNOWLEDGED, ReportStatus.FIXED, ReportStatus.NOT_A_DEFECT}),
    ReportStatus.ACKNOWLEDGED: frozenset({ReportStatus.FIXED, ReportStatus.NOT_A_DEFECT}),
    ReportStatus.FIXED: frozenset(),
    ReportStatus.NOT_A_DEFECT: frozenset(),
}
RESOLVED = frozenset({ReportStatus.FIXED, ReportStatus.NOT_A_DEFECT})


def _set_status(report: QualityReport, to: ReportStatus, *, now: datetime, actor_id: str | None = None) -> None:
    """The one function that changes a report's status; stamps first answer and resolution times."""
    current = ReportStatus(report.status) if report.status else None
    if to not in _MOVES[current]:
        raise Conflict(f"quality report {report.id} is {report.status}; it cannot become {to.value}",
                       code="invalid_report_transition", status=report.status)
    report.status = to.value
    if current is not None and report.answered_at is None:
        report.answered_at, report.answered_by = now, actor_id
    if to in RESOLVED:
        report.resolved_at = now


def file_report(session: Session, *, dataset_id: str, version: int | None, category: str, column: str | None,
                description: str, filed_by: str, filer_org_id: str, now: datetime, deadline: timedelta
                ) -> QualityReport:
    """Store a report against a certified (or since revoked) version; the text is never compared with data."""
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise InvalidInput(f"dataset {dataset_id} does not exist", code="dataset_not_found")
    if version is None:
        found = session.scalar(select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.registration_state == CERTIFIED)
            .order_by(DatasetVersion.version.desc()).limit(1))
        if found is None:
            raise Conflict(f"dataset {dataset_id} has no certified version to report on",
                           code="version_not_in_use")
        v = found
    else:
        v = get_version(session, dataset_id, version)
        if v.registration_state not in (CERTIFIED, "revoked"):
            raise Conflict(f"{dataset_id} v{version} is {v.registration_state}; reports are about versions in use",
                           code="version_not_in_use")
    try:
        cat = ReportCategory(category)
    except ValueError:
        raise InvalidInput(f"category must be one of {', '.join(ReportCategory)}", code="invalid_category") from None
    if column is not None and column not in {c["name"] for c in v.columns}:
        raise InvalidInput(f"{dataset_id} v{v.version} has no column {column}", code="unknown_column", column=column)
    text = description.strip()
    if not text or len(text) > MAX_DESCRIPTION:
        raise InvalidInput(f"a report needs a description of 1-{MAX_DESCRIPTION} characters",
                           code="invalid_description")
    report = QualityReport(id=new_id("qr"), version_id=v.id, dataset_id=dataset_id, version=v.version,
                           provider_org_id=ds.provider_org_id, filed_by=filed_by, filer_org_id=filer_org_id,
                           category=cat.value, column=column, description=text, status="", answer_reason="",
                           created_at=now, due_at=now + deadline)
    _set_status(report, ReportStatus.OPEN, now=now)
    session.add(report)
    session.flush()
    return report


def answer(session: Session, report: QualityReport, *, kind: str, reason: str, fixed_in_version: int | None,
           actor_id: str, now: datetime) -> QualityReport:
    """The provider's answer: acknowledged, fixed_in_version N (a later version), or not_a_defect with a reason."""
    try:
        how = Answer(kind)
    except ValueError:
        raise InvalidInput(f"answer must be one of {', '.join(Answer)}", code="invalid_answer") from None
    text = reason.strip()
    if how == Answer.FIXED_IN_VERSION:
        if fixed_in_version is None or fixed_in_version <= report.version:
            raise InvalidInput(f"fixed_in_version names a version after {report.version}",
                               code="invalid_fixed_in_version")
        get_version(session, report.dataset_id, fixed_in_version)
        report.fixed_in_version = fixed_in_version
        _set_status(report, ReportStatus.FIXED, now=now, actor_id=actor_id)
    elif fixed_in_version is not None:
        raise InvalidInput("fixed_in_version goes only with the fixed_in_version answer",
                           code="invalid_fixed_in_version")
    elif how == Answer.NOT_A_DEFECT:
        if not text:
            raise InvalidInput("not_a_defect needs a reason", code="reason_required")
        _set_status(report, ReportStatus.NOT_A_DEFECT, now=now, actor_id=actor_id)
    else:
        _set_status(report, ReportStatus.ACKNOWLEDGED, now=now, actor_id=actor_id)
    report.answer_reason = text
    session.flush()
    return report


def is_overdue(report: QualityReport, now: datetime) -> bool:
    """An open report past its deadline: flagged to the agency."""
    return report.status == ReportStatus.OPEN and now > report.due_at


def report_out(r: QualityReport, now: datetime) -> dict[str, Any]:
    """A report as its provider and the agency see it."""
    return {"id": r.id, "dataset": r.dataset_id, "version": r.version, "provider_org_id": r.provider_org_id,
            "filed_by": r.filed_by, "filer_org_id": r.filer_org_id, "category": r.category, "column": r.column,
            "description": r.description, "status": r.status, "answer_reason": r.answer_reason,
            "fixed_in_version": r.fixed_in_version, "created_at": r.created_at.isoformat(),
            "due_at": r.due_at.isoformat(), "overdue": is_overdue(r, now),
            "answered_at": r.answered_at.isoformat() if r.answered_at else None, "answered_by": r.answered_by,
            "resolved_at": r.resolved_at.isoformat() if r.resolved_at else None}


def receipt(r: QualityReport) -> dict[str, Any]:
    """What the filer gets back: the report's id and deadline, never the provider's answer."""
    return {"id": r.id, "dataset": r.dataset_id, "version": r.version, "category": r.category, "column": r.column,
            "status": r.status, "created_at": r.created_at.isoformat(), "due_at": r.due_at.isoformat()}


def stats(session: Session, *, now: datetime, provider_org_id: str | None = None, since: datetime | None = None,
          until: datetime | None = None) -> dict[str, Any]:
    """Counts and median times over reports filed in [since, until): what disclosure reports publish.

    `median_time_to_resolve_seconds` runs from filing to fixed/not_a_defect, over resolved reports only;
    `median_time_to_answer_seconds` from filing to the first answer of any kind.
    """
    q = select(QualityReport)
    if provider_org_id is not None:
        q = q.where(QualityReport.provider_org_id == provider_org_id)
    if since is not None:
        q = q.where(QualityReport.created_at >= since)
    if until is not None:
        q = q.where(QualityReport.created_at < until)
    reports = list(session.scalars(q))
    by_status = {s.value: 0 for s in ReportStatus}
    by_category = {c.value: 0 for c in ReportCategory}
    for r in reports:
        by_status[r.status] += 1
        by_category[r.category] += 1
    resolve = [(r.resolved_at - r.created_at).total_seconds() for r in reports if r.resolved_at is not None]
    first = [(r.answered_at - r.created_at).total_seconds() for r in reports if r.answered_at is not None]
    return {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
            "provider_org_id": provider_org_id, "filed": len(reports), "by_status": by_status,
            "by_category": by_category, "resolved": len(resolve),
            "overdue": sum(1 for r in reports if is_overdue(r, now)),
            "median_time_to_resolve_seconds": statistics.median(resolve) if resolve else None,
            "median_time_to_answer_seconds": statistics.median(first) if first else None}
