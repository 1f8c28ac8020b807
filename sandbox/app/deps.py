"""Request dependencies: the app state, the per-request session, and the audited gates every route passes.

`require(obj, act)` authenticates, authorizes and audits; `public(action)` audits (and rate-limits) routes that
need no credential. Every route depends on one of them, or is infrastructure listed in `NOT_AUDITED`; a test
walks app.routes and calls each one. Each request writes exactly one audit record: in the transaction of the
change it describes when the request succeeds (fail closed: if that commit fails, the request fails), in its
own transaction when it is refused, or together with what it refuses (`Guard.refuse_with`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from opentelemetry.trace import Tracer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from disclosure.signing import KeyRing
from metering.metrics import Metrics
from policy.authz import Authorizer, Decision, Scope
from sandbox.app.middleware import client_address
from sandbox.app.problems import outcome_of, status_for
from sandbox.audit import AuditDraft, Outcome, record
from sandbox.audit_log import AuditLog, LogScheduler
from sandbox.billing.usage import Metering
from sandbox.clock import Clock
from sandbox.config import Settings
from sandbox.errors import (
    Conflict,
    Forbidden,
    NotFound,
    NotFoundOrNotYours,
    RateLimited,
    SluiceError,
    Unauthenticated,
)
from sandbox.identity import Caller, KeyCache, authenticate, key_id_of
from sandbox.ratelimit import RateLimiter
from sandbox.recorder import Recorder
from sandbox.release import ReleaseService
from sandbox.runs import RunService

T = TypeVar("T")
log = logging.getLogger("sluice.audit")

# (method, path) pairs that need no credential. Everything else must depend on require().
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/catalogue"),
    ("GET", "/v1/registrations/notices"),
    ("GET", "/v1/certificates/{code}"),
    ("GET", "/v1/certificates/{code}/document"),
    ("GET", "/v1/certificates/{code}/qr.png"),
    ("GET", "/v1/keys"),
    ("GET", "/v1/domains"),
    ("GET", "/v1/prices"),
    ("GET", "/v1/prices/categories"),
    ("GET", "/v1/prices/platform"),
    ("GET", "/v1/prices/caps"),
    ("GET", "/v1/pricelist"),
    ("GET", "/v1/pricelist/{entry_id}"),
    ("GET", "/v1/disclosures"),
    ("GET", "/v1/disclosures/schema"),
    ("GET", "/v1/disclosures/{period}"),
    ("GET", "/v1/disclosures/{period}/signature"),
    ("GET", "/console/sign-in"),
    ("POST", "/console/sign-in"),
    ("GET", "/console/catalogue"),
    ("GET", "/console/published"),
    ("GET", "/console/published/{period}"),
    ("GET", "/v1/products"),
    ("GET", "/v1/products/{product_id}"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/docs/swagger-ui-bundle.js"),
    ("GET", "/docs/swagger-ui.css"),
    ("GET", "/docs/favicon-32x32.png"),
    ("HEAD", "/openapi.json"),
})

# Infrastructure routes that write no audit record: probes, the metrics scrape and the API's own documents are
# neither access decisions nor governance changes, and recording every probe would bury the log in noise.
NOT_AUDITED: frozenset[str] = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                                         "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css",
                                         "/docs/favicon-32x32.png"})


class AuditHealth:
    """Remembers when audit records could not be written, so that the gap itself is recorded afterwards."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failed_since: datetime | None = None
        self.last_failure: datetime | None = None
        self.failures = 0

    def failed(self, at: datetime, error: BaseException) -> None:
        """An audit record (or the transaction carrying it) failed to commit."""
        with self._lock:
            self.failed_since = self.failed_since or at
            self.last_failure = at
            self.failures += 1
        log.error("audit record could not be written (%s); the request failed closed", type(error).__name__)

    def write_outage(self, state: AppState) -> None:
        """If writing failed earlier, record the outage now (in its own transaction); quiet if it fails again."""
        with self._lock:
            since, last, failures = self.failed_since, self.last_failure, self.failures
        if since is None:
            return
        now = state.clock.now()
        draft = AuditDraft(action="audit:outage", resource="audit-log", via="system", decision=Outcome.FAILED,
                           rule="fail closed", code="audit_unavailable", status=503,
                           reason=f"audit records could not be written from {since.isoformat()} to "
                                  f"{(last or since).isoformat()}; {failures} request(s) failed closed",
                           detail={"from": since, "until": last or since, "failed_requests": failures})
        try:
            with state.sessions.begin() as session:
                record(session, draft, now)
        except Exception:  # still down: keep counting, try again on the next request
            return
        with self._lock:
            if self.failed_since == since:
                self.failed_since, self.last_failure, self.failures = None, None, 0


