"""The sandbox package's error root. Subclasses say what the caller should do; only the app maps them to HTTP."""

from __future__ import annotations

from typing import Any


class SluiceError(Exception):
    """Root of sandbox errors: a stable `code`, a human message that names the rule, and context."""

    code = "sluice_error"

    def __init__(self, message: str, *, code: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.context = context


class InvalidInput(SluiceError):
    """The request is malformed or breaks a rule; fix the input and retry."""

    code = "invalid_input"


class NotFound(SluiceError):
    """The thing does not exist (or is not visible to the caller)."""

    code = "not_found"


class Conflict(SluiceError):
    """The request clashes with current state (duplicate, wrong lifecycle state)."""

    code = "conflict"


class Unauthenticated(SluiceError):
    """No valid credential; present a valid, unrevoked, unexpired API key."""

    code = "unauthenticated"


class Forbidden(SluiceError):
    """Authenticated, but the permission matrix or a domain rule refuses the action."""

    code = "forbidden"


class Refused(SluiceError):
    """A policy decision refused the request (grade, scope, constraint); the reason is audited."""

    code = "refused"


class NotFoundOrNotYours(Forbidden):
    """The id names nothing the caller may see: missing, or another organization's (answered alike)."""

    code = "not_found_or_not_yours"


class RateLimited(SluiceError):
    """Too many requests without a valid API key from one client address; wait `retry_after` seconds."""

    code = "rate_limited"
