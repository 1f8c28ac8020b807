"""The disclosure package's error root."""

from __future__ import annotations

from typing import Any


class DisclosureError(Exception):
    """Root of disclosure errors (signing, audit log, reports): a stable `code`, a message, and context."""

    code = "disclosure_error"

    def __init__(self, message: str, *, code: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.context = context
