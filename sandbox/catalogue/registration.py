"""The registration workflow (申请、受理、审查、公示、凭证签发): one state enum, one function that changes it.

A dataset version is an application until the agency certifies it. `_move` is the only code that changes
`registration_state`; every handler below asserts the state it expects, and every move appends a
`RegistrationEvent` (the route that called it adds the audit row). See docs/registration.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from disclosure.signing import KeyRing
from policy.constraints import Constraint, Grade, tighten
from policy.errors import ConstraintLoosening
from sandbox.catalogue import certificates, registry
from sandbox.catalogue.importer import ImportOptions
from sandbox.errors import Conflict, Forbidden, InvalidInput, NotFound
from sandbox.store.models import (
    Certificate,
    Dataset,
    DatasetVersion,
    Organization,
    RegistrationEvent,
    RegistrationObjection,
)
from sandbox.store.types import new_id


class RegistrationState(StrEnum):
    """Where a dataset version is in its registration."""

    APPLIED = "applied"  # filed by the provider's data steward (申请)
    ACCEPTED = "accepted"  # taken in by the agency (受理)
    RETURNED = "returned"  # sent back with the reason and the fields to correct
    UNDER_REVIEW = "under_review"  # examined by an agency reviewer who did not accept it (审查)
    IN_PUBLIC_NOTICE = "in_public_notice"  # listed publicly; objections may be filed (公示)
    CERTIFIED = "certified"  # certificate issued (凭证签发); the only state that can be granted or queried
    WITHDRAWN = "withdrawn"  # by the provider, before certification
    REJECTED = "rejected"  # by the agency reviewer
    REVOKED = "revoked"  # certificate cancelled later, with a reason (注销)


class RegistrationPath(StrEnum):
    """Which steps a version goes through."""

    FULL = "full"  # accept, review, public notice, issue
    METADATA_CHANGE = "metadata_change"  # same data, nothing loosened: accept, review, issue (no notice)
    CERTIFY_NOW = "certify_now"  # demo/test shortcut by an agency admin, audited as such
    MIGRATED = "migrated"  # registered and certified at once before the workflow existed


class ObjectionStatus(StrEnum):
    OPEN = "open"
    DISMISSED = "dismissed"
    UPHELD = "upheld"


S = RegistrationState
IN_FLIGHT = frozenset({S.APPLIED, S.ACCEPTED, S.UNDER_REVIEW, S.IN_PUBLIC_NOTICE})

# state -> states it may move to
_MOVES: dict[RegistrationState | None, frozenset[RegistrationState]] = {
    None: frozenset({S.APPLIED}),
    S.APPLIED: frozenset({S.ACCEPTED, S.RETURNED, S.WITHDRAWN, S.CERTIFIED}),
    S.ACCEPTED: frozenset({S.UNDER_REVIEW, S.RETURNED, S.WITHDRAWN}),
    S.UNDER_REVIEW: frozenset({S.IN_PUBLIC_NOTICE, S.CERTIFIED, S.RETURNED, S.REJECTED, S.WITHDRAWN}),
    S.IN_PUBLIC_NOTICE: frozenset({S.CERTIFIED, S.RETURNED, S.WITHDRAWN}),
    S.CERTIFIED: frozenset({S.REVOKED}),
    S.RETURNED: frozenset({S.WITHDRAWN}),
    S.WITHDRAWN: frozenset(),
    S.REJECTED: frozenset(),
    S.REVOKED: frozenset(),
}

# Fields a return may name for correction (plus `columns.<name>` for a column of the version).
RETURNABLE_FIELDS = ("data", "title", "description", "domain", "grade", "update_frequency", "entity_column",
                     "freshness_column", "expectations", "columns")
_GRADE_RANK = {Grade.GENERAL: 0, Grade.IMPORTANT: 1, Grade.CORE: 2}


def _state(version: DatasetVersion) -> RegistrationState | None:
    return RegistrationState(version.registration_state) if version.registration_state else None


def _move(session: Session, version: DatasetVersion, to: RegistrationState, *, action: str, actor_id: str,
          now: datetime, reason: str = "", detail: dict[str, Any] | None = None) -> RegistrationEvent:
    """The one function that changes a version's registration state; it stamps the dates and records why."""
    current = _state(version)
    if to not in _MOVES[current]:
        raise Conflict(f"{version.dataset_id} v{version.version} is {version.registration_state or 'new'}; "
                       f"it cannot become {to.value}", code="invalid_registration_transition",
                       state=version.registration_state, to=to.value)
    version.registration_state = to.value
    if to == S.APPLIED:
        version.applied_at = now
    elif to == S.ACCEPTED:
        version.accepted_at, version.accepted_by = now, actor_id
    elif to == S.UNDER_REVIEW:
        version.review_started_at, version.reviewed_by = now, actor_id
    elif to == S.CERTIFIED:
        version.certified_at = now
    elif to in (S.RETURNED, S.WITHDRAWN, S.REJECTED, S.REVOKED):
        version.closed_at = now
    if reason:
        version.state_reason = reason
    event = RegistrationEvent(version_id=version.id, at=now, actor_id=actor_id, action=action,
                              from_state=current.value if current else None, to_state=to.value, reason=reason,
                              detail=detail or {})
    session.add(event)
    session.flush()
    return event


