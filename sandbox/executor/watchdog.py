"""A long-lived watchdog thread that interrupts the running query at its deadline, sleeps included."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb


class Watchdog:
    """Interrupts the guarded cursor when its deadline passes; one guarded cursor at a time.

    A guard wakes the thread only when it sleeps past the new deadline (or without one); ending a guard does not
    wake it: it finds no cursor, or a later deadline, when it wakes. Short runs then cost no thread switches.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._deadline = 0.0
        self._fired = False
        self._closed = False
        self._wakes_at: float | None = None  # when the sleeping thread wakes by itself (None: not before a notify)
        self._thread = threading.Thread(target=self._loop, name="sluice-watchdog", daemon=True)
        self._thread.start()

    @contextmanager
    def guard(self, cursor: duckdb.DuckDBPyConnection, timeout_ms: int) -> Iterator[None]:
        """Interrupt `cursor` if the block is still running `timeout_ms` after it started."""
        with self._cond:
            if self._cursor is not None:
                raise RuntimeError("the watchdog already guards a cursor")
            self._cursor = cursor
            self._deadline = time.monotonic() + timeout_ms / 1000
            self._fired = False
            if self._wakes_at is None or self._wakes_at > self._deadline:
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._cursor = None

    @property
    def fired(self) -> bool:
        """Whether the last guarded block was interrupted by the watchdog."""
        return self._fired

    def close(self) -> None:
        """Stop the watchdog thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=1)

    def _loop(self) -> None:
        """Sleep until the deadline of the guarded cursor, then interrupt it."""
        with self._cond:
            while not self._closed:
                if self._cursor is None:
                    self._wakes_at = None
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._wakes_at = self._deadline
                    self._cond.wait(remaining)
                    continue
                self._cursor.interrupt()
                self._fired = True
                self._cursor = None
