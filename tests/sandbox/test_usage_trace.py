"""A run's usage event carries the trace id of the request's OpenTelemetry span."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sluice_api import Api
from starlette.testclient import TestClient

from sandbox.app import create_app
from sandbox.bootstrap import init_home
from sandbox.clock import ManualClock
from sandbox.config import Settings
from sandbox.executor import WorkerPool

WEATHER = "district,temperature\n" + "".join(f"d{i % 3},{i}.5\n" for i in range(30))


def test_usage_event_carries_the_runs_trace_id(settings: Settings, clock: ManualClock, tmp_path: Path,
                                               worker_pool: WorkerPool) -> None:
    settings = settings.model_copy(update={"tracing_enabled": True})
    exporter = InMemorySpanExporter()
    init = init_home(settings, clock)
    assert init.api_key
    app = create_app(settings, clock, pool=worker_pool, span_exporter=exporter)
    with TestClient(app) as http:
        api = Api(settings=settings, clock=clock, http=http, admin_key=init.api_key, platform_org_id=init.org_id,
                  tmp=tmp_path)
        _, steward = api.actor("provider", "data_steward")
        api.register(steward, dataset_id="weather", content=WEATHER, domain="meteorology")
        op, key = api.actor("operator", "operator")
        grant = api.grant(op, scope="domain", domains=["meteorology"], auto_approve=True,
                          valid_until=(clock.now() + timedelta(days=30)).isoformat())["id"]
        job = api.ok("POST", "/v1/jobs", key, json={"grant_id": grant, "title": "t", "purpose": "p",
                                                    "sql": "SELECT district, avg(temperature) FROM weather GROUP BY 1"})
        run = api.ok("POST", f"/v1/jobs/{job['id']}/runs", key, json={})
        [event] = api.ok("GET", "/v1/usage", key)["events"]
    run_span = next(s for s in exporter.get_finished_spans() if s.name == "sluice.run")
    assert event["id"] == f"run:{run['id']}"
    assert event["trace_id"] == format(run_span.context.trace_id, "032x")
