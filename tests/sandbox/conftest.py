"""Fixtures for API-level tests: a booted app with its bootstrap admin, and one shared worker pool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sluice_api import Api
from starlette.testclient import TestClient

from sandbox.app import create_app
from sandbox.bootstrap import init_home
from sandbox.clock import ManualClock
from sandbox.config import Settings
from sandbox.executor import EngineLimits, WorkerPool


@pytest.fixture(scope="session")
def worker_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    """One worker pool for the whole session (started on first run): spawning workers costs ~300 ms each."""
    limits = EngineLimits(memory_limit_mb=512, threads=1, timeout_ms=20_000, address_space_mb=4096)
    pool = WorkerPool(2, limits, work_dir=tmp_path_factory.mktemp("workers"))
    yield pool
    pool.close()


@pytest.fixture
def api(settings: Settings, clock: ManualClock, tmp_path: Path, worker_pool: WorkerPool) -> Iterator[Api]:
    """A freshly initialized Sluice with its bootstrap admin."""
    result = init_home(settings, clock)
    assert result.api_key
    app = create_app(settings, clock, pool=worker_pool)
    with TestClient(app, raise_server_exceptions=False) as http:
        yield Api(settings=settings, clock=clock, http=http, admin_key=result.api_key,
                  platform_org_id=result.org_id, tmp=tmp_path)
    app.state.sluice.engine.dispose()


@pytest.fixture
def fresh_postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty PostgreSQL database of this test's own, for real `sluice serve` processes (`sluice init` migrates
    it); dropped afterwards. Skips without SLUICE_TEST_DATABASE_URL (fails under CI)."""
    import os

    import sluice_testenv
    from sqlalchemy import make_url

    from sandbox.config import load_settings

    url = sluice_testenv.require_postgres(load_settings().test_database_url)
    with sluice_testenv.own_database(url, f"{make_url(url).database}_{request.node.name[:20].lower()}_{os.getpid()}"
                                     ) as own:
        yield own
