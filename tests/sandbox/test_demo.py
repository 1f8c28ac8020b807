"""`sluice demo` runs the whole flow, taking one dataset through every registration step."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.demo.run import run_demo


@pytest.mark.slow
def test_demo_walks_one_dataset_through_every_step_and_answers_a_quality_report(tmp_path: Path) -> None:
    out = run_demo(tmp_path / "home", as_json=True)
    flow = out["workflow"]
    assert flow["state"] == "certified" and flow["early_issue"] == "notice_period_running"
    assert flow["findings"] == ["expectation_failed"]
    assert all(flow["dates"][k] for k in ("applied_at", "accepted_at", "reviewed_at", "notice_started_at",
                                          "certified_at"))
    assert flow["dates"]["certified_at"] >= flow["dates"]["notice_ends_at"]  # waited, never back-dated
    assert len(out["certificates"]) == 5
    feedback = out["quality_feedback"]
    assert feedback["status"] == "not_a_defect" and feedback["foreign_read"] == "permission_denied"
    assert feedback["stats"]["resolved"] == 1
