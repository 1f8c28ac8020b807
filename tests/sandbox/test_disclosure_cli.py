"""`sluice disclose`: a draft in every format and language, publication of a closed period, offline verification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from billing_world import World, build_world
from sluice_api import Api
from typer.testing import CliRunner

from sandbox.cli import app


@pytest.fixture
def world(api: Api, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("SLUICE_HOME", str(api.settings.home))
    monkeypatch.setenv("SLUICE_DATABASE_URL", api.settings.resolved_database_url)
    w = build_world(api)
    w.run(w.industry_key, w.industry_job)
    return w


def sluice(*args: str, key: str | None = None, code: int = 0) -> Any:
    result = CliRunner().invoke(app, [*(["--api-key", key] if key else []), *args])
    assert result.exit_code == code, (args, result.output)
    return result


def test_a_draft_is_written_in_every_format_and_language(world: World, tmp_path: Path) -> None:
    out = tmp_path / "d"
    summary = json.loads(sluice("disclose", "--period", "2026", "--out", str(out), "--json",
                                key=world.regulator_key).stdout)
    assert summary["status"] == "draft"
    names = {p.name for p in out.iterdir()}
    assert {"disclosure-2026.json", "disclosure-2026.sig.json", "disclosure-2026.en.html", "disclosure-2026.zh-CN.html",
            "disclosure-2026.en.md", "disclosure-2026.zh-CN.md", "disclosure-2026.en.csv",
            "disclosure-2026.zh-CN.csv"} == names
    assert (out / "disclosure-2026.en.csv" / "evaluation.csv").exists()
    verified = json.loads(sluice("disclose", "verify", str(out / "disclosure-2026.json"), "--json").stdout)
    assert verified["verified"] is True and verified["status"] == "draft"
    report = out / "disclosure-2026.json"
    report.write_bytes(report.read_bytes().replace(b'"draft"', b'"final"'))
    failed = sluice("disclose", "verify", str(report), code=1)
    assert "NOT VERIFIED" in failed.output and "Traceback" not in failed.output


def test_operators_get_a_clear_error_for_drafts_and_bad_periods(world: World, tmp_path: Path) -> None:
    denied = sluice("disclose", "--period", "2026", "--out", str(tmp_path), key=world.industry_key, code=1)
    assert "permission_denied" in denied.output and "Traceback" not in denied.output
    bad = sluice("disclose", "--period", "2026-Q7", key=world.regulator_key, code=1)
    assert "invalid_period" in bad.output


def test_the_agency_publishes_a_closed_period(world: World, tmp_path: Path) -> None:
    published = json.loads(sluice("disclose", "publish", "--period", "2025", "--json", key=world.api.admin_key).stdout)
    assert len(published["sha256"]) == 64
    out = tmp_path / "p"
    summary = json.loads(sluice("disclose", "--period", "2025", "--format", "json", "--lang", "en", "--out",
                                str(out), "--json", key=world.industry_key).stdout)
    assert summary["status"] == "final" and summary["sha256"] == published["sha256"]
    assert json.loads(sluice("disclose", "verify", str(out / "disclosure-2025.json"), "--json").stdout)["verified"]
    open_period = sluice("disclose", "publish", "--period", "2026", key=world.api.admin_key, code=1)
    assert "period_not_closed" in open_period.output
