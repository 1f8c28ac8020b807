"""The request middleware: its metrics by route and status, its access-log record and line, and the caller's trace
(tested at the ASGI level, around a small app)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from starlette.testclient import TestClient

from metering.metrics import make_metrics
from sandbox.app import middleware
from sandbox.app.middleware import RequestMiddleware
from sandbox.logs import JsonFormatter
from sandbox.tracing import RequestTracer

CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """Answers /ok 200 and /no 404, both as the route `/r`; the current trace id as the body."""
    scope["route"] = SimpleNamespace(path="/r")
    status = 200 if scope["path"] == "/ok" else 404
    context = trace.get_current_span().get_span_context()
    body = trace.format_trace_id(context.trace_id).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"32")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def access() -> Iterator[tuple[list[logging.LogRecord], io.StringIO]]:
    records: list[logging.LogRecord] = []
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    kept = logging.Handler()
    kept.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("sluice.access")
    level = log.level
    log.addHandler(handler)
    log.addHandler(kept)
    log.setLevel(logging.INFO)
    yield records, stream
    log.removeHandler(handler)
    log.removeHandler(kept)
    log.setLevel(level)


def _client() -> tuple[TestClient, Any]:
    metrics = make_metrics()
    tracer = RequestTracer(TracerProvider().id_generator)
    return TestClient(RequestMiddleware(_app, metrics=metrics, tracer=tracer)), metrics


def test_requests_are_counted_by_route_and_status(access: Any) -> None:
    client, metrics = _client()
    for path in ("/ok", "/ok", "/no", "/ok"):
        client.get(path)
    registry = metrics.registry
    assert registry.get_sample_value("sluice_http_requests_total", {"route": "/r", "status": "200"}) == 3
    assert registry.get_sample_value("sluice_http_requests_total", {"route": "/r", "status": "404"}) == 1
    assert registry.get_sample_value("sluice_http_request_seconds_count", {"route": "/r"}) == 4


def test_every_request_writes_one_access_record_naming_the_middleware_as_its_caller(access: Any) -> None:
    records, stream = access
    client, _ = _client()
    response = client.get("/no", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    assert response.headers["x-trace-id"] == response.text == CALLER_TRACE  # the caller's trace, current inside
    [record] = records
    assert (record.name, record.levelno, record.getMessage()) == ("sluice.access", logging.INFO, "request")
    assert record.pathname == middleware.__file__ and record.funcName == "__call__" and record.lineno > 0
    [line] = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert {k: v for k, v in line.items() if k not in ("time", "duration_ms", "span_id")} == {
        "level": "info", "logger": "sluice.access", "message": "request", "trace_id": CALLER_TRACE,
        "event": "request", "method": "GET", "route": "/r", "path": "/no", "status": 404, "client": "testclient"}
    assert len(line["span_id"]) == 16 and line["span_id"] != CALLER_SPAN and line["duration_ms"] >= 0


def test_no_access_record_is_made_when_its_logger_is_above_info(access: Any) -> None:
    records, _ = access
    logging.getLogger("sluice.access").setLevel(logging.WARNING)
    client, _ = _client()
    assert client.get("/ok").status_code == 200 and records == []


def test_a_log_line_carries_the_current_spans_ids_or_the_trace_id_it_was_given() -> None:
    formatter = JsonFormatter()

    def line(**extra: Any) -> dict[str, Any]:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
        record.__dict__.update(extra)
        return dict(json.loads(formatter.format(record)))

    assert "trace_id" not in line() and "span_id" not in line()
    assert (line(trace_id="t" * 32)["trace_id"], line(trace_id="t" * 32)["span_id"]) == ("t" * 32, None)
    span = RequestTracer(TracerProvider().id_generator).start_span("GET")
    ids = span.get_span_context()
    with trace.use_span(span):
        assert (line()["trace_id"], line()["span_id"]) == (trace.format_trace_id(ids.trace_id),
                                                          trace.format_span_id(ids.span_id))
        assert (line(trace_id="t" * 32)["trace_id"], line(trace_id="t" * 32)["span_id"]) == (
            "t" * 32, trace.format_span_id(ids.span_id))
