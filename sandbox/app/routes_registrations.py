"""The registration workflow: applications, agency steps, public notices, objections, revocation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from sandbox.app.deps import SESSION, AppState, Guard, app_state, public, require
from sandbox.app.schemas import StrictModel
from sandbox.audit import AuditDraft
from sandbox.catalogue import registration, registry
from sandbox.catalogue.registration import RegistrationState
from sandbox.errors import InvalidInput, NotFound
from sandbox.store.models import Dataset, DatasetVersion, Organization, RegistrationObjection

router = APIRouter(prefix="/v1", tags=["registrations"])


class CommentIn(StrictModel):
    comment: str = ""


class ReasonIn(StrictModel):
    reason: str = Field(min_length=1)


class ReturnIn(StrictModel):
    reason: str = Field(min_length=1)
    fields: list[str] = Field(min_length=1, description="fields to correct: data, title, grade, columns.<name>, ...")


class ApproveIn(StrictModel):
    comment: str = Field(min_length=1)
    acknowledge_findings: bool = Field(False, description="required when the quality self-check has findings")


class ObjectionIn(StrictModel):
    reason: str = Field(min_length=1, max_length=4000)


class ResolveIn(StrictModel):
    outcome: str = Field(description="dismiss or uphold (upholding returns the application to the provider)")
    resolution: str = Field(min_length=1, description="published with the notice")


def _names(session: Session) -> dict[str, str]:
    return {row[0]: row[1] for row in session.execute(select(Organization.id, Organization.name))}


def _owner(session: Session, dataset_id: str) -> str | None:
    ds = session.get(Dataset, dataset_id)
    return ds.provider_org_id if ds else None


def _version(session: Session, guard: Guard, dataset_id: str, version: int) -> DatasetVersion:
    guard.check(_owner(session, dataset_id), f"registration/{dataset_id}/{version}")
    return registry.get_version(session, dataset_id, version)


def _out(session: Session, state: AppState, v: DatasetVersion) -> dict[str, Any]:
    provider = registration.provider_of(session, v)
    return registration.registration_out(session, v, provider.name, now=state.clock.now(), detail=True)


def _step(guard: Guard, v: DatasetVersion, before: str, **extra: Any) -> None:
    guard.note(dataset=v.dataset_id, version=v.version, from_state=before, to_state=v.registration_state, **extra)


@router.get("/registrations/notices")
def public_notices(audit: AuditDraft = public("registration:notices"),
                   session: Session = SESSION, state: AppState = Depends(app_state)
                   ) -> list[dict[str, Any]]:
    """Registrations in public notice (公示): metadata and grade, never data values. No key needed."""
    names = _names(session)
    now = state.clock.now()
    notices = registration.notices(session)
    audit.note(notices_listed=len(notices))
    return [registration.notice_out(session, v, names.get(_owner(session, v.dataset_id) or ""), now=now)
            for v in notices]


@router.get("/registrations")
def list_registrations(guard: Guard = require("registration", "read"),
                       session: Session = SESSION, state: AppState = Depends(app_state),
                       state_filter: str | None = Query(None, alias="state")) -> list[dict[str, Any]]:
    """Registrations the caller may see: a provider its own, the agency and regulators all."""
    q = select(DatasetVersion, Dataset).join(Dataset, Dataset.id == DatasetVersion.dataset_id).order_by(
        DatasetVersion.applied_at, DatasetVersion.id)
    if not guard.any_org:
        q = q.where(Dataset.provider_org_id == guard.caller.org_id)
    if state_filter:
        try:
            RegistrationState(state_filter)
        except ValueError:
            raise InvalidInput(f"state must be one of {', '.join(RegistrationState)}", code="invalid_state") from None
        q = q.where(DatasetVersion.registration_state == state_filter)
    names, now = _names(session), state.clock.now()
    return [registration.registration_out(session, v, names.get(d.provider_org_id), now=now)
            for v, d in session.execute(q)]


@router.get("/registrations/{dataset_id}/{version}")
def get_registration(dataset_id: str, version: int, guard: Guard = require("registration", "read"),
                     session: Session = SESSION, state: AppState = Depends(app_state)
                     ) -> dict[str, Any]:
    """One registration: state, dates, quality profile and findings, history and objections."""
    return _out(session, state, _version(session, guard, dataset_id, version))


@router.post("/registrations/{dataset_id}/{version}/accept")
def accept(dataset_id: str, version: int, body: CommentIn | None = None,
           guard: Guard = require("registration", "accept"), session: Session = SESSION,
           state: AppState = Depends(app_state)) -> dict[str, Any]:
    """受理: the agency accepts the application."""
    v = _version(session, guard, dataset_id, version)
    before = v.registration_state
    registration.accept(session, v, actor_id=guard.caller.principal_id, now=state.clock.now(),
                        comment=body.comment if body else "")
    _step(guard, v, before)
    return _out(session, state, v)


@router.post("/registrations/{dataset_id}/{version}/return")
def return_application(dataset_id: str, version: int, body: ReturnIn,
                       guard: Guard = require("registration", "accept"),
                       session: Session = SESSION, state: AppState = Depends(app_state)
                       ) -> dict[str, Any]:
    """Return the application with the reason and the fields to correct."""
    v = _version(session, guard, dataset_id, version)
    before = v.registration_state
    registration.return_for_correction(session, v, actor_id=guard.caller.principal_id, now=state.clock.now(),
                                       reason=body.reason, fields=body.fields)
    _step(guard, v, before, reason=body.reason, fields=v.return_fields)
    return _out(session, state, v)


@router.post("/registrations/{dataset_id}/{version}/start-review")
def start_review(dataset_id: str, version: int, guard: Guard = require("registration", "review"),
                 session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """审查: a reviewer other than the accepter takes the application; the answer carries the findings."""
    v = _version(session, guard, dataset_id, version)
    before = v.registration_state
    registration.start_review(session, v, actor_id=guard.caller.principal_id, now=state.clock.now())
    _step(guard, v, before, findings=len(v.quality.get("findings", [])))
    return _out(session, state, v)


@router.post("/registrations/{dataset_id}/{version}/approve")
def approve(dataset_id: str, version: int, body: ApproveIn,
            guard: Guard = require("registration", "review"), session: Session = SESSION,
            state: AppState = Depends(app_state)) -> dict[str, Any]:
    """The review passes: public notice starts (or, for a metadata-only change, the certificate is issued)."""
    v = _version(session, guard, dataset_id, version)
    before = v.registration_state
    registration.approve(session, v, actor_id=guard.caller.principal_id, now=state.clock.now(),
                         comment=body.comment, acknowledge_findings=body.acknowledge_findings,
                         notice=timedelta(seconds=state.settings.registration_notice_seconds),
                         keyring=state.keyring, provider=registration.provider_of(session, v))
    _step(guard, v, before, comment=body.comment, findings_acknowledged=body.acknowledge_findings,
          certificate=v.certificate_code)
    return _out(session, state, v)


@router.post("/registrations/{dataset_id}/{version}/reject")
def reject(dataset_id: str, version: int, body: ReasonIn, guard: Guard = require("registration", "review"),
           session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """The review fails for good, with a reason."""
    v = _version(session, guard, dataset_id, version)
    before = v.registration_state
    registration.reject(session, v, actor_id=guard.caller.principal_id, now=state.clock.now(), reason=body.reason)
    _step(guard, v, before, reason=body.reason)
    return _out(session, state, v)


@router.post("/registrations/{dataset_id}/{version}/withdraw")
def withdraw(dataset_id: str, version: int, body: ReasonIn,
             guard: Guard = require("registration", "withdraw"), session: Session = SESSION,
             state: AppState = Depends(app_state)) -> dict[str, Any]:
    """The provider withdraws its application."""
    v = _version(session, guard, dataset_id, version)
    before = v.registration_state
    registration.withdraw(session, v, actor_id=guard.caller.principal_id, now=state.clock.now(), reason=body.reason)
    _step(guard, v, before, reason=body.reason)
    return _out(session, state, v)


@router.post("/registrations/{dataset_id}/{version}/issue")
def issue(dataset_id: str, version: int, guard: Guard = require("registration", "issue"),
          session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """凭证签发: issue the certificate once the notice period is over and every objection is resolved."""
    v = _version(session, guard, dataset_id, version)
    before = v.registration_state
    cert = registration.issue(session, v, actor_id=guard.caller.principal_id, now=state.clock.now(),
                              keyring=state.keyring, provider=registration.provider_of(session, v))
    _step(guard, v, before, certificate=cert.code)
    return _out(session, state, v)


@router.post("/registrations/{dataset_id}/{version}/certify-now")
def certify_now(dataset_id: str, version: int, body: ReasonIn,
                guard: Guard = require("registration", "certify_now"),
                session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Demo/test shortcut (agency admin): certify an application at once, skipping every step. Audited."""
    v = _version(session, guard, dataset_id, version)
    before = v.registration_state
    cert = registration.certify_now(session, v, actor_id=guard.caller.principal_id, now=state.clock.now(),
                                    keyring=state.keyring, provider=registration.provider_of(session, v),
                                    reason=body.reason)
    _step(guard, v, before, shortcut="certify_now", reason=body.reason, certificate=cert.code)
    return _out(session, state, v)


