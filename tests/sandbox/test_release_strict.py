"""SLUICE_AUDIT_STRICT reaches every ledger of the release audit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from sandbox.config import Settings
from sandbox.release import ReleaseService
from sandbox.store.models import Base


def test_strict_mode_is_a_setting_off_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Settings(home=tmp_path).audit_strict is False
    monkeypatch.setenv("SLUICE_AUDIT_STRICT", "true")
    assert Settings(home=tmp_path).audit_strict is True


@pytest.mark.parametrize("strict", [True, False])
def test_the_release_service_builds_ledgers_in_the_configured_mode(tmp_path: Path, strict: bool) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    Base.metadata.create_all(engine)
    service = ReleaseService(sessionmaker(engine), engine, tmp_path, strict=strict)
    entry = service._refresh("residents", 10)
    assert entry.audit.strict is strict and entry.audit.ledger("income").strict is strict
