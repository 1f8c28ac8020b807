"""The watchdog interrupts a guarded cursor at its own deadline, whatever deadlines earlier guards had."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, cast

import duckdb
import pytest

from sandbox.executor.engine import run_locked
from sandbox.executor.errors import QueryTimedOut
from sandbox.executor.watchdog import Watchdog


class FakeCursor:
    """Records when it was interrupted."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()

    def interrupt(self) -> None:
        self.interrupted.set()


def _guarded(watchdog: Watchdog, timeout_ms: int, hold_s: float) -> FakeCursor:
    cursor = FakeCursor()
    with watchdog.guard(cast(Any, cursor), timeout_ms):
        cursor.interrupted.wait(hold_s)
    return cursor


def test_a_short_deadline_after_a_long_one_still_fires_on_time() -> None:
    watchdog = Watchdog()
    try:
        assert not _guarded(watchdog, 60_000, 0.01).interrupted.is_set()  # leaves the thread asleep for a minute
        time.sleep(0.05)
        started = time.monotonic()
        cursor = _guarded(watchdog, 100, 5.0)
        assert cursor.interrupted.is_set() and watchdog.fired
        assert time.monotonic() - started < 2.0
    finally:
        watchdog.close()


def test_a_deadline_after_a_finished_run_with_the_same_timeout_fires_at_its_own_deadline() -> None:
    watchdog = Watchdog()
    try:
        first = _guarded(watchdog, 300, 0.0)  # finished at once: the thread still sleeps towards its deadline
        assert not first.interrupted.is_set()
        time.sleep(0.1)
        started = time.monotonic()
        second = _guarded(watchdog, 300, 5.0)
        waited = time.monotonic() - started
        assert second.interrupted.is_set() and watchdog.fired
        assert 0.25 <= waited < 2.0, waited  # not at the first run's deadline (~0.2 s in), at its own
        assert not _guarded(watchdog, 60_000, 0.05).interrupted.is_set() and not watchdog.fired
    finally:
        watchdog.close()


class _FiredWatchdog(Watchdog):
    """A watchdog whose guarded block always counts as interrupted, as when the deadline passed mid-run."""

    @property
    def fired(self) -> bool:
        return True


def _failing_run(watchdog: Watchdog) -> None:
    con = duckdb.connect()
    try:
        # DuckDB reports an interrupt that lands while materializing the result as an invalid-input error.
        run_locked(cast(Any, SimpleNamespace(con=con)), "SELECT error('closed pending query result')", {},
                   timeout_ms=1500, watchdog=watchdog)
    finally:
        con.close()


def test_an_engine_error_after_the_watchdog_fired_is_a_timeout_not_an_invalid_input() -> None:
    watchdog = _FiredWatchdog()
    try:
        with pytest.raises(QueryTimedOut, match="1500 ms"):
            _failing_run(watchdog)
    finally:
        watchdog.close()


def test_an_engine_error_without_the_watchdog_firing_keeps_its_own_class() -> None:
    watchdog = Watchdog()
    try:
        with pytest.raises(duckdb.InvalidInputException):
            _failing_run(watchdog)
    finally:
        watchdog.close()