@dataclass
class AppState:
    """Everything a request needs, built once at startup."""

    settings: Settings
    clock: Clock
    sessions: sessionmaker[Session]
    authorizer: Authorizer
    metrics: Metrics
    key_cache: KeyCache
    recorder: Recorder
    tracer: Tracer
    keyring: KeyRing
    engine: Engine
    runs: RunService
    releases: ReleaseService
    audit_log: AuditLog
    scheduler: LogScheduler
    limiter: RateLimiter
    metering: Metering
    audit_health: AuditHealth = field(default_factory=AuditHealth)
    db_slots: asyncio.Semaphore | None = None  # made in the serving event loop (lifespan); see db_session


async def app_state(request: Request) -> AppState:
    """The AppState stored on the application."""
    state: AppState = request.app.state.sluice
    return state


async def db_session(request: Request) -> AsyncIterator[Session]:
    """One session per request: committed before the response is sent when the handler succeeds, rolled back
    otherwise. A failed commit fails the request (its audit record was in that transaction).

    Async on purpose: creating a session does no I/O, and the commit is a short local write, so this saves
    two thread-pool hops per request.

    At most `db_slots` requests per process hold a session at once (SLUICE_DB_POOL_SIZE); the others wait here,
    on the event loop, holding no connection. Without the gate, queued requests would hold every pooled
    connection while the loop blocked checking out one more (authentication and refusal records run on it).

    The app state is read from the request, not through `Depends(app_state)`: one dependency fewer to solve on
    every request.
    """
    async with RequestSession(request.app.state.sluice) as session:
        yield session


class RequestSession:
    """A request's session in a `db_slots` slot: committed when the block ends normally (a failed commit is rolled
    back and raised), rolled back with its cleanups when it raises, then closed and the slot freed. A plain class,
    not a generator, so the run POST's `DirectRoute` uses it without the machinery it avoids."""

    __slots__ = ("session", "state")

    def __init__(self, state: AppState) -> None:
        self.state = state

    async def __aenter__(self) -> Session:
        slots = self.state.db_slots
        if slots is not None:
            await slots.acquire()
        self.session = self.state.sessions()
        return self.session

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        session = self.session
        try:
            if kind is not None:
                roll_back_request(session)
                return
            try:
                commit_request(self.state, session)
            except BaseException:
                roll_back_request(session)
                raise
        finally:
            session.close()
            if self.state.db_slots is not None:
                self.state.db_slots.release()


def commit_request(state: AppState, session: Session) -> None:
    """Commit a request's session after its handler succeeded; a failed commit is an audit failure (counted, and
    remembered so that the outage is recorded later) and fails the request."""
    if not session.in_transaction():  # any ORM change or statement begins one (autobegin)
        return  # nothing began (e.g. a run POST whose writes went through the group commit): no empty transaction
    started = time.perf_counter()
    try:
        session.commit()
        if session.info.pop("audit_pending", False):
            state.metrics.child(state.metrics.audit_append_seconds, "request").observe(time.perf_counter() - started)
    except Exception as exc:
        state.audit_health.failed(state.clock.now(), exc)
        state.metrics.audit_append_failures.labels("request").inc()
        raise


def roll_back_request(session: Session) -> None:
    """Roll back a failed request's session and run its `on_rollback` cleanups."""
    session.rollback()
    for cleanup in session.info.pop("on_rollback", []):
        cleanup()


SESSION: Any = Depends(db_session, scope="function")
"""The request's session, as a dependency in function scope: its commit runs before the response is sent, so a
failed commit (and the audit record in it) fails the request instead of following a 2xx. Every route and gate
takes its session through this one marker, so they share one session per request."""


def on_rollback(session: Session, cleanup: Callable[[], None]) -> None:
    """Run `cleanup` if this request's transaction is rolled back (e.g. remove files written for it)."""
    session.info.setdefault("on_rollback", []).append(cleanup)