@router.post("/registrations/{dataset_id}/{version}/revoke")
def revoke(dataset_id: str, version: int, body: ReasonIn, guard: Guard = require("registration", "revoke"),
           session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """注销: revoke the certificate and stop every job on this version, with the reason."""
    v = _version(session, guard, dataset_id, version)
    before = v.registration_state
    stopped = registration.revoke(session, v, actor_id=guard.caller.principal_id, now=state.clock.now(),
                                  reason=body.reason)
    state.runs.forget_version(v.dataset_id, v.version)
    _step(guard, v, before, reason=body.reason, certificate=v.certificate_code, stopped_jobs=stopped)
    out = _out(session, state, v)
    out["stopped_jobs"] = stopped
    return out


@router.post("/registrations/{dataset_id}/{version}/objections", status_code=201)
def file_objection(dataset_id: str, version: int, body: ObjectionIn,
                   guard: Guard = require("objection", "create"), session: Session = SESSION,
                   state: AppState = Depends(app_state)) -> dict[str, Any]:
    """异议: anyone with a key objects during the notice period; certification waits for the resolution."""
    guard.check(guard.caller.org_id, f"registration/{dataset_id}/{version}")
    v = registry.get_version(session, dataset_id, version)
    o = registration.file_objection(session, v, actor_id=guard.caller.principal_id,
                                    actor_org_id=guard.caller.org_id, now=state.clock.now(), reason=body.reason)
    guard.note(dataset=dataset_id, version=version, objection=o.id)
    return {**registration.public_objection(o), "dataset": dataset_id, "version": version}


@router.post("/registrations/{dataset_id}/{version}/objections/{objection_id}/resolve")
def resolve_objection(dataset_id: str, version: int, objection_id: str, body: ResolveIn,
                      guard: Guard = require("registration", "review"),
                      session: Session = SESSION, state: AppState = Depends(app_state)
                      ) -> dict[str, Any]:
    """A reviewer dismisses or upholds an objection; the resolution is published with the notice."""
    v = _version(session, guard, dataset_id, version)
    o = session.get(RegistrationObjection, objection_id)
    if o is None:
        raise NotFound(f"objection {objection_id} does not exist", code="objection_not_found")
    before = v.registration_state
    registration.resolve_objection(session, v, o, actor_id=guard.caller.principal_id, now=state.clock.now(),
                                   outcome=body.outcome, resolution=body.resolution)
    _step(guard, v, before, objection=o.id, outcome=o.status, resolution=o.resolution)
    return _out(session, state, v)
