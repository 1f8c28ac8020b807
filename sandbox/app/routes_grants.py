"""Grants: creation by the agency admin, lifecycle transitions, scoped reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from sandbox import grants
from sandbox.app.deps import SESSION, AppState, Guard, app_state, require
from sandbox.app.schemas import StrictModel
from sandbox.errors import InvalidInput
from sandbox.store.models import Grant, GrantEvent

router = APIRouter(prefix="/v1", tags=["grants"])


class ScenarioIn(StrictModel):
    name: str
    data_used: str = Field(description="用什么数: what data is used")
    supply: str = Field(description="怎样供数: how it is supplied")
    problem: str = Field(description="解决什么问题: what problem it solves")


class GrantIn(StrictModel):
    operator_org_id: str
    scope: str = Field(description="whole, domain or scenario")
    purpose_class: str = Field(description="public_interest or industry")
    valid_from: datetime | None = Field(None, description="default: now")
    valid_until: datetime
    domains: list[str] = Field(default_factory=list)
    datasets: list[str] = Field(default_factory=list)
    scenario: ScenarioIn | None = None
    min_group_size: int | None = Field(None, ge=1)
    max_result_rows: int = Field(10_000, ge=1)
    auto_approve: bool = False
    column_overrides: dict[str, dict[str, str]] = Field(default_factory=dict)
    engine: str = Field("duckdb", description="engine the grant's runs use: duckdb (default) or spark")


class ReasonIn(StrictModel):
    reason: str = Field(min_length=1)


def grant_out(g: Grant, now: datetime, events: list[GrantEvent] | None = None) -> dict[str, Any]:
    """A grant as the API shows it, with its effective status at `now`."""
    out: dict[str, Any] = {
        "id": g.id, "operator_org_id": g.operator_org_id, "scope": g.scope, "domains": g.domains,
        "datasets": g.datasets, "scenario": g.scenario, "purpose_class": g.purpose_class,
        "valid_from": g.valid_from.isoformat(), "valid_until": g.valid_until.isoformat(),
        "min_group_size": g.min_group_size, "max_result_rows": g.max_result_rows, "auto_approve": g.auto_approve,
        "column_overrides": g.column_overrides, "engine": g.engine or "duckdb", "status": g.status,
        "status_reason": g.status_reason,
        "effective_status": grants.effective_status(g, now), "created_at": g.created_at.isoformat(),
        "created_by": g.created_by,
    }
    if events is not None:
        out["events"] = [{"at": e.at.isoformat(), "action": e.action, "from": e.from_status, "to": e.to_status,
                          "reason": e.reason, "actor_id": e.actor_id} for e in events]
    return out


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidInput("timestamps need a UTC offset, e.g. 2027-01-01T00:00:00Z", code="naive_timestamp")
    return value


@router.post("/grants", status_code=201)
def create_grant(body: GrantIn, guard: Guard = require("grant", "create"),
                 session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Grant an operator organization authorized operation (agency admin)."""
    guard.check(body.operator_org_id, f"org/{body.operator_org_id}")
    now = state.clock.now()
    req = grants.GrantRequest(
        operator_org_id=body.operator_org_id, scope=body.scope, purpose_class=body.purpose_class,
        valid_from=_aware(body.valid_from) if body.valid_from else now, valid_until=_aware(body.valid_until),
        domains=body.domains, datasets=body.datasets,
        scenario=grants.Scenario(**body.scenario.model_dump()) if body.scenario else None,
        min_group_size=body.min_group_size, max_result_rows=body.max_result_rows, auto_approve=body.auto_approve,
        column_overrides=body.column_overrides, engine=body.engine)
    guard.note(request=body.model_dump(mode="json"))
    g = grants.create_grant(session, req, now=now, created_by=guard.caller.principal_id)
    guard.note(grant_id=g.id, datasets=list(body.datasets))
    guard.audit.resource = f"grant/{g.id}"
    return grant_out(g, now)


@router.get("/grants")
def list_grants(guard: Guard = require("grant", "read"), session: Session = SESSION,
                state: AppState = Depends(app_state)) -> list[dict[str, Any]]:
    """Grants the caller may see: operators see only their own organization's."""
    q = select(Grant).order_by(Grant.created_at, Grant.id)
    if not guard.any_org:
        q = q.where(Grant.operator_org_id == guard.caller.org_id)
    now = state.clock.now()
    return [grant_out(g, now) for g in session.scalars(q)]


def _grant(session: Session, guard: Guard, grant_id: str) -> Grant:
    return guard.owned(session, Grant, grant_id, owner=lambda g: g.operator_org_id, kind="grant")


@router.get("/grants/{grant_id}")
def get_grant(grant_id: str, guard: Guard = require("grant", "read"),
              session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """One grant with its state history."""
    g = _grant(session, guard, grant_id)
    events = list(session.scalars(select(GrantEvent).where(GrantEvent.grant_id == g.id).order_by(GrantEvent.id)))
    return grant_out(g, state.clock.now(), events)


def _transition(action: grants.GrantAction, grant_id: str, body: ReasonIn, guard: Guard, session: Session,
                state: AppState) -> dict[str, Any]:
    g = _grant(session, guard, grant_id)
    now = state.clock.now()
    grants.transition(session, g, action, reason=body.reason, actor_id=guard.caller.principal_id, now=now)
    guard.note(grant_id=g.id, action=action.value, reason=body.reason, to=g.status)
    return grant_out(g, now)


@router.post("/grants/{grant_id}/suspend")
def suspend_grant(grant_id: str, body: ReasonIn, guard: Guard = require("grant", "change"),
                  session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Suspend an active grant, with a reason."""
    return _transition(grants.GrantAction.SUSPEND, grant_id, body, guard, session, state)


@router.post("/grants/{grant_id}/revoke")
def revoke_grant(grant_id: str, body: ReasonIn, guard: Guard = require("grant", "change"),
                 session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Revoke a grant for good, with a reason."""
    return _transition(grants.GrantAction.REVOKE, grant_id, body, guard, session, state)


@router.post("/grants/{grant_id}/reinstate")
def reinstate_grant(grant_id: str, body: ReasonIn, guard: Guard = require("grant", "change"),
                    session: Session = SESSION, state: AppState = Depends(app_state)
                    ) -> dict[str, Any]:
    """Reinstate a suspended grant, with a reason."""
    return _transition(grants.GrantAction.REINSTATE, grant_id, body, guard, session, state)
