"""Settings are documented and only config.py reads SLUICE_* variables."""

from __future__ import annotations

import re
from pathlib import Path

from sandbox.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text("utf-8")
    documented = set(re.findall(r"`(SLUICE_[A-Z_]+)`", doc))
    expected = {f"SLUICE_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "undocumented settings"
    assert documented - expected == set(), "documented settings that do not exist"


def test_only_config_reads_sluice_environment_variables() -> None:
    offenders = []
    for pkg in ("sandbox", "policy", "metering", "disclosure"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name == "config.py" and path.parent.name == "sandbox":
                continue
            text = path.read_text("utf-8")
            if re.search(r"(os\.environ|getenv)[^\n]*SLUICE_", text):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_database_url_defaults_to_sqlite_in_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "h")
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'h' / 'sluice.db'}"


def test_environment_overrides_defaults(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))
    monkeypatch.setenv("SLUICE_WORKERS", "3")
    s = Settings()
    assert s.resolved_home == tmp_path.resolve() and s.workers == 3
