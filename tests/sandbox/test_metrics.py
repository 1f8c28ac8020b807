"""Prometheus: the operations metrics are served, named by convention, free of unbounded labels, valid for
promtool, and aggregated across several `sluice serve` worker processes."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import sluice_testenv
from billing_world import build_world

from bench.server import Server

EXPECTED = ("sluice_runs_total", "sluice_run_duration_seconds_bucket", "sluice_scanned_rows_total",
            "sluice_suppressed_cells_total", "sluice_analysis_rejections_total", "sluice_audit_append_seconds_bucket",
            "sluice_http_request_seconds_bucket", "sluice_http_requests_total", "sluice_run_start_record_seconds")


def promtool_check(exposition: str) -> None:
    promtool = sluice_testenv.require_debian_package("promtool", "prometheus")
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_metrics_cover_runs_rejections_and_audit_and_pass_promtool(api) -> None:  # type: ignore[no-untyped-def]
    w = build_world(api)
    w.run(w.industry_key, w.industry_job)
    w.run(w.industry_key, w.industry_job, s="x")
    refused = api.call("POST", "/v1/jobs", w.industry_key, json={
        "grant_id": api.ok("GET", "/v1/grants", w.industry_key)[0]["id"], "title": "t", "purpose": "p",
        "sql": f"DELETE FROM {w.dataset}"})
    assert refused.status_code == 422
    codes = {f["code"] for f in refused.json()["context"]["findings"]}
    text = api.http.get("/metrics").text
    for name in EXPECTED:
        assert name in text, name
    assert re.search(r'sluice_runs_total\{status="succeeded"\} 1\.0', text)
    assert re.search(r'sluice_runs_total\{status="failed"\} 1\.0', text)
    assert re.search(r'sluice_scanned_rows_total 80\.0', text)
    for code in codes:
        assert f'sluice_analysis_rejections_total{{code="{code}"}} 1.0' in text
    assert 'sluice_audit_append_seconds_count{path="group_commit"}' in text
    for org in (w.industry, w.public, w.provider, w.customer, api.platform_org_id):
        assert org not in text  # no organization (or other unbounded) label values
    promtool_check(text)


@pytest.mark.slow
def test_multiprocess_metrics_aggregate_every_worker_process(tmp_path: Path, fresh_postgres_url: str) -> None:
    server = Server(tmp_path / "home", {"SLUICE_PROCESSES": "3", "SLUICE_WORKERS": "1",
                                        "SLUICE_DATABASE_URL": fresh_postgres_url})
    server.init()
    server.start()
    try:
        def healthz_count() -> float:
            text = httpx.get(f"{server.base}/metrics", timeout=10).text
            m = re.search(r'sluice_http_requests_total\{route="/healthz",status="200"\} ([0-9.e+]+)', text)
            return float(m.group(1)) if m else 0.0

        before = healthz_count()
        for _ in range(60):
            with httpx.Client(base_url=server.base, timeout=10) as fresh:  # new connections spread over workers
                assert fresh.get("/healthz").status_code == 200
        assert healthz_count() - before == 60  # whichever process answers the scrape counts every process
        pids = {re.sub(r"\D", "", f) for f in os.listdir(tmp_path / "home" / "metrics")}
        assert len(pids) >= 2, pids
        promtool_check(httpx.get(f"{server.base}/metrics", timeout=10).text)
    finally:
        server.stop()
