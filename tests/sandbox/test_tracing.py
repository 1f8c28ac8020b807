"""Tracing: off by default (no-op), and with SLUICE_TRACING_ENABLED the run path emits its spans."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer
from sluice_api import Api
from starlette.testclient import TestClient

from sandbox.app import create_app
from sandbox.bootstrap import init_home
from sandbox.clock import ManualClock
from sandbox.config import Settings
from sandbox.executor import WorkerPool
from sandbox.tracing import make_tracer

WEATHER = "district,temperature\n" + "".join(f"d{i % 3},{i}.5\n" for i in range(30))


def test_tracing_is_a_no_op_unless_enabled() -> None:
    assert isinstance(make_tracer(False), NoOpTracer)


def test_run_path_emits_spans_when_tracing_is_enabled(settings: Settings, clock: ManualClock, tmp_path: Path,
                                                      worker_pool: WorkerPool) -> None:
    settings = settings.model_copy(update={"tracing_enabled": True})
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
        run = api.ok("POST", f"/v1/jobs/{job['id']}/runs", key, json={})
        assert run["status"] == "succeeded"
    names = {s.name for s in exporter.get_finished_spans()}
    assert {"sluice.job.submit", "sluice.run", "sluice.run.check", "sluice.run.execute", "sluice.run.record"} <= names
    run_span = next(s for s in exporter.get_finished_spans() if s.name == "sluice.run")
    assert run_span.attributes and run_span.attributes["sluice.run_status"] == "succeeded"
