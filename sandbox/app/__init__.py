"""The FastAPI application."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from disclosure.signing import KeyRing
from metering.metrics import make_metrics
from policy.authz import Authorizer
from sandbox.app import problems, routes_catalogue, routes_grants, routes_identity, routes_system
from sandbox.app.deps import AppState
from sandbox.clock import Clock, SystemClock
from sandbox.config import Settings
from sandbox.store.db import load_policy_rows, make_engine, session_factory


def create_app(settings: Settings, clock: Clock | None = None) -> FastAPI:
    """Build the app over an initialized SLUICE_HOME (see `sluice init`)."""
    engine = make_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    with sessions() as s:
        rows = load_policy_rows(s)
    keyring = KeyRing(settings.keys_dir)
    state = AppState(settings=settings, clock=clock or SystemClock(), sessions=sessions,
                     authorizer=Authorizer(rows), metrics=make_metrics(),
                     extras={"keyring": keyring, "engine": engine})
    app = FastAPI(title="Sluice", version="0.1.0",
                  description="Authorized operation of public data: governed queries, audit, metering.")
    app.state.sluice = state
    problems.install(app)
    for module in (routes_system, routes_identity, routes_catalogue, routes_grants):
        app.include_router(module.router)

    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        label = getattr(route, "path", "unmatched")
        state.metrics.requests.labels(label, str(response.status_code)).inc()
        state.metrics.request_seconds.labels(label).observe(time.perf_counter() - start)
        return response

    return app
