"""The engine-neutral half of a run: an engine's Arrow result through output control, then written or pending."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyarrow as pa

from policy.output import apply_output_control
from policy.sql_release import ReleasePlan
from sandbox.executor.results import write_result
from sandbox.executor.types import SUCCEEDED, PendingRelease, RunOutcome, RunSpec


@dataclass
class RunClock:
    """A run's wall and CPU clocks and its phase marks (epoch ns), from the moment the engine took it."""

    wall0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=time.process_time)
    marks: list[int] = field(default_factory=lambda: [time.time_ns()])

    def mark(self) -> None:
        """End the current phase now."""
        self.marks.append(time.time_ns())

    def wall_ms(self) -> float:
        """Wall time since the run started, in ms."""
        return (time.perf_counter() - self.wall0) * 1000.0

    def cpu_ms(self) -> float:
        """CPU time of this process since the run started, in ms."""
        return (time.process_time() - self.cpu0) * 1000.0

    def phases(self, names: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
        """(name, start, end) of each phase marked so far."""
        return tuple(zip(names, self.marks, self.marks[1:], strict=False))


def control_output(table: pa.Table, spec: RunSpec, clock: RunClock) -> RunOutcome:
    """Apply the k threshold, dominance and the row cap to an engine's result, then write it or hand it on.

    The same for every engine: a result over entity data goes back with its cells' entity sets for the release
    audit (the API process decides and writes); any other result is written as Parquet here. Raises on a write
    failure; the engine maps it to a failed outcome.
    """
    plan = ReleasePlan.from_dict(spec.release) if spec.release else None
    controlled = apply_output_control(table, k=spec.k, max_rows=spec.max_rows, plan=plan, dominance=spec.dominance)
    del table
    clock.mark()
    if plan is not None:  # the API process audits the cells, then writes the result
        return RunOutcome(
            status=SUCCEEDED, result_path=None, result_sha256=None, result_rows=controlled.table.num_rows,
            result_bytes=0, suppressed_cells=controlled.suppressed_cells, truncated_rows=controlled.truncated_rows,
            cpu_ms=clock.cpu_ms(), wall_ms=clock.wall_ms(), error_code=None, error_message=None,
            phases=clock.phases(("execute", "output_control")), suppression=dict(controlled.suppressed),
            pending=PendingRelease(controlled.table, controlled.cells, controlled.marks))
    written = write_result(controlled.table, spec.result_path)
    clock.mark()
    return RunOutcome(
        status=SUCCEEDED, result_path=written.path, result_sha256=written.sha256, result_rows=written.rows,
        result_bytes=written.bytes, suppressed_cells=controlled.suppressed_cells,
        truncated_rows=controlled.truncated_rows, cpu_ms=clock.cpu_ms(), wall_ms=clock.wall_ms(), error_code=None,
        error_message=None, phases=clock.phases(("execute", "output_control", "write")),
    )
