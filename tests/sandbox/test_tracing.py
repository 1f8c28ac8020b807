"""Tracing: every request has a real trace id, spans cover the request, submission and run phases, the trace id
joins the audit record and the JSON log line, and spans really arrive at an OTLP/HTTP receiver."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sluice_api import Api
from sqlalchemy import select
from starlette.testclient import TestClient

from sandbox.app import create_app
from sandbox.bootstrap import init_home
from sandbox.clock import ManualClock
from sandbox.config import Settings
from sandbox.executor import WorkerPool
from sandbox.logs import JsonFormatter
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditEvent
from sandbox.tracing import current_span_id, make_tracing, otlp_configured

WEATHER = "district,temperature\n" + "".join(f"d{i % 3},{i}.5\n" for i in range(30))


@pytest.fixture
def no_otlp(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)


def _audit_rows(settings: Settings) -> list[AuditEvent]:
    engine = make_engine(settings.resolved_database_url)
    with session_factory(engine)() as s:
        rows = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    engine.dispose()
    return rows


def test_without_an_endpoint_nothing_is_exported_but_trace_ids_are_real(no_otlp: None) -> None:
    assert not otlp_configured()
    tracing = make_tracing()
    assert not tracing.exporting
    with tracing.tracer.start_as_current_span("x") as span:
        assert span.get_span_context().trace_id != 0


def test_without_an_exporter_spans_inside_a_request_are_not_made_and_the_request_span_stays_current(
        no_otlp: None) -> None:
    tracing = make_tracing()
    with tracing.tracer.start_as_current_span("POST /v1/jobs/{job_id}/runs") as request:
        with tracing.spans.start_as_current_span("sluice.run") as inner:
            assert not inner.is_recording()
            assert inner.get_span_context() == request.get_span_context()
            assert current_span_id() == format(request.get_span_context().span_id, "016x")
        phased = tracing.spans.start_span("sluice.run.execute")
        assert not phased.is_recording() and phased.get_span_context() == request.get_span_context()


def test_with_an_exporter_spans_inside_a_request_are_made() -> None:
    exporter = InMemorySpanExporter()
    tracing = make_tracing(exporter)
    with tracing.tracer.start_as_current_span("request"), tracing.spans.start_as_current_span("sluice.run"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["sluice.run", "request"]


def test_otel_traces_exporter_none_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert otlp_configured()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not otlp_configured()


def test_every_request_gets_a_trace_id_in_its_header_audit_record_and_log(api: Api, no_otlp: None) -> None:
    handler = logging.StreamHandler(stream := io.StringIO())
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("sluice.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        resp = api.call("GET", "/v1/me", api.admin_key)
        refused = api.call("GET", "/v1/orgs", "sk_0123456789ab_" + "A" * 43)
    finally:
        access.removeHandler(handler)
    trace_id = resp.headers["x-trace-id"]
    assert len(trace_id) == 32 and int(trace_id, 16) != 0
    assert refused.headers["x-trace-id"] != trace_id
    rows = {r.trace_id: r for r in _audit_rows(api.settings)}
    assert rows[trace_id].action == "self:read" and rows[refused.headers["x-trace-id"]].code == "key_unknown"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    logged = next(line for line in lines if line.get("trace_id") == trace_id)
    assert logged["route"] == "/v1/me" and logged["status"] == 200 and logged["level"] == "info"


def test_a_request_carrying_a_traceparent_joins_the_callers_trace_without_an_exporter(api: Api, no_otlp: None
                                                                                      ) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    resp = api.http.get("/v1/me", headers={**api.as_(api.admin_key),
                                           "traceparent": f"00-{caller_trace}-{caller_span}-01"})
    assert resp.status_code == 200 and resp.headers["x-trace-id"] == caller_trace
    assert _audit_rows(api.settings)[-1].trace_id == caller_trace
    tracing = make_tracing()
    request = tracing.requests.start_span("GET /v1/me")  # the request span: real ids, nothing recorded
    context = request.get_span_context()
    assert not request.is_recording() and context.trace_id != 0 and context.span_id != 0


def test_request_submission_and_run_phases_are_spans(settings: Settings, clock: ManualClock, tmp_path: Path,
                                                     worker_pool: WorkerPool, no_otlp: None) -> None:
    exporter = InMemorySpanExporter()
    admin = init_home(settings, clock).api_key
    assert admin
    app = create_app(settings, clock, pool=worker_pool, span_exporter=exporter)
    with TestClient(app) as http:
        api = Api(settings=settings, clock=clock, http=http, admin_key=admin, platform_org_id="", tmp=tmp_path)
        _, steward = api.actor("provider", "data_steward")
        api.register(steward, dataset_id="weather", content=WEATHER, domain="meteorology")
        op, key = api.actor("operator", "operator")
        grant = api.grant(op, scope="domain", domains=["meteorology"], auto_approve=True,
                          valid_until=(clock.now() + timedelta(days=30)).isoformat())["id"]
        job = api.ok("POST", "/v1/jobs", key, json={"grant_id": grant, "title": "t", "purpose": "p",
                                                    "sql": "SELECT district, avg(temperature) FROM weather GROUP BY 1"})
        resp = http.post(f"/v1/jobs/{job['id']}/runs", json={}, headers=api.as_(key))
        assert resp.status_code == 201 and resp.json()["status"] == "succeeded"
    spans = exporter.get_finished_spans()
    names = {s.name for s in spans}
    assert {"sluice.job.submit", "sluice.job.parse", "sluice.job.analyse", "sluice.run", "sluice.run.check",
            "sluice.run.queue", "sluice.run.execute", "sluice.run.output_control", "sluice.run.meter",
            "sluice.run.audit"} <= names
    trace_id = int(resp.headers["x-trace-id"], 16)
    server = next(s for s in spans if s.name == "POST /v1/jobs/{job_id}/runs")
    assert server.context.trace_id == trace_id
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 201
    assert server.attributes["http.route"] == "/v1/jobs/{job_id}/runs"
    in_run = {s.name for s in spans if s.context.trace_id == trace_id}
    assert {"sluice.run.execute", "sluice.run.output_control", "sluice.run.audit"} <= in_run
    run_span = next(s for s in spans if s.name == "sluice.run")
    assert run_span.attributes and run_span.attributes["sluice.run_status"] == "succeeded"
    record = next(r for r in _audit_rows(settings) if r.action == "run:create")
    assert record.trace_id == resp.headers["x-trace-id"]


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            _Receiver.received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_spans_arrive_at_an_otlp_http_receiver(settings: Settings, clock: ManualClock, worker_pool: WorkerPool,
                                               receiver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "sluice-under-test")
    admin = init_home(settings, clock).api_key
    app = create_app(settings, clock, pool=worker_pool)
    with TestClient(app) as http:
        resp = http.get("/v1/me", headers={"Authorization": f"Bearer {admin}"})
        assert resp.status_code == 200
    # leaving the app shuts the tracer down, which flushes the batch to the receiver
    spans = [(span, rs.resource) for req in _Receiver.received for rs in req.resource_spans
             for ss in rs.scope_spans for span in ss.spans]
    me = [(s, r) for s, r in spans if s.name == "GET /v1/me"]
    assert me, [s.name for s, _ in spans]
    span, resource = me[0]
    assert span.trace_id.hex() == resp.headers["x-trace-id"]
    services = {a.value.string_value for a in resource.attributes if a.key == "service.name"}
    assert services == {"sluice-under-test"}


def test_the_service_log_leaves_out_casbins_model_and_policy_dump() -> None:
    import io
    import logging

    from policy.authz import Authorizer
    from sandbox.logs import configure_json_logging

    names = ("casbin", "casbin.policy", "casbin.enforcer", "casbin.role")
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, [(logging.getLogger(n).level, logging.getLogger(n).disabled)
                                                for n in names])
    stream = io.StringIO()
    try:
        configure_json_logging(stream=stream)
        for name in names:  # as in a fresh process: casbin disables its loggers after the first enforcer
            logging.getLogger(name).disabled = False
        Authorizer([("p", "operator.operator", "run", "create", "own")])
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, (level, disabled) in zip(names, saved[2], strict=True):
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).disabled = disabled
    assert stream.getvalue() == ""  # before: the model and every policy row, one INFO record each
