"""A route served without FastAPI's dependency solving, for the run POST (the hot path).

`DirectRoute` is an `APIRoute` (its dependant, body model, status code and OpenAPI description are FastAPI's own,
so route walks, the documented gate and the OpenAPI document see the route as declared). A well-formed request is
served directly: the body parsed as JSON, the path, query, header and body parameters validated as FastAPI's own
functions (`request_params_to_args`, `request_body_to_args`) validate them (by plans worked out from FastAPI's rules
when the route is built, for simple parameters; by those functions otherwise), then the same steps the dependencies
take, in the same order, without the exit stacks, cancel scopes and generators FastAPI wraps around them: a
`db_slots` slot and the request's session (`deps.RequestSession`, which `deps.db_session` uses too), the gate
(`deps.open_gate`, `gate_failed`, `gate_passed`: authentication, authorization, the audit draft, every refusal
audited), the endpoint in one hop to a `Hops` thread, the commit or the rollback with its cleanups
(`RequestSession` again), then the response. Errors are rendered by the app's exception handlers as on any route.

`DirectDispatch`, the app's innermost middleware, hands such a request to its route with the scope FastAPI's router
would give it, past `ExceptionMiddleware`, `AsyncExitStackMiddleware` and the router.

Anything else falls back to FastAPI with the body replayed, so FastAPI alone decides it: a body that is not JSON, a
content type other than `application/json`, a JSON document that is not an object, any parameter that fails
validation. The endpoint may take only the gate (`require`), `SESSION`, `Depends(app_state)` and path, query,
header and body parameters; anything else is refused when the route is built, and `check_direct_routes` refuses
router-level dependencies at start-up (the direct path would not solve them).
"""

from __future__ import annotations

import asyncio
import json
import queue
import re
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from contextvars import Context, copy_context
from copy import deepcopy
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi._compat import ModelField
from fastapi._compat.shared import field_annotation_is_sequence
from fastapi.dependencies.utils import (
    _get_form_models,
    _get_param_aliases,
    _get_param_model,
    _should_embed_body_fields,
    request_body_to_args,
    request_params_to_args,
)
from fastapi.params import Param
from fastapi.routing import (
    _FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY,
    _FASTAPI_INCLUDED_ROUTER_KEY,
    _FASTAPI_SCOPE_KEY,
    APIRoute,
    APIRouter,
    _EffectiveRouteContext,
    _IncludedRouter,
)
from fastapi.telemetry._api import _route_selected
from pydantic_core import PydanticUndefined
from starlette._exception_handler import _lookup_exception_handler
from starlette._utils import get_route_path, is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.app.deps import (
    AppState,
    RequestSession,
    app_state,
    db_session,
    gate_failed,
    gate_passed,
    open_gate,
)

T = TypeVar("T")

