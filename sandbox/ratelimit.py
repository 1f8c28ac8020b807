"""Per-client-address token buckets for requests made without a valid API key.

Anyone can make audit records without a key (failed authentication, public reads), so those requests are
limited per client address (SLUICE_UNAUTHENTICATED_RATE_PER_MINUTE, SLUICE_UNAUTHENTICATED_BURST). Limiting is
audited without letting the limiting itself flood the log: the first refusal of a burst is recorded at once,
and later ones are counted into the next record, at most one per address per `report_seconds`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float
    refused: int = 0  # refusals not yet recorded
    reported_at: float = float("-inf")


@dataclass(frozen=True)
class Verdict:
    """Whether a request may go on; when not, whether to write an audit record now and how many it covers."""

    allowed: bool
    record: bool = False
    refused: int = 0
    retry_after: int = 0


class RateLimiter:
    """Token buckets keyed by client address; `per_minute` 0 disables limiting. Thread-safe."""

    def __init__(self, per_minute: int, burst: int, *, report_seconds: float = 60.0, max_clients: int = 100_000
                 ) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.report_seconds = report_seconds
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def check(self, client: str | None, now: float) -> Verdict:
        """Take one token for `client` at monotonic time `now`."""
        if self.rate <= 0:
            return Verdict(True)
        key = client or "unknown"
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_clients:
                    self._forget_full(now)
                bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), at=now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return Verdict(True)
            bucket.refused += 1
            retry = max(1, int((1.0 - bucket.tokens) / self.rate + 0.999))
            if now - bucket.reported_at >= self.report_seconds:
                refused, bucket.refused, bucket.reported_at = bucket.refused, 0, now
                return Verdict(False, record=True, refused=refused, retry_after=retry)
            return Verdict(False, retry_after=retry)

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (they behave exactly like new ones)."""
        for key in [k for k, b in self._buckets.items()
                    if b.refused == 0 and b.tokens + (now - b.at) * self.rate >= self.burst]:
            del self._buckets[key]
        if len(self._buckets) >= self.max_clients:  # still full: forget the oldest
            for key in sorted(self._buckets, key=lambda k: self._buckets[k].at)[: self.max_clients // 10]:
                del self._buckets[key]
