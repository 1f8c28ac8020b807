"""Organizations, principals, API keys and `me`."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from sandbox import identity
from sandbox.app.deps import SESSION, AppState, Guard, app_state, require
from sandbox.app.schemas import StrictModel
from sandbox.errors import NotFound
from sandbox.store.models import ApiKey, Organization, Principal

router = APIRouter(prefix="/v1", tags=["identity"])


class OrgIn(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    kind: str = Field(description="agency, provider, operator, customer or regulator")


class OrgOut(BaseModel):
    id: str
    name: str
    kind: str
    is_platform: bool
    created_at: datetime


class PrincipalIn(StrictModel):
    org_id: str
    name: str = Field(min_length=1, max_length=200)
    roles: list[str]
    key_ttl_days: int | None = Field(None, ge=1, description="lifetime of the first API key")


class KeyOut(BaseModel):
    id: str
    principal_id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None


class PrincipalOut(BaseModel):
    id: str
    org_id: str
    name: str
    roles: list[str]
    created_at: datetime


class PrincipalCreated(PrincipalOut):
    api_key: str = Field(description="shown once; store it now")
    key_id: str


class KeyIn(StrictModel):
    ttl_days: int | None = Field(None, ge=1)


class KeyCreated(KeyOut):
    api_key: str = Field(description="shown once; store it now")


class RevokeIn(StrictModel):
    reason: str = "revoked"


class MeOut(BaseModel):
    principal_id: str
    name: str
    org_id: str
    org_kind: str
    roles: list[str]
    subjects: list[str]
    key_id: str


def _org_out(o: Organization) -> OrgOut:
    return OrgOut(id=o.id, name=o.name, kind=o.kind, is_platform=o.is_platform, created_at=o.created_at)


def _principal_out(p: Principal) -> PrincipalOut:
    return PrincipalOut(id=p.id, org_id=p.org_id, name=p.name, roles=list(p.roles), created_at=p.created_at)


def _key_out(k: ApiKey) -> KeyOut:
    return KeyOut(id=k.id, principal_id=k.principal_id, created_at=k.created_at, expires_at=k.expires_at,
                  revoked_at=k.revoked_at, revoked_reason=k.revoked_reason)


def _ttl(days: int | None, state: AppState) -> timedelta | None:
    days = days if days is not None else state.settings.key_ttl_days
    return timedelta(days=days) if days else None


@router.get("/me", response_model=MeOut)
def me(guard: Guard = require("self", "read")) -> MeOut:
    """Who the presented key belongs to."""
    c = guard.caller
    guard.check(c.org_id)
    return MeOut(principal_id=c.principal_id, name=c.principal_name, org_id=c.org_id, org_kind=c.org_kind,
                 roles=list(c.roles), subjects=c.subjects, key_id=c.key_id)


@router.post("/orgs", response_model=OrgOut, status_code=201)
def create_org(body: OrgIn, guard: Guard = require("org", "create"),
               session: Session = SESSION, state: AppState = Depends(app_state)) -> OrgOut:
    """Create an organization (platform admin)."""
    guard.check(None)
    org = identity.create_org(session, name=body.name, kind=body.kind, now=state.clock.now())
    guard.note(org_id=org.id, kind=org.kind)
    guard.audit.resource, guard.audit.resource_org_id = f"org/{org.id}", org.id
    return _org_out(org)


@router.get("/orgs", response_model=list[OrgOut])
def list_orgs(guard: Guard = require("org", "read"), session: Session = SESSION
              ) -> list[OrgOut]:
    """Organizations the caller may see: all for the platform admin and regulators, else its own."""
    q = select(Organization).order_by(Organization.created_at, Organization.name)
    if not guard.any_org:
        q = q.where(Organization.id == guard.caller.org_id)
    return [_org_out(o) for o in session.scalars(q)]


@router.get("/orgs/{org_id}", response_model=OrgOut)
def get_org(org_id: str, guard: Guard = require("org", "read"), session: Session = SESSION
            ) -> OrgOut:
    """One organization."""
    guard.check(org_id, f"org/{org_id}")
    org = session.get(Organization, org_id)
    if org is None:
        raise NotFound(f"organization {org_id} does not exist", code="org_not_found")
    return _org_out(org)


@router.post("/principals", response_model=PrincipalCreated, status_code=201)
def create_principal(body: PrincipalIn, guard: Guard = require("principal", "create"),
                     session: Session = SESSION, state: AppState = Depends(app_state)
                     ) -> PrincipalCreated:
    """Create a principal and its first API key (returned once)."""
    guard.check(body.org_id, f"org/{body.org_id}")
    org = session.get(Organization, body.org_id)
    if org is None:
        raise NotFound(f"organization {body.org_id} does not exist", code="org_not_found")
    now = state.clock.now()
    p = identity.create_principal(session, org=org, name=body.name, roles=body.roles, now=now,
                                  created_by=guard.caller.principal_id)
    key, plaintext = identity.issue_key(session, principal=p, now=now, ttl=_ttl(body.key_ttl_days, state))
    guard.note(principal_id=p.id, roles=list(p.roles), key_id=key.id)
    guard.audit.resource = f"principal/{p.id}"
    return PrincipalCreated(**_principal_out(p).model_dump(), api_key=plaintext, key_id=key.id)


@router.get("/principals", response_model=list[PrincipalOut])
def list_principals(guard: Guard = require("principal", "read"),
                    session: Session = SESSION) -> list[PrincipalOut]:
    """Principals the caller may see."""
    q = select(Principal).order_by(Principal.created_at, Principal.name)
    if not guard.any_org:
        q = q.where(Principal.org_id == guard.caller.org_id)
    return [_principal_out(p) for p in session.scalars(q)]


def _principal(session: Session, guard: Guard, principal_id: str) -> Principal:
    return guard.owned(session, Principal, principal_id, owner=lambda p: p.org_id, kind="principal")


@router.get("/principals/{principal_id}/keys", response_model=list[KeyOut])
def list_keys(principal_id: str, guard: Guard = require("principal", "read"),
              session: Session = SESSION) -> list[KeyOut]:
    """A principal's API keys (never their secrets)."""
    _principal(session, guard, principal_id)
    keys = session.scalars(select(ApiKey).where(ApiKey.principal_id == principal_id).order_by(ApiKey.created_at))
    return [_key_out(k) for k in keys]


@router.post("/principals/{principal_id}/keys", response_model=KeyCreated, status_code=201)
def create_key(principal_id: str, body: KeyIn, guard: Guard = require("api_key", "create"),
               session: Session = SESSION, state: AppState = Depends(app_state)) -> KeyCreated:
    """Issue another API key for a principal (returned once)."""
    p = _principal(session, guard, principal_id)
    key, plaintext = identity.issue_key(session, principal=p, now=state.clock.now(),
                                        ttl=_ttl(body.ttl_days, state))
    guard.note(key_id=key.id)
    return KeyCreated(**_key_out(key).model_dump(), api_key=plaintext)


@router.post("/principals/{principal_id}/keys/{key_id}/revoke", response_model=KeyOut)
def revoke_key(principal_id: str, key_id: str, body: RevokeIn | None = None,
               guard: Guard = require("api_key", "revoke"), session: Session = SESSION,
               state: AppState = Depends(app_state)) -> KeyOut:
    """Revoke an API key; requests with it are refused from now on."""
    _principal(session, guard, principal_id)
    key = identity.revoke_key(session, principal_id=principal_id, key_id=key_id, now=state.clock.now(),
                              reason=(body.reason if body else "revoked"))
    state.key_cache.invalidate(key_id)
    guard.note(key_id=key_id)
    return _key_out(key)