class DirectRoute(APIRoute):
    """An APIRoute whose well-formed requests skip FastAPI's dependency solving (see the module docstring)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        dependant = self.dependant
        if (dependant.request_param_name or dependant.websocket_param_name or dependant.http_connection_param_name
                or dependant.response_param_name or dependant.background_tasks_param_name
                or dependant.security_scopes_param_name or self.dependencies):
            raise TypeError(f"{path}: a DirectRoute's endpoint takes only the gate, SESSION, app_state and "
                            f"request parameters")
        self._gate: tuple[str, str, str, str] | None = None
        self._session_name: str | None = None
        self._state_name: str | None = None
        for dep in dependant.dependencies:
            permission = getattr(dep.call, "__sluice_permission__", None)
            if permission is not None and self._gate is None and dep.name:
                self._gate = (dep.name, permission[0], permission[1], dep.call.__sluice_action__)  # type: ignore[union-attr]
            elif dep.call is db_session and dep.name:
                self._session_name = dep.name
            elif dep.call is app_state and dep.name:
                self._state_name = dep.name
            else:
                raise TypeError(f"{path}: a DirectRoute serves only the gate, SESSION and app_state as dependencies, "
                                f"not {getattr(dep.call, '__qualname__', dep.call)}")
        if self._gate is None:
            raise TypeError(f"{path}: a DirectRoute needs a require(...) gate")
        self._sync = not _is_coroutine(endpoint)
        self._plans = _plans(dependant.path_params, dependant.query_params, dependant.header_params,
                             dependant.cookie_params)
        self._body_plan = _body_plan(dependant.body_params, self._embed_body_fields)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request directly, or through FastAPI (another method: 405; a request it must decide)."""
        if scope["method"] not in (self.methods or ()):
            await super().handle(scope, receive, send)
            return
        await self.serve(scope, receive, send, super().handle)

    async def serve(self, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp) -> None:
        """Serve a request routed here directly; what FastAPI must decide goes to `fallback` with the body replayed
        (FastAPI's handler of this route, or the app's inner middleware and router: see `DirectDispatch`)."""
        request = Request(scope, receive, send)
        try:
            body = await _read_body(receive) if self.body_field is not None else b""
            values = await self._arguments(request, body)
            response = None if values is None else await self._serve(request, values)
        except Exception as exc:  # rendered by the app's handlers, as `wrap_app_handling_exceptions` renders it
            handler = _handler(scope, exc)
            if handler is None:
                raise
            answer = await handler(request, exc) if is_async_callable(handler) else await run_in_threadpool(
                handler, request, exc)
            if answer is not None:
                await answer(scope, receive, send)
            exc.__traceback__ = None  # as Starlette: a reused exception instance would collect tracebacks
            return
        if response is None:  # FastAPI decides (and renders) what the direct path does not handle
            await fallback(scope, _replay(body, receive), send)
            return
        try:
            await response(scope, receive, send)
        except Exception as exc:  # the response had started: as `wrap_app_handling_exceptions`
            if _handler(scope, exc) is not None:
                raise RuntimeError("Caught handled exception, but response already started.") from exc
            raise

    async def _arguments(self, request: Request, body: bytes) -> dict[str, Any] | None:
        """The endpoint's request parameters, validated as FastAPI validates them; None when FastAPI must decide."""
        dependant = self.dependant
        received: Any = PydanticUndefined  # no body, as FastAPI passes it
        if body:
            if request.headers.get("content-type") != "application/json":
                return None
            try:
                received = json.loads(body)
            except ValueError:
                return None
            if not isinstance(received, dict):
                return None
        if self._plans is not None and (self._body_plan is not None or not dependant.body_params):
            return self._planned(request, received)
        values: dict[str, Any] = {}
        for fields, source in ((dependant.path_params, "path_params"), (dependant.query_params, "query_params"),
                               (dependant.header_params, "headers"), (dependant.cookie_params, "cookies")):
            if fields:  # the request parses its query string and cookies only when a parameter reads them
                found, errors = request_params_to_args(fields, getattr(request, source))
                if errors:
                    return None
                values.update(found)
        if dependant.body_params:
            found, errors = await request_body_to_args(dependant.body_params, received, self._embed_body_fields)
            if errors:
                return None
            values.update(found)
        return values

    def _planned(self, request: Request, received: Any) -> dict[str, Any] | None:
        """`_arguments` by the plans made from FastAPI's own rules when the route was built (see `_Plan`)."""
        values: dict[str, Any] = {}
        for plan in self._plans or ():
            found = plan.value(getattr(request, plan.source).get(plan.key))
            if found is _REFUSED:
                return None
            values[plan.name] = found
        if self._body_plan is not None:
            found = self._body_plan.value(None if received is PydanticUndefined else received)
            if found is _REFUSED:
                return None
            values[self._body_plan.name] = found
        return values

    async def _serve(self, request: Request, values: dict[str, Any]) -> Response:
        """The session, the gate and the endpoint, as `db_session` and `require` around it would run them."""
        state: AppState = request.app.state.sluice
        name, obj, act, action = self._gate  # type: ignore[misc]
        async with RequestSession(state) as session:
            guard = open_gate(request, state, session, obj, act, action)
            values[name] = guard
            if self._session_name:
                values[self._session_name] = session
            if self._state_name:
                values[self._state_name] = state
            try:
                if self._sync:
                    response: Response = await in_thread(partial(self.endpoint, **values))
                else:
                    response = await self.endpoint(**values)
            except Exception as raised:
                ended = gate_failed(state, session, guard, raised)
                if ended is not raised:
                    raise ended from raised
                raise
            gate_passed(state, session, guard, int(self.status_code or 200))
        return response


