"""Request dependencies: the app state, the per-request session, and `require(obj, act)` (authn + authz + audit).

Every route either depends on `require(...)` or is listed in PUBLIC_ROUTES; a test walks app.routes to check.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Depends, Request
from opentelemetry.trace import Tracer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from disclosure.signing import KeyRing
from metering.metrics import Metrics
from policy.authz import Authorizer, Decision, Scope
from sandbox.app.problems import status_for
from sandbox.audit import AuditDraft, record
from sandbox.billing.usage import Metering
from sandbox.clock import Clock
from sandbox.config import Settings
from sandbox.errors import Forbidden, NotFound, SluiceError, Unauthenticated
from sandbox.identity import Caller, KeyCache, authenticate, key_id_of
from sandbox.recorder import Recorder
from sandbox.runs import RunService

T = TypeVar("T")

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
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("HEAD", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("HEAD", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("HEAD", "/redoc"),
    ("HEAD", "/openapi.json"),
})


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
    metering: Metering


async def app_state(request: Request) -> AppState:
    """The AppState stored on the application."""
    state: AppState = request.app.state.sluice
    return state


async def db_session(state: AppState = Depends(app_state)) -> AsyncIterator[Session]:
    """One session per request: committed when the handler succeeds, rolled back otherwise.

    Async on purpose: creating a session does no I/O, and the commit is a short local write, so this saves
    two thread-pool hops per request.
    """
    session = state.sessions()
    try:
        yield session
        started = time.perf_counter()
        session.commit()
        if session.info.pop("audit_pending", False):
            state.metrics.audit_append_seconds.labels("request").observe(time.perf_counter() - started)
    except BaseException:
        session.rollback()
        for cleanup in session.info.pop("on_rollback", []):
            cleanup()
        raise
    finally:
        session.close()


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

    @property
    def any_org(self) -> bool:
        """True when the caller may act on every organization's data, not only its own."""
        return self.widest == Scope.OTHER

    def check(self, owner_org_id: str | None, resource: str | None = None) -> Decision:
        """Authorize the action on a resource owned by `owner_org_id`; refuse cross-organization access."""
        scope = Scope.OWN if owner_org_id == self.caller.org_id else Scope.OTHER
        decision = self.authorizer.decide(self.caller.subjects, self.obj, self.act, scope)
        self.audit.rule, self.audit.reason = decision.rule, decision.reason
        if resource:
            self.audit.resource = resource
        if not decision.allowed:
            raise Forbidden(decision.reason, code="cross_org_access" if scope == Scope.OTHER else "permission_denied",
                            rule=decision.rule)
        return decision

    def owned(self, session: Session, model: type[T], ident: str, *, owner: Callable[[T], str], kind: str) -> T:
        """Load `model` by id and authorize access to it by its owning organization; 404 after the check."""
        row = session.get(model, ident)
        self.check(owner(row) if row is not None else None, f"{kind}/{ident}")
        if row is None:
            raise NotFound(f"{kind} {ident} does not exist", code=f"{kind}_not_found")
        return row

    def note(self, **detail: Any) -> None:
        """Add facts to this request's audit row."""
        self.audit.detail.update(detail)

    def commit_with(self, session: Session, rows: list[Any], status: int) -> None:
        """Commit `rows` and this request's audit row through the group-commit recorder (the run path)."""
        assert self.recorder is not None and not self.recorded
        self.audit.status = status
        started = time.perf_counter()
        self.recorder.record([*rows, self.audit.to_row(self.now_fn())], session=session)
        if self.metrics is not None:
            self.metrics.audit_append_seconds.labels("group_commit").observe(time.perf_counter() - started)
        self.recorded = True


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send Authorization: Bearer <api key>", code="missing_credentials")
    return token.strip()


def _write_refusal(state: AppState, draft: AuditDraft, exc: SluiceError) -> None:
    draft.code = exc.code
    if draft.decision == "allow":  # authorized, then refused by a domain rule: that rule is the reason
        draft.decision = "refused"
        draft.reason = exc.message
    draft.reason = draft.reason or exc.message
    draft.detail.setdefault("message", exc.message)
    started = time.perf_counter()
    with state.sessions.begin() as s:
        record(s, draft, state.clock.now())
    state.metrics.audit_append_seconds.labels("refusal").observe(time.perf_counter() - started)
    state.metrics.access_decisions.labels(draft.action, draft.decision).inc()


def require(obj: str, act: str) -> Callable[..., AsyncIterator[Guard]]:
    """Dependency factory: authenticate, authorize (obj, act) and audit the request and its outcome.

    Async to save thread-pool hops on the run path: a cached key needs no I/O, and a cache miss or a refusal
    does one short store query on the event loop.
    """

    async def dependency(request: Request, state: AppState = Depends(app_state),
                         session: Session = Depends(db_session)) -> AsyncIterator[Guard]:
        via = "cli" if request.headers.get("x-sluice-client", "").startswith("cli") else "api"
        draft = AuditDraft(action=f"{obj}:{act}", resource=request.url.path, via=via,
                           detail={"method": request.method})
        now = state.clock.now()
        try:
            token = _bearer(request)
            draft.detail["key_id"] = key_id_of(token)
            caller = authenticate(session, token, now=now, cache=state.key_cache)
        except Unauthenticated as exc:
            draft.rule, draft.status = "authentication", 401
            _write_refusal(state, draft, exc)
            raise
        draft.actor_id, draft.actor_org_id = caller.principal_id, caller.org_id
        widest = state.authorizer.widest_scope(caller.subjects, obj, act)
        if widest is None:
            decision = state.authorizer.decide(caller.subjects, obj, act, Scope.OWN)
            draft.rule, draft.reason, draft.status = decision.rule, decision.reason, 403
            denied = Forbidden(decision.reason, code="permission_denied", rule=decision.rule)
            _write_refusal(state, draft, denied)
            raise denied
        draft.decision = "allow"
        draft.rule = f"{'|'.join(caller.subjects)} may {act} {obj} ({widest.value})"
        guard = Guard(caller=caller, obj=obj, act=act, widest=widest, authorizer=state.authorizer, audit=draft,
                      now_fn=state.clock.now, recorder=state.recorder, metrics=state.metrics)
        try:
            yield guard
        except SluiceError as exc:
            session.rollback()
            if isinstance(exc, Forbidden):
                draft.decision = "deny"
            draft.status = status_for(exc)
            _write_refusal(state, draft, exc)
            raise
        except Exception as exc:  # an unexpected failure is still an access that happened: record it
            session.rollback()
            draft.decision, draft.status = "error", 500
            draft.reason = f"unexpected {type(exc).__name__}; see server logs"
            _write_refusal(state, draft, SluiceError("the request failed unexpectedly", code="internal_error",
                                                     error=type(exc).__name__))
            raise
        else:
            draft.status = draft.status or 200
            if not guard.recorded:
                record(session, draft, state.clock.now())
                session.info["audit_pending"] = True
            state.metrics.access_decisions.labels(draft.action, draft.decision).inc()

    dependency.__sluice_permission__ = (obj, act)  # type: ignore[attr-defined]
    return dependency
