"""The watchdog interrupts a guarded cursor at its own deadline, whatever deadlines earlier guards had."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

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
