"""The console's gate: like `deps.require`, but the caller comes from the console session cookie. Every page view
is authorized and audited (`via` = console); a missing or ended session is audited and sent to the sign-in page
(app/problems.py turns `Unauthenticated` on /console paths into a redirect)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from policy.authz import Scope
from sandbox import console
from sandbox.app.deps import SESSION, AppState, Guard, _limit, _write_refusal, app_state, authorize, new_draft
from sandbox.app.problems import status_for
from sandbox.audit import Outcome, record
from sandbox.errors import Forbidden, SluiceError, Unauthenticated
from sandbox.store.models import ConsoleSession


@dataclass
class ConsoleGuard:
    """A console request's guard (authorization and audit) and its session (for the CSRF token)."""

    guard: Guard
    session_row: ConsoleSession

    def may(self, obj: str, act: str) -> Scope | None:
        """The widest scope at which the signed-in caller may `act` on `obj` (None: not at all)."""
        return self.guard.authorizer.widest_scope(self.guard.caller.subjects, obj, act)


def console_require(obj: str, act: str) -> Any:
    """The gate of a console page (a `Depends` in function scope, like `deps.require`): the console session's
    caller, authorized for (obj, act), the view audited."""

    async def dependency(request: Request, state: AppState = Depends(app_state),
                         session: Session = SESSION) -> AsyncIterator[ConsoleGuard]:
        draft = new_draft(request, f"{obj}:{act}")
        draft.via = "console"
        now = state.clock.now()
        try:
            row, caller = console.resolve(session, request.cookies.get(console.COOKIE), now=now)
        except Unauthenticated as exc:
            draft.rule, draft.status = "console session", 303
            _limit(state, draft)
            _write_refusal(state, draft, exc)
            raise
        draft.actor_id, draft.actor_org_id, draft.actor_key_id = caller.principal_id, caller.org_id, caller.key_id
        widest = authorize(state, draft, caller.subjects, obj, act)
        guard = Guard(caller=caller, obj=obj, act=act, widest=widest, authorizer=state.authorizer, audit=draft,
                      now_fn=state.clock.now, metrics=state.metrics)
        try:
            yield ConsoleGuard(guard, row)
        except Exception as exc:
            session.rollback()
            if isinstance(exc, Forbidden):
                draft.decision = Outcome.DENY
            draft.status = status_for(exc) if isinstance(exc, SluiceError) else 0
            _write_refusal(state, draft, exc)
            raise
        else:
            draft.status = draft.status or 200
            record(session, draft, state.clock.now())
            state.metrics.access_decisions.labels(draft.action, draft.decision).inc()

    dependency.__sluice_permission__ = (obj, act)  # type: ignore[attr-defined]
    return Depends(dependency, scope="function")