@dataclass
class Guard:
    """An authenticated caller cleared for (obj, act) at `widest` scope; resource checks go through `check`."""

    caller: Caller
    obj: str
    act: str
    widest: Scope
    authorizer: Authorizer
    audit: AuditDraft
    now_fn: Callable[[], Any]
    recorder: Recorder | None = None
    recorded: bool = False
    metrics: Metrics | None = None
    followups: list[AuditDraft] = field(default_factory=list)

    @property
    def any_org(self) -> bool:
        """True when the caller may act on every organization's data, not only its own."""
        return self.widest == Scope.OTHER

    @property
    def trace_id(self) -> str | None:
        """The request's trace id (also in its audit record, its usage events and its log lines)."""
        return self.audit.trace_id

    def check(self, owner_org_id: str | None, resource: str | None = None) -> Decision:
        """Authorize the action on a resource owned by `owner_org_id`.

        Another organization's resource, or one that does not exist (owner None), is answered
        `not_found_or_not_yours` (404) when the caller may act only on its own: the answer reveals nothing,
        while the audit record keeps the rule and the real reason.
        """
        scope, decision = self._decide(self.obj, self.act, owner_org_id)
        self.audit.rule, self.audit.reason = decision.rule, decision.reason
        if owner_org_id is not None:
            self.audit.resource_org_id = owner_org_id
        if resource:
            self.audit.resource = resource
        if not decision.allowed:
            if scope == Scope.OTHER:
                what = resource or "the resource"
                raise NotFoundOrNotYours(f"{what} does not exist or belongs to another organization",
                                         rule=decision.rule)
            raise Forbidden(decision.reason, code="permission_denied", rule=decision.rule)
        return decision

    def _decide(self, obj: str, act: str, owner_org_id: str | None) -> tuple[Scope, Decision]:
        """The caller's decision for (obj, act) on a resource owned by `owner_org_id`, and the scope it is for."""
        scope = Scope.OWN if owner_org_id == self.caller.org_id else Scope.OTHER
        return scope, self.authorizer.decide(self.caller.subjects, obj, act, scope)

    def owned(self, session: Session, model: type[T], ident: str, *, owner: Callable[[T], str], kind: str) -> T:
        """Load `model` by id and authorize access to it by its owning organization; 404 after the check."""
        return self.authorized(session.get(model, ident), ident, owner=owner, kind=kind)

    def authorized(self, row: T | None, ident: str, *, owner: Callable[[T], str], kind: str) -> T:
        """Authorize access to `row` (loaded by the caller as `kind` `ident`, None if absent) by its owning
        organization; 404 after the check."""
        self.check(owner(row) if row is not None else None, f"{kind}/{ident}")
        if row is None:
            raise NotFound(f"{kind} {ident} does not exist", code=f"{kind}_not_found")
        return row

    def second_access(self, obj: str, act: str, owner_org_id: str, resource: str) -> AuditDraft:
        """Authorize a second access the request makes on the caller's behalf (a run POST that also returns the
        result authorizes `result:read`), refused like the request itself; returns its audit draft, which
        `follow` adds after this request's own record once the access happens."""
        _, decision = self._decide(obj, act, owner_org_id)
        if not decision.allowed:  # the request's record keeps the rule and reason that refused it
            self.audit.rule, self.audit.reason = decision.rule, decision.reason
            raise Forbidden(decision.reason, code="permission_denied", rule=decision.rule)
        own = self.audit
        return AuditDraft(action=f"{obj}:{act}", resource=resource, via=own.via, actor_id=own.actor_id,
                          actor_org_id=own.actor_org_id, actor_key_id=own.actor_key_id, client=own.client,
                          trace_id=own.trace_id, decision=Outcome.ALLOW, rule=decision.rule, reason=decision.reason,
                          resource_org_id=owner_org_id, detail=dict(own.detail))

    def follow(self, draft: AuditDraft) -> None:
        """Commit `draft` (from `second_access`) right after this request's own audit record, in `commit_with`."""
        self.followups.append(draft)

    def note(self, **detail: Any) -> None:
        """Add facts to this request's audit record (grant, datasets, hashes, row counts get own fields)."""
        self.audit.note(**detail)

    def commit_with(self, session: Session, rows: list[Any], status: int) -> None:
        """Commit `rows` and this request's audit record through the group-commit recorder (the run path)."""
        assert self.recorder is not None and not self.recorded
        self.audit.status = status
        for draft in self.followups:
            draft.status = status
        started = time.perf_counter()
        now = self.now_fn()
        try:
            self.recorder.record([*rows, self.audit.to_insert(now), *(d.to_insert(now) for d in self.followups)],
                                 session=session)
        except Exception:
            if self.metrics is not None:
                self.metrics.audit_append_failures.labels("group_commit").inc()
            raise
        if self.metrics is not None:
            self.metrics.child(self.metrics.audit_append_seconds, "group_commit").observe(time.perf_counter() - started)
            for draft in self.followups:
                self.metrics.child(self.metrics.access_decisions, draft.action, draft.decision).inc()
        self.recorded = True

    def refuse_with(self, session: Session, exc: SluiceError, rows: list[Any] | None = None) -> SluiceError:
        """Commit what a refusal keeps (e.g. the refused run or the rejected job, already in `session` or in
        `rows`) together with the refusal's audit record, in one transaction; returns `exc` to raise."""
        assert not self.recorded
        decision, status, code = outcome_of(exc)
        self.audit.decision, self.audit.status, self.audit.code = decision, status, code
        self.audit.reason = exc.message
        self.audit.detail.setdefault("message", exc.message)
        audit_row = self.audit.to_row(self.now_fn())
        if self.recorder is not None:
            self.recorder.record([*(rows or []), audit_row], session=session)
        else:
            session.add_all([*(rows or []), audit_row])
            session.commit()
        self.recorded = True
        return exc


