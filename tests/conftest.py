"""Shared fixtures: store backends (SQLite always, PostgreSQL when SLUICE_TEST_DATABASE_URL is set), clock, app."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sluice_testenv
from sqlalchemy import make_url, text

from sandbox.clock import ManualClock
from sandbox.config import Settings, load_settings
from sandbox.store.db import make_engine, upgrade
from sandbox.store.models import Base

ENV = load_settings()
BACKENDS = ["sqlite", "postgresql"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses `store_url` runs once per backend."""
    if "store_url" in metafunc.fixturenames:
        metafunc.parametrize("store_url", BACKENDS, indirect=True)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, copied for each test."""
    path = tmp_path_factory.mktemp("template") / "sluice.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_url(worker_id: str) -> Iterator[str | None]:
    """The PostgreSQL test database, migrated once per session.

    Under xdist each worker gets its own database (`<name>_<worker>`, created and dropped here), since tests
    truncate every table between them.
    """
    url = ENV.test_database_url
    if not url:
        yield None
        return
    with ExitStack() as stack:
        if worker_id != "master":
            url = stack.enter_context(sluice_testenv.own_database(url, f"{make_url(url).database}_{worker_id}"))
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


def _truncate(url: str) -> None:
    engine = make_engine(url)
    tables = [t.name for t in Base.metadata.sorted_tables if t.name != "casbin_rule"]
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path,
              postgres_url: str | None) -> Iterator[str]:
    """A clean, migrated control store on the requested backend."""
    if request.param == "sqlite":
        db = tmp_path / "sluice.db"
        shutil.copy(sqlite_template, db)
        yield f"sqlite:///{db}"
        return
    url = sluice_testenv.require_postgres(postgres_url)
    _truncate(url)
    yield url
    _truncate(url)


@pytest.fixture
def clock() -> ManualClock:
    """A clock that only moves when a test moves it."""
    return ManualClock(datetime(2026, 6, 1, 9, 0, tzinfo=UTC))


@pytest.fixture
def settings(tmp_path: Path, store_url: str) -> Settings:
    """Settings for one test: a fresh home, the backend's store, an import root."""
    (tmp_path / "imports").mkdir()
    return Settings(home=tmp_path / "home", database_url=store_url, import_root=tmp_path / "imports",
                    public_url="https://sluice.test")


@pytest.fixture(scope="session")
def spark_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One local Spark for the session: tests using it carry xdist_group("spark"), so one worker starts one JVM."""
    sluice_testenv.require_spark()
    from sandbox.engines.spark import SparkEngine
    from sandbox.executor import EngineLimits

    limits = EngineLimits(memory_limit_mb=1024, threads=2, timeout_ms=300_000, address_space_mb=6144)
    engine = SparkEngine(limits, remote=None, master="local[2]", work_dir=tmp_path_factory.mktemp("spark"))
    engine.start()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def spark_connect_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Spark Connect server with a token and the static hardening, started from the pip package."""
    import os
    import secrets
    import socket
    import subprocess
    import sys
    import time

    sluice_testenv.require_spark()
    import pyspark

    from sandbox.engines.spark import STATIC_HARDENING

    home = Path(pyspark.__file__).parent
    work = tmp_path_factory.mktemp("spark-connect")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = secrets.token_hex(16)
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOG_DIR": str(work / "log"),
           "SPARK_PID_DIR": str(work / "pid"), "SPARK_LOCAL_IP": "127.0.0.1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    confs = {**STATIC_HARDENING, "spark.connect.grpc.binding.address": "127.0.0.1",
             "spark.connect.grpc.binding.port": str(port), "spark.connect.authenticate.token": token}
    args = [a for key, value in confs.items() for a in ("--conf", f"{key}={value}")]
    subprocess.run(["bash", str(home / "sbin" / "start-connect-server.sh"), "--master", "local[1]", *args],
                   env=env, check=True, capture_output=True, cwd=work)
    try:
        deadline = time.monotonic() + 180
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                pytest.fail("the Spark Connect server did not start in 180 s")
            time.sleep(0.5)
        yield f"sc://localhost:{port}/;token={token}"
    finally:
        subprocess.run(["bash", str(home / "sbin" / "stop-connect-server.sh")], env=env, capture_output=True,
                       cwd=work)
