"""The run lifecycle: one status enum, one function that changes it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sandbox.errors import Conflict
from sandbox.executor import RunStatus
from sandbox.runs import set_status
from sandbox.store.models import Run

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
FINAL = [RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.REFUSED, RunStatus.TIMED_OUT]


def _run(status: str | None = RunStatus.RUNNING.value) -> Run:
    return Run(id="run_test", status=status)


@pytest.mark.parametrize("final", FINAL)
def test_a_running_run_ends_in_a_final_status_with_its_time_and_code(final: RunStatus) -> None:
    run = _run()
    set_status(run, final, now=NOW, error_code="x_code", error_message="why")
    assert (run.status, run.finished_at, run.error_code, run.error_message) == (final.value, NOW, "x_code", "why")


@pytest.mark.parametrize("final", FINAL)
@pytest.mark.parametrize("to", [*FINAL, RunStatus.RUNNING])
def test_a_final_status_never_changes_again(final: RunStatus, to: RunStatus) -> None:
    run = _run(final.value)
    with pytest.raises(Conflict) as err:
        set_status(run, to, now=NOW)
    assert err.value.code == "invalid_run_transition"
    assert run.status == final.value


def test_a_new_run_may_only_start_running() -> None:
    run = _run(None)
    with pytest.raises(Conflict):
        set_status(run, RunStatus.SUCCEEDED, now=NOW)
    set_status(run, RunStatus.RUNNING)
    assert run.status == "running" and run.finished_at is None
