"""Console pages without a browser: sign-in exchanges a key for an HTTP-only, Secure session cookie behind a CSRF
check; every page view is audited; revoking the key ends the session; operators see only their own records;
public pages and the certificate page need no sign-in."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from billing_world import World, build_world
from sluice_api import Api
from sqlalchemy import select
from starlette.testclient import TestClient

from sandbox.app import create_app
from sandbox.bootstrap import init_home
from sandbox.clock import ManualClock
from sandbox.config import Settings
from sandbox.executor import WorkerPool
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditEvent


@pytest.fixture
def world(settings: Settings, clock: ManualClock, tmp_path: Path, worker_pool: WorkerPool) -> Iterator[World]:
    s = settings.model_copy(update={"console_allow_http": True})
    result = init_home(s, clock)
    app = create_app(s, clock, pool=worker_pool)
    with TestClient(app, raise_server_exceptions=False) as http:
        api = Api(settings=s, clock=clock, http=http, admin_key=str(result.api_key),
                  platform_org_id=result.org_id, tmp=tmp_path)
        w = build_world(api)
        w.set_platform_fees()
        yield w
    app.state.sluice.engine.dispose()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found
    return found.group(1)


def sign_in(http: TestClient, key: str) -> None:
    http.cookies.clear()
    page = http.get("/console/sign-in")
    resp = http.post("/console/sign-in", data={"api_key": key, "csrf": _csrf(page.text), "next": "/console"},
                     follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/console", resp.text


def _views(api: Api, action: str) -> list[AuditEvent]:
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine)() as s:
        rows = list(s.scalars(select(AuditEvent).where(AuditEvent.action == action, AuditEvent.via == "console")
                            .order_by(AuditEvent.id)))  # in the order written (PostgreSQL has no default order)
    engine.dispose()
    return rows


def test_signing_in_sets_an_http_only_cookie_and_pages_are_audited(world: World) -> None:
    http = world.api.http
    assert http.get("/console/audit", follow_redirects=False).headers["location"].startswith("/console/sign-in")
    sign_in(http, world.regulator_key)
    for path in ("/console", "/console/audit", "/console/grants", "/console/datasets", "/console/jobs",
                 "/console/usage", "/console/disclosures"):
        resp = http.get(path)
        assert resp.status_code == 200 and "<h1" in resp.text, (path, resp.text[:300])
    views = _views(world.api, "audit:read")  # the redirected view without a session, then the signed-in one
    assert [(v.decision, v.code) for v in views] == [("deny", "console_sign_in_required"), ("allow", None)]


def test_the_cookie_is_secure_unless_plain_http_is_allowed(settings: Settings, clock: ManualClock) -> None:
    init_home(settings, clock)
    app = create_app(settings, clock)
    with TestClient(app) as http:
        cookie = http.get("/console/sign-in").headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    app.state.sluice.engine.dispose()


def test_a_sign_in_without_the_csrf_token_is_refused(world: World) -> None:
    http = world.api.http
    http.get("/console/sign-in")
    resp = http.post("/console/sign-in", data={"api_key": world.regulator_key, "csrf": "forged"},
                     follow_redirects=False)
    assert resp.status_code == 403 and resp.json()["code"] == "csrf_failed"


def test_revoking_the_key_ends_its_sessions(world: World) -> None:
    api = world.api
    org = api.org("regulator")
    created = api.ok("POST", "/v1/principals", api.admin_key, json={"org_id": org, "name": "r", "roles": ["regulator"]})
    sign_in(api.http, created["api_key"])
    assert api.http.get("/console/grants").status_code == 200
    key_id = created["api_key"].split("_")[1]
    api.ok("POST", f"/v1/principals/{created['id']}/keys/{key_id}/revoke", api.admin_key, json={"reason": "left"})
    resp = api.http.get("/console/grants", follow_redirects=False)
    assert resp.status_code == 303 and "key_revoked" in resp.headers["location"]


def test_operators_see_only_their_own_runs(world: World) -> None:
    mine = world.run(world.industry_key, world.industry_job)
    theirs = world.run(world.public_key, world.public_job)
    sign_in(world.api.http, world.industry_key)
    page = world.api.http.get("/console/jobs").text
    assert mine["id"] in page and theirs["id"] not in page
    assert world.api.http.get(f"/console/runs/{theirs['id']}").status_code == 404
    run_page = world.api.http.get(f"/console/runs/{mine['id']}").text
    assert "GROUP BY" in run_page and "Frozen SQL" in run_page


def test_public_pages_need_no_sign_in(world: World) -> None:
    http = world.api.http
    http.cookies.clear()
    assert http.get("/console/catalogue").status_code == 200
    assert http.get("/console/published").status_code == 200
    assert http.get("/console/published/2026").json()["code"] == "disclosure_not_published"


def test_a_certificate_url_serves_a_page_to_browsers_and_json_to_others(world: World) -> None:
    http = world.api.http
    version = world.api.ok("GET", f"/v1/datasets/{world.dataset}/versions/1", world.api.admin_key)
    code = version["certificate_code"]
    page = http.get(f"/v1/certificates/{code}", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.headers["content-type"].startswith("text/html")
    assert "验证通过" in page.text and "Verified" in page.text
    assert http.get(f"/v1/certificates/{code}").json()["valid"] is True


def test_a_regulator_downloads_the_audit_export_and_disclosure_files_without_the_cli(world: World,
                                                                                    tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from disclosure.checkpoint import verifier_key
    from disclosure.sealed import verify_report
    from disclosure.signing import KeyRing
    from sandbox.cli import app

    world.run(world.industry_key, world.industry_job)
    http = world.api.http
    sign_in(http, world.regulator_key)
    export = http.get("/console/audit/export", params={"action": "run:create"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
    (tmp_path / "export.jsonl").write_bytes(export.content)
    ring = KeyRing(world.api.settings.keys_dir)
    [key] = ring.public_keys("checkpoint").values()
    (tmp_path / "log.vkey").write_text(verifier_key(world.api.settings.resolved_log_origin, key))
    verified = CliRunner().invoke(app, ["audit", "verify", str(tmp_path / "export.jsonl"), "--public-key",
                                        str(tmp_path / "log.vkey")])
    assert verified.exit_code == 0, verified.output
    bundle = http.get("/console/disclosures/2026/file", params={"format": "csv", "lang": "zh-CN"})
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as z:  # a draft's JSON and its signature, built together
        data, signature = z.read("report.json"), json.loads(z.read("report.sig.json"))
        assert "运营机构" in z.read("usage.csv").decode("utf-8-sig")
    assert verify_report(data, signature, ring.public_keys("disclosure")) == signature["signature"]["kid"]
    assert json.loads(http.get("/console/disclosures/2026/file", params={"format": "json"}).content)["status"] == \
        "draft"
    sign_in(http, world.industry_key)
    assert http.get("/console/disclosures/2026/file").json()["code"] == "disclosure_not_published"


def test_the_public_catalogue_lists_listed_products_with_their_prices(settings: Settings, clock: ManualClock,
                                                                      tmp_path: Path, worker_pool: WorkerPool) -> None:
    from product_world import build_shop

    init = init_home(settings, clock)
    app = create_app(settings, clock, pool=worker_pool)
    with TestClient(app, raise_server_exceptions=False) as http:
        api = Api(settings=settings, clock=clock, http=http, admin_key=str(init.api_key),
                  platform_org_id=init.org_id, tmp=tmp_path)
        shop = build_shop(api)
        product = shop.listed()
        page = http.get("/console/catalogue").text
    app.state.sluice.engine.dispose()
    assert f"District income ({product['id']})" in page and "0.4" in page