def _expect(version: DatasetVersion, *states: RegistrationState) -> None:
    if _state(version) not in states:
        raise Conflict(f"{version.dataset_id} v{version.version} is {version.registration_state}; this step needs "
                       f"{' or '.join(s.value for s in states)}", code="wrong_registration_state",
                       state=version.registration_state, expected=[s.value for s in states])


def _need(text: str, what: str) -> str:
    if not text.strip():
        raise InvalidInput(f"{what} needs a reason", code="reason_required")
    return text.strip()


def _not_accepter(version: DatasetVersion, actor_id: str) -> None:
    if version.accepted_by == actor_id:
        raise Forbidden("the reviewer of a registration is never the agency principal who accepted it",
                        code="self_review", accepted_by=actor_id)


# --- application ----------------------------------------------------------------------------------------

def in_flight(session: Session, dataset_id: str) -> DatasetVersion | None:
    """A version of the dataset that is still being registered (applied ... in public notice), if any."""
    return session.scalar(select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset_id,
        DatasetVersion.registration_state.in_([s.value for s in IN_FLIGHT])))


def _loosens(new: DatasetVersion, old: DatasetVersion) -> str | None:
    """Why `new` is not a metadata-only tightening of `old`, or None if it is."""
    if new.parquet_sha256 != old.parquet_sha256:
        return "the data changed"
    if _GRADE_RANK[Grade(new.grade)] < _GRADE_RANK[Grade(old.grade)]:
        return "the grade is lower"
    if new.entity_column != old.entity_column:
        return "the entity column changed"
    before = {c["name"]: c for c in old.columns}
    for col in new.columns:
        prev = before.get(col["name"])
        if prev is None:
            return f"column {col['name']} is new"
        try:
            tighten(Constraint(prev["constraint"]), Constraint(col["constraint"]), column=col["name"])
        except ConstraintLoosening:
            return f"column {col['name']} is looser ({prev['constraint']} -> {col['constraint']})"
        if prev.get("mask") and prev.get("mask") != col.get("mask"):
            return f"column {col['name']} lost or changed its mask"
        if not set(prev.get("tags") or ()) <= set(col.get("tags") or ()):
            return f"column {col['name']} lost a sensitivity tag"
    return None


