"""The policy package's error root."""

from __future__ import annotations

from typing import Any


class PolicyError(Exception):
    """Root of policy errors: a stable `code`, a message naming the rule, and context."""

    code = "policy_error"

    def __init__(self, message: str, *, code: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.context = context


class ConstraintLoosening(PolicyError):
    """A grant tried to loosen a column constraint; only tightening is allowed."""

    code = "grant_loosens_constraint"
