"""The executor's public records: what a run needs, what it reports, and the limits it runs under."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final


class RunStatus(StrEnum):
    """A run's lifecycle: `running` until it ends in exactly one final status (see sandbox.runs.set_status)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"
    TIMED_OUT = "timed_out"


SUCCEEDED: Final = RunStatus.SUCCEEDED
FAILED: Final = RunStatus.FAILED
REFUSED: Final = RunStatus.REFUSED
TIMED_OUT: Final = RunStatus.TIMED_OUT
STATUSES: Final = (SUCCEEDED, FAILED, REFUSED, TIMED_OUT)


@dataclass(frozen=True)
class InputTable:
    """One prepared input: the name SQL uses for it and its Parquet file (every column is permitted)."""

    name: str
    path: Path


@dataclass(frozen=True)
class RunSpec:
    """One run: which instance, its inputs, the regenerated SELECT with its parameters, and output control."""

    instance_key: str
    inputs: tuple[InputTable, ...]
    sql: str
    params: Mapping[str, Any]
    k: int
    max_rows: int | None
    result_path: Path


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced; `error_message` is client-safe, `internal_detail` is not for clients."""

    status: RunStatus
    result_path: Path | None
    result_sha256: str | None
    result_rows: int
    result_bytes: int
    suppressed_rows: int
    truncated_rows: int
    cpu_ms: float
    wall_ms: float
    error_code: str | None
    error_message: str | None
    internal_detail: str | None = field(default=None, repr=False, compare=False)
    phases: tuple[tuple[str, int, int], ...] = field(default=(), repr=False, compare=False)
    """(phase, start, end) in epoch ns: queue, execute, output_control, write (for tracing)."""


@dataclass(frozen=True)
class EngineLimits:
    """Per-run engine limits and the per-worker address-space cap, as given by Settings."""

    memory_limit_mb: int
    threads: int
    timeout_ms: int
    address_space_mb: int


@dataclass(frozen=True)
class ScanStats:
    """Rows and bytes a run is charged for, computed from the granted inputs it reads."""

    rows: int
    bytes: int