def submit(session: Session, *, paths: registry.Paths, provider: Organization, dataset_id: str,
           meta: registry.DatasetMeta, source: Path | None, source_name: str, options: ImportOptions,
           now: datetime, actor_id: str, **kwargs: Any) -> DatasetVersion:
    """File an application: store and profile a new version (registry.register) and put it in `applied`.

    A version with the same data as the latest certified one that loosens nothing takes the shorter
    `metadata_change` path (no public notice). Only one version of a dataset is registered at a time.
    """
    pending = in_flight(session, dataset_id)
    if pending is not None:
        raise Conflict(f"{dataset_id} v{pending.version} is still being registered ({pending.registration_state}); "
                       "withdraw it or wait for its outcome before filing another version",
                       code="registration_in_progress", version=pending.version)
    version = registry.register(session, paths=paths, provider=provider, dataset_id=dataset_id, meta=meta,
                                source=source, source_name=source_name, options=options, now=now,
                                actor_id=actor_id, **kwargs)
    current = registry.latest_certified_version(session, dataset_id)
    why = "first registration" if current is None else _loosens(version, current)
    version.registration_path = (RegistrationPath.FULL if why else RegistrationPath.METADATA_CHANGE).value
    _move(session, version, S.APPLIED, action="apply", actor_id=actor_id, now=now,
          detail={"path": version.registration_path, "full_path_because": why,
                  "findings": len(version.quality.get("findings", []))})
    return version


# --- agency steps ---------------------------------------------------------------------------------------

def accept(session: Session, version: DatasetVersion, *, actor_id: str, now: datetime, comment: str = ""
           ) -> RegistrationEvent:
    """受理: the agency takes the application in."""
    _expect(version, S.APPLIED)
    return _move(session, version, S.ACCEPTED, action="accept", actor_id=actor_id, now=now, reason=comment.strip())


def return_for_correction(session: Session, version: DatasetVersion, *, actor_id: str, now: datetime, reason: str,
                          fields: Sequence[str]) -> RegistrationEvent:
    """Send the application back with the reason and the fields to correct (a new version corrects them)."""
    _expect(version, S.APPLIED, S.ACCEPTED, S.UNDER_REVIEW)
    if _state(version) == S.UNDER_REVIEW:
        _not_accepter(version, actor_id)
    names = {c["name"] for c in version.columns}
    if not fields:
        raise InvalidInput("a return names the fields to correct", code="fields_required")
    bad = [f for f in fields if f not in RETURNABLE_FIELDS and not (f.startswith("columns.") and f[8:] in names)]
    if bad:
        raise InvalidInput(f"unknown fields {', '.join(bad)}; use {', '.join(RETURNABLE_FIELDS)} or "
                           "columns.<name>", code="invalid_return_fields", fields=bad)
    version.return_fields = sorted(set(fields))
    return _move(session, version, S.RETURNED, action="return", actor_id=actor_id, now=now,
                 reason=_need(reason, "a return"), detail={"fields": version.return_fields})


def start_review(session: Session, version: DatasetVersion, *, actor_id: str, now: datetime) -> RegistrationEvent:
    """审查 begins: a reviewer who did not accept the application takes it."""
    _expect(version, S.ACCEPTED)
    _not_accepter(version, actor_id)
    return _move(session, version, S.UNDER_REVIEW, action="start_review", actor_id=actor_id, now=now,
                 detail={"findings": version.quality.get("findings", [])})


def approve(session: Session, version: DatasetVersion, *, actor_id: str, now: datetime, comment: str,
            acknowledge_findings: bool, notice: timedelta, keyring: KeyRing, provider: Organization
            ) -> RegistrationEvent:
    """The review passes: public notice for `notice` (full path), or the certificate at once (metadata path)."""
    _expect(version, S.UNDER_REVIEW)
    _not_accepter(version, actor_id)
    findings = version.quality.get("findings", [])
    if findings and not acknowledge_findings:
        raise InvalidInput(f"the quality self-check has {len(findings)} findings; read them "
                           "(GET the registration) and approve with acknowledge_findings=true",
                           code="findings_not_acknowledged", findings=len(findings))
    version.reviewed_at = now
    detail = {"comment": comment.strip(), "findings_acknowledged": len(findings)}
    if version.registration_path == RegistrationPath.METADATA_CHANGE:
        event = _move(session, version, S.CERTIFIED, action="approve", actor_id=actor_id, now=now,
                      reason=_need(comment, "an approval"), detail=detail)
        _issue_certificate(session, keyring, version, provider, now)
        return event
    version.notice_started_at, version.notice_ends_at = now, now + notice
    return _move(session, version, S.IN_PUBLIC_NOTICE, action="approve", actor_id=actor_id, now=now,
                 reason=_need(comment, "an approval"),
                 detail={**detail, "notice_ends_at": version.notice_ends_at.isoformat()})