def concurrent_conflict(exc: Exception) -> Exception:
    """A conditional UPDATE that lost a race (a job or run changed state in another request or process) as a 409
    `concurrent_state_change`; any other exception unchanged."""
    if isinstance(exc, StaleDataError):
        return Conflict("the record changed state in another request while this one ran; read it again",
                        code="concurrent_state_change")
    return exc


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send Authorization: Bearer <api key>", code="missing_credentials")
    return token.strip()


def new_draft(request: Request, action: str) -> AuditDraft:
    """A request's audit draft: who is calling from where, in which trace; `deny` until decided."""
    via = "cli" if request.headers.get("x-sluice-client", "").startswith("cli") else "api"
    draft = AuditDraft(action=action, resource=request.url.path, via=via, detail={"method": request.method},
                       client=client_address(request.scope), trace_id=request.scope.get("state", {}).get("trace_id"))
    request.state.sluice_audit = draft
    return draft


def _route_status(request: Request) -> int:
    route = request.scope.get("route")
    return int(getattr(route, "status_code", None) or 200)


def _write_refusal(state: AppState, draft: AuditDraft, exc: BaseException) -> None:
    """Record a refused or failed request in its own transaction (nothing it tried to change was kept)."""
    decision, status, code = outcome_of(exc)
    message = getattr(exc, "message", None) or ("request validation failed" if decision == "invalid"
                                                 else "the request failed unexpectedly")
    if decision == Outcome.FAILED and not isinstance(exc, SluiceError):
        draft.reason = f"unexpected {type(exc).__name__}; see server logs (trace {draft.trace_id})"
    elif draft.decision == Outcome.ALLOW or not draft.reason:  # authorized, then refused: that rule is the reason
        draft.reason = message
    draft.decision, draft.status, draft.code = decision, draft.status or status, code
    draft.detail.setdefault("message", message)
    if isinstance(exc, RequestValidationError):  # where and which rule, never the value sent
        draft.detail["errors"] = [{"loc": [str(p) for p in e.get("loc", ())], "type": e.get("type", "")}
                                  for e in exc.errors()][:20]
    now = state.clock.now()
    started = time.perf_counter()
    try:
        with state.sessions.begin() as s:
            record(s, draft, now)
        state.metrics.audit_append_seconds.labels("refusal").observe(time.perf_counter() - started)
    except Exception as error:
        state.audit_health.failed(now, error)
        state.metrics.audit_append_failures.labels("refusal").inc()
    state.metrics.child(state.metrics.access_decisions, draft.action, draft.decision).inc()


