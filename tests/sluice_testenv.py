"""Test-environment helpers: CI detection, Debian-package and PostgreSQL requirements (skip locally, fail under CI),
and PostgreSQL databases of a test's own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

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


def require_postgres(url: str | None) -> str:
    """The PostgreSQL test URL (SLUICE_TEST_DATABASE_URL); skip without one, fail under CI=true."""
    if not url:
        if in_ci():
            pytest.fail("CI=true but SLUICE_TEST_DATABASE_URL is not set; .ci/run must provide PostgreSQL")
        pytest.skip("PostgreSQL not configured (set SLUICE_TEST_DATABASE_URL)")
    return url


@contextmanager
def own_database(url: str, name: str) -> Iterator[str]:
    """An empty PostgreSQL database `name` on `url`'s server (a leftover one is dropped first), dropped afterwards;
    yields its URL."""
    from sqlalchemy import make_url, text

    from sandbox.store.db import make_engine

    admin = make_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
