"""Executor errors: each carries the run status it ends in, a stable code and a message safe for clients."""

from __future__ import annotations

from typing import Any

from sandbox.errors import SluiceError
from sandbox.executor.types import FAILED, REFUSED, TIMED_OUT


class ExecutorError(SluiceError):
    """Root of executor errors: `status` is the run status it ends in; `detail` is internal only."""

    code = "executor_error"
    status = FAILED

    def __init__(
        self, message: str, *, code: str | None = None, detail: str | None = None, **context: Any
    ) -> None:
        super().__init__(message, code=code, **context)
        self.detail = detail


class StatementRefused(ExecutorError):
    """The SQL is not exactly one plain SELECT; the run is refused before it touches any data."""

    code = "statement_refused"
    status = REFUSED


class QueryFailed(ExecutorError):
    """The engine raised an error while running the query; the message is generic, never the engine's text."""

    code = "query_failed"


class QueryTimedOut(ExecutorError):
    """The query ran past the time limit and was stopped."""

    code = "timed_out"
    status = TIMED_OUT


class InputUnavailable(ExecutorError):
    """A prepared input could not be opened as a dataset."""

    code = "input_unavailable"


class ResultWriteFailed(ExecutorError):
    """The controlled result could not be written to its result path."""

    code = "result_write_failed"


class WorkerLost(ExecutorError):
    """The worker process ended during the run; the pool replaces it."""

    code = "worker_lost"


class WorkerStartFailed(ExecutorError):
    """A worker process did not come up (address-space limit too small, broken environment)."""

    code = "worker_start_failed"


class PoolClosed(ExecutorError):
    """The worker pool is closed and takes no more runs."""

    code = "executor_closed"


class UnknownInput(ExecutorError):
    """A table or column named in scan accounting is not among the run's prepared inputs."""

    code = "unknown_input"
