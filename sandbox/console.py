"""Console sign-in sessions: an API key is exchanged for a random session token (the cookie holds the token, the
store only its SHA-256), with a CSRF token for the session's forms. A session ends at sign-out, at expiry, or as
soon as its API key is revoked or expires: every request re-checks the key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from sandbox.errors import Forbidden, Unauthenticated
from sandbox.identity import Caller
from sandbox.store.models import ApiKey, ConsoleSession, Organization, Principal

COOKIE = "sluice_console"
CSRF_COOKIE = "sluice_csrf"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_csrf() -> str:
    """A fresh CSRF token."""
    return secrets.token_urlsafe(24)


def check_csrf(expected: str | None, presented: str | None) -> None:
    """Refuse a form whose CSRF token does not match (compared in constant time)."""
    if not expected or not presented or not hmac.compare_digest(expected, presented):
        raise Forbidden("the form's CSRF token does not match; reload the page and try again", code="csrf_failed")


def sign_in(session: Session, caller: Caller, *, now: datetime, minutes: int) -> tuple[str, ConsoleSession]:
    """Start a console session for an authenticated caller; returns the cookie token and the row."""
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(token_sha256=_digest(token), key_id=caller.key_id, principal_id=caller.principal_id,
                         csrf_token=new_csrf(), created_at=now, expires_at=now + timedelta(minutes=minutes))
    session.add(row)
    session.flush()
    return token, row


def resolve(session: Session, token: str | None, *, now: datetime) -> tuple[ConsoleSession, Caller]:
    """The session and caller behind a cookie; refuses ended, expired and revoked-key sessions."""
    if not token:
        raise Unauthenticated("sign in to the console", code="console_sign_in_required")
    row = session.get(ConsoleSession, _digest(token))
    if row is None or row.ended_at is not None or row.expires_at <= now:
        raise Unauthenticated("the console session has ended; sign in again", code="console_session_ended")
    found = session.execute(select(ApiKey, Principal, Organization)
                            .join(Principal, ApiKey.principal_id == Principal.id)
                            .join(Organization, Principal.org_id == Organization.id)
                            .where(ApiKey.id == row.key_id)).first()
    if found is None:
        raise Unauthenticated("the console session's key is gone; sign in again", code="console_session_ended")
    key, principal, org = found
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise Unauthenticated("the API key of this session was revoked or expired; sign in with a valid key",
                              code="key_revoked", key_id=key.id)
    return row, Caller(principal_id=principal.id, principal_name=principal.name, org_id=org.id, org_kind=org.kind,
                       roles=tuple(principal.roles), is_platform=org.is_platform, key_id=key.id)


def sign_out(row: ConsoleSession, now: datetime) -> None:
    """End a session."""
    row.ended_at = now
