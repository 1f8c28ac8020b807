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



def test_swagger_ui_is_served_offline_and_the_openapi_document_declares_bearer_auth(api) -> None:  # type: ignore[no-untyped-def]
    page = api.http.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    assert '"/docs/swagger-ui-bundle.js"' in page.text and '"/docs/swagger-ui.css"' in page.text
    js = api.http.get("/docs/swagger-ui-bundle.js")
    assert js.status_code == 200 and "SwaggerUIBundle" in js.text and len(js.content) > 100_000
    assert api.http.get("/docs/swagger-ui.css").status_code == 200
    doc = api.http.get("/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "an API key: sk_<id>_<secret>"}
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/v1/domains"]["get"]["security"] == []  # public routes need no key
    assert "security" not in doc["paths"]["/v1/jobs"]["post"]  # the document-wide bearer requirement applies
