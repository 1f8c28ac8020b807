"""Health and metrics (infrastructure routes: not audited, see deps.NOT_AUDITED)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.orm import Session

from sandbox.app.deps import SESSION, AppState, app_state
from sandbox.errors import NotFound

router = APIRouter(tags=["system"])


@router.get("/healthz")
def healthz(session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Liveness, control-store reachability, and whether audit records are being written and sequenced."""
    session.execute(text("SELECT 1"))
    health = state.audit_health
    problems = []
    if health.failed_since is not None:
        problems.append(f"audit records failing since {health.failed_since.isoformat()}")
    if state.scheduler.last_error:
        problems.append(f"audit log sequencing failing: {state.scheduler.last_error}")
    return {"status": "degraded" if problems else "ok", "problems": problems}


@router.get("/metrics")
def metrics(state: AppState = Depends(app_state)) -> Response:
    """Prometheus metrics."""
    if not state.settings.metrics_enabled:
        raise NotFound("metrics are disabled (SLUICE_METRICS_ENABLED=false)", code="metrics_disabled")
    body, ctype = state.metrics.render()
    return Response(body, media_type=ctype)