@dataclass(frozen=True, slots=True)
class _Entry:
    """A DirectRoute as the app's router reaches it: its router's inclusion, its route context there, and the
    paths of the routes the router tries before it."""

    route: DirectRoute
    included: Any  # fastapi.routing._IncludedRouter
    context: Any  # fastapi.routing._EffectiveRouteContext
    earlier: tuple[re.Pattern[str], ...]
    selected_path: str | None


class DirectDispatch:
    """The innermost middleware: a request that FastAPI's router would hand to a `DirectRoute` goes to it directly,
    with the scope the router and the middleware in between would have given it, past `ExceptionMiddleware`,
    `AsyncExitStackMiddleware` and FastAPI's router (their work per request: the route's `starlette.exception_handlers`
    set, an exit stack for uploaded files that the run POST does not take, the route matched twice over the included
    routers). What the route does not serve directly goes through them after all, its body replayed, so FastAPI
    decides it as before; any other request goes through them untouched.

    A DirectRoute is dispatched so only when it sits in a router included in the app (no nested inclusion) and
    every route the app's router tries before it has a path pattern: a request whose path any of them matches goes
    the usual way, so the route the router would choose is always the one served. Like `ExceptionMiddleware`'s
    handlers, the routes are read when Starlette builds the middleware stack (the first request)."""

    def __init__(self, app: ASGIApp, router: APIRouter) -> None:
        self.app = app
        self.router = router
        self.handlers: tuple[Any, Any] | None = None
        if isinstance(app, ExceptionMiddleware):  # the inner stack FastAPI builds; otherwise dispatch nothing
            self.handlers = (app._exception_handlers, app._status_handlers)
        self.entries = _entries(router) if self.handlers is not None else ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.entries:
            for entry in self.entries:
                match, child = entry.context.matches(scope)
                if match is not Match.FULL:
                    continue
                path = get_route_path(scope)
                if any(pattern.match(path) for pattern in entry.earlier):
                    break
                self._route(scope, entry, child)
                await entry.route.serve(scope, receive, send, self.app)
                return
        await self.app(scope, receive, send)

    def _route(self, scope: Scope, entry: _Entry, child: dict[str, Any]) -> None:
        """Give `scope` what FastAPI's router and `ExceptionMiddleware` give it on the way to the route."""
        if "router" not in scope:
            scope["router"] = self.router
        fastapi_scope = scope.setdefault(_FASTAPI_SCOPE_KEY, {})
        fastapi_scope[_FASTAPI_INCLUDED_ROUTER_KEY] = entry.included
        child["route"] = entry.route
        scope.update(child)
        _route_selected(scope=scope, path=entry.selected_path, mount=False)
        fastapi_scope[_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY] = entry.context
        scope["route"] = entry.route
        scope["starlette.exception_handlers"] = self.handlers


def _entries(router: APIRouter) -> tuple[_Entry, ...]:
    """The DirectRoutes `router` reaches through the routers included in it, in its order, while every route before
    each has a path pattern (a mount, a host or a nested inclusion before it ends the list)."""
    entries: list[_Entry] = []
    earlier: list[re.Pattern[str]] = []
    for route in router.routes:
        if isinstance(route, _IncludedRouter):
            for candidate in route.effective_candidates():
                if not isinstance(candidate, _EffectiveRouteContext):
                    return tuple(entries)
                if isinstance(candidate.original_route, DirectRoute) and isinstance(candidate.path_regex, re.Pattern):
                    selected = getattr(candidate.starlette_route, "path_format", None) or candidate.path_format
                    entries.append(_Entry(candidate.original_route, route, candidate, tuple(earlier), selected))
                pattern = getattr(candidate, "path_regex", None)
                if not isinstance(pattern, re.Pattern):
                    return tuple(entries)
                earlier.append(pattern)
        elif isinstance(route, (Route, APIRoute)) and isinstance(route.path_regex, re.Pattern):
            earlier.append(route.path_regex)
        else:
            return tuple(entries)
    return tuple(entries)


