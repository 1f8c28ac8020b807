"""`sluice demo` runs the whole flow: one dataset through every registration step, governed queries, this month's
bills with their exports and reconciliation, and a quality report answered."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.demo.run import run_demo


@pytest.mark.slow
def test_demo_walks_registration_bills_and_quality_feedback(tmp_path: Path) -> None:
    out = run_demo(tmp_path / "home", as_json=True)
    flow = out["workflow"]
    assert flow["state"] == "certified" and flow["early_issue"] == "notice_period_running"
    assert flow["findings"] == ["expectation_failed"]
    assert all(flow["dates"][k] for k in ("applied_at", "accepted_at", "reviewed_at", "notice_started_at",
                                          "certified_at"))
    assert flow["dates"]["certified_at"] >= flow["dates"]["notice_ends_at"]  # waited, never back-dated
    assert len(out["certificates"]) == 5
    first, second = out["difference_audit"]["runs"]  # two queries that differ by one patient
    assert first["suppression"] == {} and first["row"]["total_cost"] is not None
    assert second["suppression"] == {"difference_audit": 2}
    assert second["row"]["total_cost"] is None and second["row"]["visits"] is None
    assert second["row"]["patients"] == first["row"]["patients"] + 1
    feedback = out["quality_feedback"]
    assert feedback["status"] == "not_a_defect" and feedback["foreign_read"] == "permission_denied"
    assert feedback["stats"]["resolved"] == 1
    billing = out["billing"]
    assert billing["bills"]["health_ops"]["total"] == "0.00"
    assert billing["bills"]["commerce_ops"]["status"] == "finalized"
    assert float(billing["bills"]["commerce_ops"]["total"]) > 0
    assert billing["reconciled"] is True and billing["refused_price"] == "price_above_cap"
    assert {Path(f).suffix for f in billing["exports"]} == {".csv", ".parquet"}
    assert all(Path(f).exists() for f in billing["exports"])
    disclosure = out["disclosure"]
    assert len(disclosure) == 2 and any("-Q" in p for p in disclosure)  # the year and the current quarter
    for period, built in disclosure.items():
        assert built["status"] == "draft"
        names = {Path(f).name for f in built["files"]}
        for lang in ("en", "zh-CN"):
            assert {f"disclosure-{period}.{lang}.{ext}" for ext in ("html", "md", "csv")} <= names
        assert f"disclosure-{period}.json" in names and all(Path(f).exists() for f in built["files"])


def test_the_human_demo_output_ends_with_its_keys_in_a_labelled_block(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from sandbox.demo.run import Narrator, _print_keys

    _print_keys(Narrator(as_json=False), tmp_path, "sk_admin_key", {"steward": "sk_steward_key",
                                                                    "auditor": "sk_auditor_key"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Demo API keys")
    assert [line.split() for line in lines[1:4]] == [["admin", "sk_admin_key"], ["auditor", "sk_auditor_key"],
                                                    ["steward", "sk_steward_key"]]
    assert lines[4] == f"Try: SLUICE_HOME={tmp_path} sluice datasets list --api-key sk_steward_key"