def reject(session: Session, version: DatasetVersion, *, actor_id: str, now: datetime, reason: str
           ) -> RegistrationEvent:
    """The review fails for good."""
    _expect(version, S.UNDER_REVIEW)
    _not_accepter(version, actor_id)
    return _move(session, version, S.REJECTED, action="reject", actor_id=actor_id, now=now,
                 reason=_need(reason, "a rejection"))


def withdraw(session: Session, version: DatasetVersion, *, actor_id: str, now: datetime, reason: str
             ) -> RegistrationEvent:
    """The provider withdraws its application before certification."""
    _expect(version, *IN_FLIGHT, S.RETURNED)
    return _move(session, version, S.WITHDRAWN, action="withdraw", actor_id=actor_id, now=now,
                 reason=_need(reason, "a withdrawal"))


def open_objections(session: Session, version: DatasetVersion) -> int:
    """How many objections to the version are not resolved yet."""
    return int(session.scalar(select(func.count()).select_from(RegistrationObjection).where(
        RegistrationObjection.version_id == version.id, RegistrationObjection.status == ObjectionStatus.OPEN)) or 0)


def issue(session: Session, version: DatasetVersion, *, actor_id: str, now: datetime, keyring: KeyRing,
          provider: Organization) -> Certificate:
    """凭证签发: after the notice period, with every objection resolved, issue the certificate."""
    _expect(version, S.IN_PUBLIC_NOTICE)
    assert version.notice_ends_at is not None
    if now < version.notice_ends_at:
        raise Conflict(f"the public notice of {version.dataset_id} v{version.version} runs until "
                       f"{version.notice_ends_at.isoformat()}", code="notice_period_running",
                       notice_ends_at=version.notice_ends_at.isoformat())
    pending = open_objections(session, version)
    if pending:
        raise Conflict(f"{pending} objection(s) to {version.dataset_id} v{version.version} are not resolved",
                       code="objection_open", open_objections=pending)
    _move(session, version, S.CERTIFIED, action="issue", actor_id=actor_id, now=now)
    return _issue_certificate(session, keyring, version, provider, now)


def certify_now(session: Session, version: DatasetVersion, *, actor_id: str, now: datetime, keyring: KeyRing,
                provider: Organization, reason: str) -> Certificate:
    """The demo/test shortcut: an agency admin certifies an application at once, skipping every step."""
    _expect(version, S.APPLIED)
    version.registration_path = RegistrationPath.CERTIFY_NOW.value
    _move(session, version, S.CERTIFIED, action="certify_now", actor_id=actor_id, now=now,
          reason=_need(reason, "certify_now"), detail={"shortcut": True})
    return _issue_certificate(session, keyring, version, provider, now)


def revoke(session: Session, version: DatasetVersion, *, actor_id: str, now: datetime, reason: str
           ) -> list[str]:
    """注销: revoke the certificate and stop every job pinned to this version; returns the stopped job ids."""
    from sandbox.jobs import stop_jobs_on_version  # jobs -> grants -> registry; this module sits above them

    _expect(version, S.CERTIFIED)
    text = _need(reason, "a revocation")
    cert = session.get(Certificate, version.certificate_code) if version.certificate_code else None
    if cert is not None:
        cert.revoked_at, cert.revoked_reason = now, text
    stopped = stop_jobs_on_version(session, version.dataset_id, version.version, now=now,
                                   reason=f"the registration of {version.dataset_id} v{version.version} was "
                                          f"revoked: {text}")
    _move(session, version, S.REVOKED, action="revoke", actor_id=actor_id, now=now, reason=text,
          detail={"certificate": version.certificate_code, "stopped_jobs": stopped})
    return stopped


