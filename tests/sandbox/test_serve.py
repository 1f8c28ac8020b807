"""`sluice serve` really serves, and the OpenAPI document is complete."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_sluice_serve_answers_health_and_authenticated_calls(tmp_path: Path) -> None:
    env = {**os.environ, "SLUICE_HOME": str(tmp_path / "home")}
    env.pop("SLUICE_DATABASE_URL", None)
    init = subprocess.run([sys.executable, "-m", "sandbox.cli", "init", "--json"], env=env, capture_output=True,
                          text=True, check=True)
    import json

    key = json.loads(init.stdout)["api_key"]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not come up")
        me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert me.status_code == 200 and me.json()["roles"] == ["admin"]
        denied = httpx.get(f"{base}/v1/orgs", timeout=5)
        assert denied.status_code == 401 and denied.headers["content-type"].startswith("application/problem+json")
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert "sluice_http_requests_total" in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_openapi_document_lists_every_v1_route(api) -> None:  # type: ignore[no-untyped-def]
    doc = api.http.get("/openapi.json").json()
    paths = set(doc["paths"])
    for expected in ["/v1/orgs", "/v1/principals", "/v1/principals/{principal_id}/keys/{key_id}/revoke",
                     "/v1/datasets", "/v1/datasets/{dataset_id}", "/v1/grants", "/v1/grants/{grant_id}/suspend",
                     "/v1/grants/{grant_id}/revoke", "/v1/grants/{grant_id}/reinstate", "/v1/certificates/{code}",
                     "/healthz"]:
        assert expected in paths, expected

