"""`sluice demo` runs the whole flow, including this month's bills, their exports and reconciliation."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.demo.run import run_demo


@pytest.mark.slow
def test_demo_issues_reconciled_bills_and_the_public_interest_bill_is_zero(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    summary = run_demo(tmp_path / "home", as_json=True)
    billing = summary["billing"]
    assert billing["bills"]["health_ops"]["total"] == "0.00"
    assert billing["bills"]["commerce_ops"]["status"] == "finalized"
    assert float(billing["bills"]["commerce_ops"]["total"]) > 0
    assert billing["reconciled"] is True and billing["refused_price"] == "price_above_cap"
    assert {Path(f).suffix for f in billing["exports"]} == {".csv", ".parquet"}
    assert all(Path(f).exists() for f in billing["exports"])
