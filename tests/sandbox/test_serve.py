"""`sluice serve` really serves, and the OpenAPI document is complete."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bench.server import Server


@pytest.mark.slow
def test_sluice_serve_answers_health_and_authenticated_calls(tmp_path: Path) -> None:
    server = Server(tmp_path / "home")
    key = server.init()
    server.start()
    try:
        base = server.base
        me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert me.status_code == 200 and me.json()["roles"] == ["admin"]
        denied = httpx.get(f"{base}/v1/orgs", timeout=5)
        assert denied.status_code == 401 and denied.headers["content-type"].startswith("application/problem+json")
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert "sluice_http_requests_total" in metrics
    finally:
        server.stop()


def test_openapi_document_lists_every_v1_route(api) -> None:  # type: ignore[no-untyped-def]
    doc = api.http.get("/openapi.json").json()
    paths = set(doc["paths"])
    for expected in ["/v1/orgs", "/v1/principals", "/v1/principals/{principal_id}/keys/{key_id}/revoke",
                     "/v1/datasets", "/v1/datasets/{dataset_id}", "/v1/grants", "/v1/grants/{grant_id}/suspend",
                     "/v1/grants/{grant_id}/revoke", "/v1/grants/{grant_id}/reinstate", "/v1/certificates/{code}",
                     "/healthz"]:
        assert expected in paths, expected

