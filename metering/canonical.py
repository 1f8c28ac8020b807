"""The canonical forms that are hashed: sorted, compact UTF-8 JSON and UTC times written with a `Z`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any


def canonical_sha256(value: Any) -> str:
    """SHA-256 of sorted-key, compact, UTF-8 JSON."""
    raw = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def utc_text(at: datetime) -> str:
    """RFC 3339 UTC with a Z, to the microsecond when there is one."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