# --- objections -----------------------------------------------------------------------------------------

def file_objection(session: Session, version: DatasetVersion, *, actor_id: str, actor_org_id: str, now: datetime,
                   reason: str) -> RegistrationObjection:
    """异议: anyone with a key objects during the notice period; certification waits for its resolution."""
    _expect(version, S.IN_PUBLIC_NOTICE)
    assert version.notice_ends_at is not None
    if now >= version.notice_ends_at:
        raise Conflict("the public notice period is over; objections are no longer taken",
                       code="notice_period_over", notice_ends_at=version.notice_ends_at.isoformat())
    objection = RegistrationObjection(id=new_id("obj"), version_id=version.id, filed_by=actor_id,
                                      filer_org_id=actor_org_id, reason=_need(reason, "an objection"), filed_at=now,
                                      status=ObjectionStatus.OPEN.value)
    session.add(objection)
    session.add(RegistrationEvent(version_id=version.id, at=now, actor_id=actor_id, action="object",
                                  from_state=version.registration_state, to_state=version.registration_state,
                                  reason="", detail={"objection": objection.id}))
    session.flush()
    return objection


def resolve_objection(session: Session, version: DatasetVersion, objection: RegistrationObjection, *,
                      actor_id: str, now: datetime, outcome: str, resolution: str) -> RegistrationObjection:
    """A reviewer (not the accepter) dismisses or upholds an objection; upholding returns the application."""
    _expect(version, S.IN_PUBLIC_NOTICE)
    _not_accepter(version, actor_id)
    if objection.version_id != version.id:
        raise NotFound(f"objection {objection.id} is not about this registration", code="objection_not_found")
    if objection.status != ObjectionStatus.OPEN:
        raise Conflict(f"objection {objection.id} is already {objection.status}", code="objection_resolved")
    try:
        status = {"dismiss": ObjectionStatus.DISMISSED, "uphold": ObjectionStatus.UPHELD}[outcome]
    except KeyError:
        raise InvalidInput("outcome must be dismiss or uphold", code="invalid_objection_outcome") from None
    objection.status, objection.resolution = status.value, _need(resolution, "a resolution")
    objection.resolved_by, objection.resolved_at = actor_id, now
    if status == ObjectionStatus.UPHELD:
        version.return_fields = ["data"]
        _move(session, version, S.RETURNED, action="uphold_objection", actor_id=actor_id, now=now,
              reason=f"objection upheld: {objection.resolution}", detail={"objection": objection.id})
    else:
        session.add(RegistrationEvent(version_id=version.id, at=now, actor_id=actor_id, action="dismiss_objection",
                                      from_state=version.registration_state, to_state=version.registration_state,
                                      reason=objection.resolution, detail={"objection": objection.id}))
    session.flush()
    return objection


# --- certificates ---------------------------------------------------------------------------------------

def _next_certificate_seq(session: Session, year: int) -> int:
    current = session.scalar(select(func.max(Certificate.seq)).where(Certificate.year == year))
    return int(current or 0) + 1


def _issue_certificate(session: Session, keyring: KeyRing, version: DatasetVersion, provider: Organization,
                       now: datetime) -> Certificate:
    assert version.registration_state == S.CERTIFIED
    seq = _next_certificate_seq(session, now.year)
    code = certificates.format_code(now.year, seq)
    version.certificate_code = code
    body = registry.certificate_metadata(version, provider)
    document, kid = certificates.issue(keyring, code=code, issued_at=now, metadata=body)
    cert = Certificate(code=code, year=now.year, seq=seq, dataset_id=version.dataset_id, version=version.version,
                       kid=kid, issued_at=now, document=document.decode("utf-8"))
    session.add(cert)
    session.flush()
    return cert


# --- reading --------------------------------------------------------------------------------------------

def events(session: Session, version: DatasetVersion) -> list[RegistrationEvent]:
    """The version's registration history, oldest first."""
    return list(session.scalars(select(RegistrationEvent).where(RegistrationEvent.version_id == version.id)
                                .order_by(RegistrationEvent.id)))