def _limit(state: AppState, draft: AuditDraft) -> None:
    """Take a token for an unauthenticated request; refuse (429) past the limit, recording the limiting."""
    verdict = state.limiter.check(draft.client, time.monotonic())
    if verdict.allowed:
        return
    exc = RateLimited(f"too many requests without a valid API key from {draft.client}; retry after "
                      f"{verdict.retry_after} s (SLUICE_UNAUTHENTICATED_RATE_PER_MINUTE)",
                      retry_after=verdict.retry_after)
    if verdict.record:
        limited = AuditDraft(action="ratelimit:unauthenticated", resource=draft.resource, via=draft.via,
                             client=draft.client, trace_id=draft.trace_id, rule="unauthenticated rate limit",
                             reason=f"{verdict.refused} request(s) from {draft.client} over "
                                    f"{state.settings.unauthenticated_rate_per_minute}/min refused",
                             detail={"refused": verdict.refused, "limited_action": draft.action,
                                     "per_minute": state.settings.unauthenticated_rate_per_minute,
                                     "burst": state.settings.unauthenticated_burst})
        _write_refusal(state, limited, exc)
    raise exc


def open_gate(request: Request, state: AppState, session: Session, obj: str, act: str, action: str) -> Guard:
    """The gate's entry (`require`): authenticate the key, authorize (obj, act) at some scope and start the audit
    draft; a refusal is audited in its own transaction and raised."""
    draft = new_draft(request, action)
    state.audit_health.write_outage(state)
    now = state.clock.now()
    try:
        token = _bearer(request)
        draft.actor_key_id = key_id_of(token)
        caller = authenticate(session, token, now=now, cache=state.key_cache)
    except Unauthenticated as exc:
        draft.rule, draft.status = "authentication", 401
        _limit(state, draft)
        _write_refusal(state, draft, exc)
        raise
    draft.actor_id, draft.actor_org_id = caller.principal_id, caller.org_id
    widest = authorize(state, draft, caller.subjects, obj, act)
    return Guard(caller=caller, obj=obj, act=act, widest=widest, authorizer=state.authorizer, audit=draft,
                 now_fn=state.clock.now, recorder=state.recorder, metrics=state.metrics)


def authorize(state: AppState, draft: AuditDraft, subjects: Sequence[str], obj: str, act: str) -> Scope:
    """The widest scope in which `subjects` may `act` on `obj`, noted in the audit draft as the allowing rule; a
    refusal (no scope at all) is audited with casbin's rule and reason and raised as 403 `permission_denied`."""
    widest = state.authorizer.widest_scope(subjects, obj, act)
    if widest is None:
        decision = state.authorizer.decide(subjects, obj, act, Scope.OWN)
        draft.rule, draft.reason, draft.status = decision.rule, decision.reason, 403
        denied = Forbidden(decision.reason, code="permission_denied", rule=decision.rule)
        _write_refusal(state, draft, denied)
        raise denied
    draft.decision = Outcome.ALLOW
    draft.rule = f"{'|'.join(subjects)} may {act} {obj} ({widest.value})"
    return widest


def gate_failed(state: AppState, session: Session, guard: Guard, raised: Exception) -> Exception:
    """The gate's exit when the handler raised: roll back, audit the refusal or failure unless the handler already
    recorded it, and return the exception to raise (a lost race becomes 409 `concurrent_state_change`)."""
    draft = guard.audit
    session.rollback()
    ended = concurrent_conflict(raised)
    if guard.recorded:
        state.metrics.child(state.metrics.access_decisions, draft.action, draft.decision).inc()
    else:
        if isinstance(ended, Forbidden):
            draft.decision = Outcome.DENY
        draft.status = status_for(ended) if isinstance(ended, SluiceError) else 0
        _write_refusal(state, draft, ended)
    return ended


def gate_passed(state: AppState, session: Session, guard: Guard, status: int) -> None:
    """The gate's exit when the handler succeeded: add its audit record to the request's transaction (unless the
    handler committed it already) with the response's status."""
    draft = guard.audit
    draft.status = draft.status or status
    if not guard.recorded:
        record(session, draft, state.clock.now())
        session.info["audit_pending"] = True
    state.metrics.child(state.metrics.access_decisions, draft.action, draft.decision).inc()


