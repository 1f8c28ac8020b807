"""A pure ASGI middleware that counts and times requests (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metering.metrics import Metrics


class MetricsMiddleware:
    """Records request count and latency by route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            label = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(label, str(status)).inc()
            self.metrics.request_seconds.labels(label).observe(time.perf_counter() - start)
