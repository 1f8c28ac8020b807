"""The request middleware (pure ASGI, cheaper than BaseHTTPMiddleware): a server span that makes the request's
trace id, Prometheus request metrics, the `X-Trace-Id` response header and one JSON access-log line."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metering.metrics import Metrics
from sandbox.tracing import RequestTracer

access_log = logging.getLogger("sluice.access")
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = (b"traceparent", b"tracestate")  # all the propagator reads


def client_address(scope: Scope) -> str | None:
    """The client's address as the server saw it (uvicorn applies trusted proxy headers before this)."""
    client = scope.get("client")
    return str(client[0]) if client else None


class RequestMiddleware:
    """One server span per HTTP request (semantic-convention attributes), metrics and an access-log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics, tracer: trace.Tracer) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer
        self.records = not isinstance(tracer, RequestTracer)  # a span that records its attributes and status
        # the metrics' children by label values, as `labels()` returns them (it looks them up under a lock each time)
        self._counted: dict[tuple[str, int], Any] = {}
        self._timed: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        if self.records:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        else:  # the span records no user agent: only what the propagator reads (the same value: the last one sent)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])
                       if k in _TRACE_HEADERS}
        parent = _PROPAGATOR.extract(headers)
        method = scope.get("method", "GET")
        if self.records:
            span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER, attributes={
                "http.request.method": method, "url.path": scope.get("path", ""),
                "url.scheme": scope.get("scheme", "http"), "client.address": client_address(scope) or "",
                "network.protocol.version": scope.get("http_version", "1.1"),
                "user_agent.original": headers.get("user-agent", "")})
        else:
            span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER)
        trace_id = trace.format_trace_id(span.get_span_context().trace_id)
        scope.setdefault("state", {})["trace_id"] = trace_id
        token = otel_context.attach(trace.set_span_in_context(span, parent))

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-trace-id", trace_id.encode("ascii"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            route: Any = scope.get("route")
            label = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - start
            if self.records:
                if route is not None:
                    span.update_name(f"{method} {label}")
                    span.set_attribute("http.route", label)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            counted = self._counted.get((label, status))
            if counted is None:
                counted = self._counted[(label, status)] = self.metrics.requests.labels(label, str(status))
            counted.inc()
            timed = self._timed.get(label)
            if timed is None:
                timed = self._timed[label] = self.metrics.request_seconds.labels(label)
            timed.observe(elapsed)
            if access_log.isEnabledFor(logging.INFO):  # `access_log.info(...)`, this frame named as its caller
                here = sys._getframe()
                access_log.handle(access_log.makeRecord(
                    access_log.name, logging.INFO, here.f_code.co_filename, here.f_lineno, "request", (), None,
                    here.f_code.co_name, {"event": "request", "method": method, "route": label,
                                          "path": scope.get("path", ""), "status": status,
                                          "duration_ms": round(elapsed * 1000, 3),
                                          "client": client_address(scope)}))
            otel_context.detach(token)
            span.end()
