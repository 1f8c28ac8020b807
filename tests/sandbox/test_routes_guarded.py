"""Every route is either enforced by require(...) or explicitly public."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import Route

from sandbox.app import create_app
from sandbox.app.deps import PUBLIC_ROUTES
from sandbox.config import Settings


def _permission(route: APIRoute) -> tuple[str, str] | None:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        perm = getattr(dep.call, "__sluice_permission__", None)
        if perm is not None:
            return perm  # type: ignore[no-any-return]
        stack.extend(dep.dependencies)
    return None


def _flatten(routes: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Every concrete route, walking into included routers (FastAPI keeps them as _IncludedRouter)."""
    out: list[tuple[str, Any]] = []
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            assert not route.include_context.dependencies, "router-level dependencies are not inspected"
            out += _flatten(list(original.routes), prefix + route.include_context.prefix)
        else:
            out.append((prefix, route))
    return out


def test_every_route_is_enforced_or_marked_public(settings: Settings) -> None:
    from sandbox.bootstrap import init_home
    from sandbox.clock import ManualClock

    init_home(settings, ManualClock())
    app = create_app(settings)
    unguarded, public_but_guarded, seen = [], [], set()
    for prefix, route in _flatten(list(app.routes)):
        if not isinstance(route, Route):
            unguarded.append(repr(route))
            continue
        for method in sorted(route.methods or []):
            key = (method, prefix + route.path)
            seen.add(key)
            guarded = isinstance(route, APIRoute) and _permission(route) is not None
            if key in PUBLIC_ROUTES and guarded:
                public_but_guarded.append(key)
            if key not in PUBLIC_ROUTES and not guarded:
                unguarded.append(key)
    assert not unguarded, f"routes neither enforced nor public: {unguarded}"
    assert not public_but_guarded
    assert ("POST", "/v1/grants") in seen and ("GET", "/healthz") in seen
    stale = {k for k in PUBLIC_ROUTES if k not in seen}
    assert not stale, f"PUBLIC_ROUTES names routes that do not exist: {stale}"


def test_every_dependency_with_yield_ends_before_the_response_and_the_app_refuses_one_that_would_not() -> None:
    from fastapi import Depends, FastAPI
    from sqlalchemy.orm import Session

    from sandbox.app.deps import SESSION, check_function_scope, db_session, require

    ok = FastAPI()

    @ok.get("/ok")
    def fine(guard: Any = require("run", "read"), session: Session = SESSION) -> None:
        """A route through the gate and the shared session marker."""

    check_function_scope(ok)  # the gate's own session dependency is in function scope too
    late = FastAPI()

    @late.get("/late")
    def after_response(session: Session = Depends(db_session)) -> None:
        """A route whose commit would run after a 2xx was sent."""

    try:
        check_function_scope(late)
    except RuntimeError as exc:
        assert "/late" in str(exc)
    else:
        raise AssertionError("a request-scoped session was accepted")


def test_no_route_is_shadowed_by_a_route_matched_before_it(settings: Settings) -> None:
    """Routers are matched in the order create_app includes them (the run POST's router first, for speed); that
    order may decide nothing: a path of each route, with its parameters filled in, is matched by that route first."""
    import re

    from starlette.routing import Match

    from sandbox.bootstrap import init_home
    from sandbox.clock import ManualClock

    init_home(settings, ManualClock())
    app = create_app(settings)
    routes = [route for prefix, route in _flatten(list(app.routes)) if isinstance(route, Route) and not prefix]
    shadowed = []
    for route in routes:
        path = re.sub(r"\{[^}]+\}", "x1", route.path)
        for method in sorted(route.methods or []):
            scope = {"type": "http", "path": path, "method": method, "root_path": "", "headers": []}
            first = next(r for r in routes if r.matches(scope)[0] == Match.FULL)
            if first is not route:
                shadowed.append((method, route.path, first.path))
    assert not shadowed, f"routes matched by an earlier route: {shadowed}"
    assert len(routes) > 100