_REFUSED: Any = object()
"""What a plan gives for a value FastAPI would refuse (a missing required one, one that fails validation): the
request then goes to FastAPI, which renders the refusal."""
_ATOMIC = (type(None), str, int, float, bool, bytes)  # `deepcopy` returns these very objects


@dataclass(frozen=True, slots=True)
class _Plan:
    """How FastAPI reads and validates one simple request parameter, worked out once: `request_params_to_args`
    (path, query, header, cookie) and `request_body_to_args` (a single body not embedded) for a field that is not
    a parameter model, not a sequence and has one request key take `source.get(key)`, treat None as absent, give
    an absent value the field's default (deep-copied; validated only when the field says so) or refuse it when the
    field is required, and validate anything else with the field's own `validate`."""

    name: str
    source: str  # the Request attribute read: "path_params", "query_params", "headers", "cookies"; "" for the body
    key: str
    field: ModelField
    loc: tuple[str, ...]
    required: bool
    constant: bool  # the default is an immutable constant: no factory to call, nothing to copy
    default: Any
    validate_default: bool

    def value(self, received: Any) -> Any:
        """The validated value for `received` (None when absent), or `_REFUSED`."""
        field = self.field
        if received is None:
            if self.required:
                return _REFUSED
            received = self.default if self.constant else deepcopy(field.default)
            if not self.validate_default:
                return received
        validated, errors = field.validate(received, {}, loc=self.loc)
        return _REFUSED if errors else validated


def _plan(field: ModelField, source: str, loc: tuple[str, ...], key: str) -> _Plan:
    info = field.field_info
    default = info.default
    return _Plan(name=field.name, source=source, key=key, field=field, loc=loc, required=info.is_required(),
                 constant=info.default_factory is None and type(default) in _ATOMIC, default=default,
                 validate_default=bool(info.validate_default))


def _plans(path: Sequence[ModelField], query: Sequence[ModelField], header: Sequence[ModelField],
           cookie: Sequence[ModelField]) -> tuple[_Plan, ...] | None:
    """Plans for the route's path, query, header and cookie parameters, or None when any is not simple."""
    plans = []
    for fields, source in ((path, "path_params"), (query, "query_params"), (header, "headers"), (cookie, "cookies")):
        for field in fields:
            aliases = _get_param_aliases(field)
            info = field.field_info
            if (_get_param_model(field) is not None or len(aliases) != 1 or not isinstance(info, Param)
                    or field_annotation_is_sequence(info.annotation)):
                return None
            plans.append(_plan(field, source, (info.in_.value, aliases[0][1]), aliases[0][1]))
    return tuple(plans)


def _body_plan(body: list[ModelField], embed: bool) -> _Plan | None:
    """The plan for a single body parameter not embedded (the whole JSON object is its value), or None."""
    if len(body) != 1 or embed or _should_embed_body_fields(body) or _get_form_models(body[0]):
        return None
    return _plan(body[0], "", ("body",), "")


