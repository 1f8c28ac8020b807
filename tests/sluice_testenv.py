"""Test-environment helpers: CI detection and Debian-package requirements (skip locally, fail under CI)."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    """True when running under CI (CI=true), where missing tools are failures, not skips."""
    return os.environ.get("CI", "").lower() == "true"


def require_debian_package(binary: str, package: str) -> str:
    """Path of a binary from a Debian package; skip if missing, fail under CI=true."""
    found = shutil.which(binary)
    if found:
        return found
    msg = f"{binary} not found: apt-get install {package}"
    if in_ci():
        pytest.fail(msg)
    pytest.skip(msg)


def require_spark() -> None:
    """Skip unless pyspark (the optional extra sluice[spark]) and Java are installed; fail under CI=true."""
    import importlib.util

    require_debian_package("java", "openjdk-17-jre-headless")
    if importlib.util.find_spec("pyspark") is None:
        msg = "pyspark not installed: make installs requirements-spark.lock when java is on PATH"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
