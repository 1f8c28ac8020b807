"""Tests that need a Debian package skip when it is missing, and fail instead under CI=true."""

from __future__ import annotations

import pytest
import sluice_testenv


def test_missing_debian_package_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="apt-get install no-such-package"):
        sluice_testenv.require_debian_package("no-such-binary-sluice", "no-such-package")


def test_missing_debian_package_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-binary-sluice not found"):
        sluice_testenv.require_debian_package("no-such-binary-sluice", "no-such-package")


def test_present_binary_is_returned() -> None:
    assert sluice_testenv.require_debian_package("sh", "dash").endswith("/sh")