class Hops:
    """Threads that run synchronous calls for the event loop, each call handed over with one queue put and its
    outcome handed back with one `call_soon_threadsafe`: no `concurrent.futures.Future` (its condition, its
    callbacks), no idle semaphore and no future chained to the loop's, which `ThreadPoolExecutor` with
    `asyncio.wrap_future` cost per call. Like `ThreadPoolExecutor`, a call finds a thread of its own (an idle one
    reserved for it, else a new one) while fewer than `limit` exist, and waits its turn in the queue after that."""

    def __init__(self, limit: int, name: str) -> None:
        self.limit, self.name = limit, name
        self._queue: queue.SimpleQueue[_Hop] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a call and not yet reserved for one

    def submit(self, hop: _Hop) -> None:
        """Queue `hop`; an idle thread is reserved for it, or a thread started when none is idle."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                start = 0
            elif self._threads < self.limit:
                self._threads += 1
                start = self._threads
            else:
                start = 0
        self._queue.put(hop)
        if start:
            threading.Thread(target=self._serve, name=f"{self.name}_{start}", daemon=True).start()

    def _serve(self) -> None:
        get, lock = self._queue.get, self._lock
        while True:
            get().run()
            with lock:
                self._idle += 1


class _Hop:
    """One call handed to a `Hops` thread: run in `context`, its outcome set on `future` in the event loop."""

    __slots__ = ("call", "context", "ended", "finished", "future", "loop")

    def __init__(self, call: Callable[[], Any], context: Context, loop: asyncio.AbstractEventLoop) -> None:
        self.call, self.context, self.loop = call, context, loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.finished = False  # set in the event loop once the outcome is back
        self.ended: asyncio.Future[None] | None = None  # made only when the waiting task was cancelled

    def run(self) -> None:
        """In the thread: the call, then its outcome to the event loop."""
        try:
            outcome: Any = self.context.run(self.call)
            failed = False
        except BaseException as exc:  # as concurrent.futures: the waiting task gets whatever the call raised
            outcome, failed = exc, True
        self.call = self.context = None  # type: ignore[assignment]
        with suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting (as wrap_future's callback)
            self.loop.call_soon_threadsafe(self._back, outcome, failed)

    def _back(self, outcome: Any, failed: bool) -> None:
        """In the event loop: the outcome to the waiting task (unless it was cancelled), and the call's end."""
        self.finished = True
        future = self.future
        if not future.done():
            if failed:
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if self.ended is not None and not self.ended.done():
            self.ended.set_result(None)


HOPS = Hops(limit=40, name="sluice-request")
"""The threads synchronous direct endpoints run in: as many as AnyIO's default thread limiter allows FastAPI's (40);
a run POST takes one only once it holds a `db_slots` slot."""


async def in_thread(call: Callable[[], T]) -> T:
    """`call()` in one of the `HOPS` threads, in a copy of this task's context (as AnyIO's `to_thread.run_sync`: the
    request's span stays current). A cancellation of the waiting task waits for the call to end before it goes on,
    as AnyIO's shielded hop does, so that nothing the call uses (the request's session) is released under it."""
    hop = _Hop(call, copy_context(), asyncio.get_running_loop())
    HOPS.submit(hop)
    try:
        result: T = await hop.future
        return result
    except asyncio.CancelledError:
        await _ended(hop)
        raise


async def _ended(hop: _Hop) -> None:
    """Wait until `hop`'s call has ended, whatever cancels the waiting task meanwhile."""
    if hop.finished:
        return
    ended = hop.ended = hop.loop.create_future()
    while not ended.done():
        with suppress(BaseException):  # its outcome belongs to the cancelled request; only its end matters here
            await asyncio.shield(ended)


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (as Starlette's `Request.body`); a client that disconnects first is answered 400 as
    FastAPI answers it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise HTTPException(status_code=400, detail="There was an error parsing the body") from ClientDisconnect()


def _handler(scope: Scope, exc: Exception) -> Any:
    """The app's handler for `exc` (as Starlette looks it up: by status for an HTTPException, then by class)."""
    handlers, by_status = scope.get("starlette.exception_handlers", ({}, {}))
    handler = by_status.get(exc.status_code) if isinstance(exc, HTTPException) else None
    return handler or _lookup_exception_handler(handlers, exc)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that delivers `body` (already read) first, then what `receive` delivers."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _is_coroutine(call: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(call)


def check_direct_routes(app: FastAPI) -> None:
    """Refuse to serve a DirectRoute under a router with dependencies of its own: the direct path would skip them."""
    for route in app.routes:
        original, context = getattr(route, "original_router", None), getattr(route, "include_context", None)
        if original is None or context is None or not context.dependencies:
            continue
        if any(isinstance(r, DirectRoute) for r in original.routes):
            raise RuntimeError("a router with a DirectRoute may not declare router-level dependencies")