def objections(session: Session, version: DatasetVersion) -> list[RegistrationObjection]:
    """The version's objections, oldest first."""
    return list(session.scalars(select(RegistrationObjection).where(RegistrationObjection.version_id == version.id)
                                .order_by(RegistrationObjection.filed_at, RegistrationObjection.id)))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def public_objection(o: RegistrationObjection) -> dict[str, Any]:
    """An objection as the public sees it: its status and resolution, never its text or filer."""
    return {"id": o.id, "filed_at": o.filed_at.isoformat(), "status": o.status, "resolution": o.resolution,
            "resolved_at": _iso(o.resolved_at)}


def registration_out(session: Session, version: DatasetVersion, provider_name: str | None, *, now: datetime,
                     detail: bool = False) -> dict[str, Any]:
    """A registration as the provider, the agency and regulators see it (findings, history, objections)."""
    out: dict[str, Any] = {
        "dataset": version.dataset_id, "version": version.version, "title": version.title,
        "provider": provider_name, "grade": version.grade, "domain": version.domain,
        "state": version.registration_state, "path": version.registration_path, "reason": version.state_reason,
        "return_fields": version.return_fields, "certificate_code": version.certificate_code,
        "dates": {"applied_at": _iso(version.applied_at), "accepted_at": _iso(version.accepted_at),
                  "review_started_at": _iso(version.review_started_at), "reviewed_at": _iso(version.reviewed_at),
                  "notice_started_at": _iso(version.notice_started_at),
                  "notice_ends_at": _iso(version.notice_ends_at), "certified_at": _iso(version.certified_at),
                  "closed_at": _iso(version.closed_at)},
        "accepted_by": version.accepted_by, "reviewed_by": version.reviewed_by,
        "findings": version.quality.get("findings", []),
        "notice_over": bool(version.notice_ends_at is not None and now >= version.notice_ends_at),
    }
    if detail:
        out["metadata"] = dict(registry.describe(version, provider_name))
        out["quality"] = version.quality
        out["events"] = [{"at": e.at.isoformat(), "actor_id": e.actor_id, "action": e.action, "from": e.from_state,
                          "to": e.to_state, "reason": e.reason, "detail": e.detail} for e in events(session, version)]
        out["objections"] = [{**public_objection(o), "reason": o.reason, "filed_by": o.filed_by,
                              "filer_org_id": o.filer_org_id, "resolved_by": o.resolved_by}
                             for o in objections(session, version)]
    return out


def notice_out(session: Session, version: DatasetVersion, provider_name: str | None, *, now: datetime
               ) -> dict[str, Any]:
    """A public notice (公示): metadata and grade, column names and constraints, never data values."""
    assert version.notice_ends_at is not None
    return {
        "dataset": version.dataset_id, "version": version.version, "title": version.title,
        "description": version.description, "domain": version.domain, "grade": version.grade,
        "update_frequency": version.update_frequency, "provider": provider_name, "row_count": version.row_count,
        "columns": [{k: c.get(k) for k in ("name", "type", "constraint", "tags", "mask", "description")}
                    for c in version.columns],
        "applied_at": _iso(version.applied_at), "notice_started_at": _iso(version.notice_started_at),
        "notice_ends_at": version.notice_ends_at.isoformat(), "notice_over": now >= version.notice_ends_at,
        "objections": [public_objection(o) for o in objections(session, version)],
    }


def notices(session: Session) -> list[DatasetVersion]:
    """Versions in public notice, oldest notice first."""
    return list(session.scalars(select(DatasetVersion).where(
        DatasetVersion.registration_state == S.IN_PUBLIC_NOTICE.value)
        .order_by(DatasetVersion.notice_started_at, DatasetVersion.id)))


def provider_of(session: Session, version: DatasetVersion) -> Organization:
    """The providing organization of a version's dataset."""
    ds = session.get(Dataset, version.dataset_id)
    assert ds is not None
    org = session.get(Organization, ds.provider_org_id)
    assert org is not None
    return org
