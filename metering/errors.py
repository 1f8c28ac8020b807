"""The metering package's error root. Subclasses say what the caller should do; only the app maps them to HTTP."""

from __future__ import annotations

from typing import Any


class MeteringError(Exception):
    """Root of metering errors: a stable `code`, a message that names the rule or setting, and context."""

    code = "metering_error"

    def __init__(self, message: str, *, code: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.context = context


class InvalidPricing(MeteringError):
    """A schedule, cap, price-list entry or period is malformed; fix the input and retry."""

    code = "invalid_pricing"


class PriceRefused(MeteringError):
    """A price breaks government-guided pricing (above its cap, or no cap for it); lower or re-categorize it."""

    code = "price_above_cap"


class UsageConflict(MeteringError):
    """A usage event clashes with a recorded one (same id, different payload); it is never overwritten."""

    code = "usage_conflict"


class BillConflict(MeteringError):
    """A bill is in the wrong state for the request (finalized, stale draft, events already billed)."""

    code = "bill_conflict"
