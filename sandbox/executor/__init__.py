"""The locked-down execution engine: locked DuckDB instances in a pool of address-space-capped workers.

See docs/sandbox.md for the lock-down, the limits, the error codes and the measured costs.
"""

from sandbox.executor.engine import LockedEngine, failed_outcome, run_locked
from sandbox.executor.errors import (
    ExecutorError,
    InputUnavailable,
    PoolClosed,
    QueryFailed,
    QueryTimedOut,
    ResultWriteFailed,
    StatementRefused,
    UnknownInput,
    WorkerLost,
    WorkerStartFailed,
)
from sandbox.executor.failures import classify_failure
from sandbox.executor.lockdown import Instance, lockdown_statements, open_instance
from sandbox.executor.pool import WorkerPool
from sandbox.executor.scan import scan_stats
from sandbox.executor.statement import single_select
from sandbox.executor.types import (
    FAILED,
    REFUSED,
    STATUSES,
    SUCCEEDED,
    TIMED_OUT,
    EngineLimits,
    InputTable,
    PendingRelease,
    RunOutcome,
    RunSpec,
    RunStatus,
    ScanStats,
)
from sandbox.executor.watchdog import Watchdog

__all__ = [
    "FAILED",
    "REFUSED",
    "STATUSES",
    "SUCCEEDED",
    "TIMED_OUT",
    "EngineLimits",
    "ExecutorError",
    "InputTable",
    "InputUnavailable",
    "Instance",
    "LockedEngine",
    "PendingRelease",
    "PoolClosed",
    "QueryFailed",
    "QueryTimedOut",
    "ResultWriteFailed",
    "RunOutcome",
    "RunSpec",
    "RunStatus",
    "ScanStats",
    "StatementRefused",
    "UnknownInput",
    "Watchdog",
    "WorkerLost",
    "WorkerPool",
    "WorkerStartFailed",
    "classify_failure",
    "failed_outcome",
    "lockdown_statements",
    "open_instance",
    "run_locked",
    "scan_stats",
    "single_select",
]