def require(obj: str, act: str, *, audit_action: str | None = None) -> Any:
    """The gate of a route, as `guard: Guard = require(obj, act)`: authenticate, authorize (obj, act) and audit the
    request and its outcome (as `audit_action`, default `obj:act`).

    A `Depends` in function scope: the audit record is written (and committed with the session) before the
    response is sent.

    Async to save thread-pool hops on the run path: a cached key needs no I/O, and a cache miss or a refusal
    does one short store query on the event loop.
    """
    action = audit_action or f"{obj}:{act}"

    async def dependency(request: Request, session: Session = SESSION) -> AsyncIterator[Guard]:
        state: AppState = request.app.state.sluice  # as `app_state`, without a dependency to solve
        guard = open_gate(request, state, session, obj, act, action)
        try:
            yield guard
        except Exception as raised:
            ended = gate_failed(state, session, guard, raised)
            if ended is not raised:
                raise ended from raised
            raise
        else:
            gate_passed(state, session, guard, _route_status(request))

    dependency.__sluice_permission__ = (obj, act)  # type: ignore[attr-defined]
    dependency.__sluice_action__ = action  # type: ignore[attr-defined]
    return Depends(dependency, scope="function")


def public(action: str) -> Any:
    """The gate of a route that needs no credential, as `draft: AuditDraft = public(action)`: rate-limit per client
    address, and audit (a `Depends` in function scope, like `require`)."""

    async def dependency(request: Request, state: AppState = Depends(app_state),
                         session: Session = SESSION) -> AsyncIterator[AuditDraft]:
        draft = new_draft(request, action)
        state.audit_health.write_outage(state)
        _limit(state, draft)
        draft.decision, draft.rule, draft.reason = Outcome.ALLOW, "public route", "no credential is needed"
        try:
            yield draft
        except Exception as exc:
            session.rollback()
            _write_refusal(state, draft, exc)
            raise
        else:
            draft.status = draft.status or _route_status(request)
            record(session, draft, state.clock.now())
            state.metrics.child(state.metrics.access_decisions, draft.action, draft.decision).inc()

    dependency.__sluice_public__ = action  # type: ignore[attr-defined]
    return Depends(dependency, scope="function")


def route_gate(route: APIRoute) -> tuple[str, str] | None:
    """('require', 'obj:act') or ('public', action) for the gate a route depends on, or None."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        permission = getattr(dep.call, "__sluice_permission__", None)
        if permission is not None:
            return "require", f"{permission[0]}:{permission[1]}"
        action = getattr(dep.call, "__sluice_public__", None)
        if action is not None:
            return "public", str(action)
        stack.extend(dep.dependencies)
    return None


def record_unaudited(request: Request, exc: BaseException) -> None:
    """Audit a request that failed before its gate ran (e.g. a truncated JSON body): the exception handlers
    call this; requests already audited, unmatched routes and infrastructure routes are left alone."""
    route = request.scope.get("route")
    if getattr(request.state, "sluice_audit", None) is not None or not isinstance(route, APIRoute):
        return
    gate = route_gate(route)
    if gate is None:
        return
    state: AppState = request.app.state.sluice
    draft = new_draft(request, gate[1])
    try:  # attribute it when the key is good; an unknown caller counts against the unauthenticated limit
        with state.sessions() as session:
            caller = authenticate(session, _bearer(request), now=state.clock.now(), cache=state.key_cache)
        draft.actor_id, draft.actor_org_id, draft.actor_key_id = caller.principal_id, caller.org_id, caller.key_id
    except SluiceError:
        try:
            _limit(state, draft)
        except RateLimited:
            return  # past the limit: the limiter's own record counts it
    draft.rule = "request parsing"
    _write_refusal(state, draft, exc)


def check_function_scope(app: FastAPI) -> None:
    """Refuse to serve if any route's dependency with `yield` would end after the response is sent.

    Its exit code (the audit record, the commit) must run before the response, so that a failed commit fails the
    request instead of following a 2xx; `SESSION`, `require` and `public` declare `scope="function"`. A route
    that declared `Depends(db_session)` itself would also get a second session, so this is checked at start-up.
    """
    for route in _all_routes(list(app.routes)):
        stack = list(route.dependant.dependencies)
        while stack:
            dep = stack.pop()
            if _is_generator(dep.call) and dep.scope != "function":
                raise RuntimeError(f"{route.path}: dependency {getattr(dep.call, '__qualname__', dep.call)} has "
                                   f"yield but not scope='function'; use SESSION / require / public")
            stack.extend(dep.dependencies)


def _all_routes(routes: list[Any]) -> list[APIRoute]:
    out: list[APIRoute] = []
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            out += _all_routes(list(original.routes))
        elif isinstance(route, APIRoute):
            out.append(route)
    return out


def _is_generator(call: Any) -> bool:
    import inspect

    return inspect.isasyncgenfunction(call) or inspect.isgeneratorfunction(call)
