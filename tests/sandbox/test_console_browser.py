"""The console in a real browser (Playwright driving Debian's chromium against a live server): sign in, filter the
audit trail, verify an entry's proof in the browser (and see a tampered one fail), open a run, open a disclosure
in both languages. Screenshots go to .artifacts/ (git-ignored)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from billing_world import World, build_world
from sluice_api import Api
from sluice_testenv import require_debian_package

from sandbox.app import create_app
from sandbox.bootstrap import init_home
from sandbox.clock import ManualClock
from sandbox.config import Settings
from sandbox.executor import WorkerPool

ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"


@dataclass
class Live:
    url: str
    world: World
    chromium: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live(settings: Settings, clock: ManualClock, tmp_path: Path, worker_pool: WorkerPool) -> Iterator[Live]:
    chromium = require_debian_package("chromium", "chromium")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    s = settings.model_copy(update={"console_allow_http": True, "public_url": url})
    result = init_home(s, clock)
    app = create_app(s, clock, pool=worker_pool)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    with httpx.Client(base_url=url, timeout=60) as http:
        api = Api(settings=s, clock=clock, http=http, admin_key=str(result.api_key),  # type: ignore[arg-type]
                  platform_org_id=result.org_id, tmp=tmp_path)
        world = build_world(api)
        world.set_platform_fees()
        for _ in range(2):
            world.run(world.industry_key, world.industry_job)
        world.run(world.public_key, world.public_job)
        yield Live(url, world, chromium)
    server.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def page(live: Live) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=live.chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="zh-CN")
        pg = context.new_page()
        pg.set_default_timeout(20_000)
        yield pg
        browser.close()


def _sign_in(page: Any, live: Live, key: str) -> None:
    page.goto(f"{live.url}/console/audit")
    assert "/console/sign-in" in page.url
    page.get_by_label("API key").fill(key)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live.url}/console/audit")


def test_a_regulator_signs_in_filters_the_audit_trail_and_verifies_a_proof(live: Live, page: Any) -> None:
    _sign_in(page, live, live.world.regulator_key)
    page.screenshot(path=str(ARTIFACTS / "console-audit.png"), full_page=True)
    page.get_by_label("Action (e.g. run:create, or run:)").fill("run:create")
    page.get_by_label("Decision").select_option("allow")
    page.click("#apply-filters")
    page.wait_for_url("**/console/audit?*action=run%3Acreate*")
    actions = page.locator("#events tbody td.action").all_inner_texts()
    assert actions and set(actions) == {"run:create"}
    assert len(actions) == 3
    first = page.locator("button.verify").first
    seq = first.get_attribute("data-seq")
    first.click()
    result = page.locator(f"#result-{seq}.ok, #result-{seq}.bad")
    result.wait_for()
    assert result.inner_text().startswith("verified in tree"), result.inner_text()
    page.screenshot(path=str(ARTIFACTS / "console-audit-verified.png"), full_page=True)


def test_the_browser_rejects_a_tampered_record(live: Live, page: Any) -> None:
    _sign_in(page, live, live.world.regulator_key)

    def tamper(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["leaf"] = body["leaf"].replace('"decision":"allow"', '"decision":"deny"')
        route.fulfill(response=response, json=body)

    page.route("**/console/audit/proof*", tamper)
    button = page.locator("button.verify").first
    seq = button.get_attribute("data-seq")
    button.click()
    result = page.locator(f"#result-{seq}.ok, #result-{seq}.bad")
    result.wait_for()
    assert result.inner_text().startswith("NOT verified"), result.inner_text()
    page.screenshot(path=str(ARTIFACTS / "console-audit-tampered.png"), full_page=True)


def test_a_regulator_opens_a_run_and_a_disclosure_in_both_languages(live: Live, page: Any) -> None:
    _sign_in(page, live, live.world.regulator_key)
    page.goto(f"{live.url}/console/jobs")
    page.locator("table").first.locator("tbody a").first.click()
    page.wait_for_url("**/console/runs/*")
    assert "GROUP BY" in page.locator("#frozen-sql").inner_text()
    assert page.locator("#run-status").inner_text() == "succeeded"
    page.screenshot(path=str(ARTIFACTS / "console-run.png"), full_page=True)
    page.goto(f"{live.url}/console/disclosures")
    page.click("#draft-2026-en")
    page.wait_for_url("**/console/disclosures/2026?lang=en")
    assert page.locator("#report-title").inner_text() == "Disclosure report 2026"
    assert "DRAFT" in page.locator(".draft").inner_text()
    page.screenshot(path=str(ARTIFACTS / "console-disclosure-en.png"), full_page=True)
    page.click("#other-lang")
    page.wait_for_url("**/console/disclosures/2026?lang=zh-CN")
    assert page.locator("#report-title").inner_text() == "信息披露报告 2026"
    assert page.get_by_role("heading", name="监测评估").count() == 1
    page.screenshot(path=str(ARTIFACTS / "console-disclosure-zh.png"), full_page=True)
