"""Health, metrics and the audit trail."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.orm import Session

from sandbox.app.deps import AppState, Guard, app_state, db_session, require
from sandbox.audit import list_events
from sandbox.errors import NotFound

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz(session: Session = Depends(db_session)) -> dict[str, str]:
    """Liveness and control-store reachability."""
    session.execute(text("SELECT 1"))
    return {"status": "ok"}


@router.get("/metrics")
def metrics(state: AppState = Depends(app_state)) -> Response:
    """Prometheus metrics."""
    if not state.settings.metrics_enabled:
        raise NotFound("metrics are disabled (SLUICE_METRICS_ENABLED=false)", code="metrics_disabled")
    body, ctype = state.metrics.render()
    return Response(body, media_type=ctype)


@router.get("/v1/audit")
def audit(limit: int = Query(100, ge=1, le=1000), after_id: int = Query(0, ge=0),
          guard: Guard = Depends(require("audit", "read")), session: Session = Depends(db_session)
          ) -> list[dict[str, Any]]:
    """Audit rows in order (regulators, agency and platform admins)."""
    rows = list_events(session, limit=limit, after_id=after_id,
                       actor_org_id=None if guard.any_org else guard.caller.org_id)
    return [{"id": r.id, "at": r.at.isoformat(), "actor_id": r.actor_id, "actor_org_id": r.actor_org_id,
             "via": r.via, "action": r.action, "resource": r.resource, "decision": r.decision, "rule": r.rule,
             "reason": r.reason, "code": r.code, "status": r.status, "detail": r.detail} for r in rows]
