"""Billing verbs of the `sluice` CLI: bills printed, finalized, exported with usage detail, reconciled."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from billing_world import World, build_world
from sqlalchemy import update
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import BillLineRow


@pytest.fixture
def world(api, monkeypatch: pytest.MonkeyPatch) -> World:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SLUICE_HOME", str(api.settings.home))
    monkeypatch.setenv("SLUICE_DATABASE_URL", api.settings.resolved_database_url)
    w = build_world(api)
    w.set_platform_fees()
    for s in ("7", "7", "x"):
        w.run(w.industry_key, w.industry_job, s=s)
    w.run(w.public_key, w.public_job)
    return w


def sluice(*args: str, key: str, code: int = 0) -> Any:
    result = CliRunner().invoke(app, ["--api-key", key, *args])
    assert result.exit_code == code, (args, result.output)
    return result


def test_bills_are_created_printed_finalized_exported_and_reconciled_from_the_cli(world: World, tmp_path: Path
                                                                                   ) -> None:
    printed = sluice("bills", "create", "--payer", world.industry, "--period", "2026-06", key=world.finance).stdout
    assert "platform fees" in printed and "prices include VAT at 6%" in printed and "not charged" in printed
    bill = json.loads(sluice("bills", "create", "--payer", world.public, "--period", "2026-06", "--json",
                             key=world.finance).stdout)
    assert bill["total"] == "0.00"
    for b in json.loads(sluice("bills", "list", "--period", "2026-06", "--json", key=world.finance).stdout):
        final = json.loads(sluice("bills", "finalize", b["id"], "--json", key=world.finance).stdout)
        assert final["status"] == "finalized"
    out = tmp_path / "exports"
    for fmt in ("csv", "parquet"):
        files = json.loads(sluice("bills", "export", "--period", "2026-06", "--format", fmt, "--out", str(out),
                                  "--json", key=world.finance).stdout)
        assert Path(files["bills"]).exists() and Path(files["usage"]).exists()
    assert (out / "bills-2026-06.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    usage = pq.read_table(out / "usage-2026-06.parquet")
    assert usage.num_rows == 4 and sorted(set(usage.column("outcome").to_pylist())) == ["failed", "succeeded"]
    lines = pq.read_table(out / "bills-2026-06.parquet")
    assert str(lines.schema.field("amount").type) == "decimal128(20, 2)"
    assert "reconciled" in sluice("bills", "reconcile", "--period", "2026-06", key=world.regulator_key).stdout
    attribution = json.loads(sluice("bills", "attribution", "--period", "2026", "--json", key=world.steward).stdout)
    assert [p["provider_org_id"] for p in attribution["providers"]] == [world.provider]

    engine = make_engine(world.api.settings.resolved_database_url)
    with session_factory(engine).begin() as s:
        s.execute(update(BillLineRow).where(BillLineRow.meter == "runs", BillLineRow.outcome == "succeeded")
                  .values(quantity=Decimal("3")))
    engine.dispose()
    broken = sluice("bills", "reconcile", "--period", "2026-06", key=world.regulator_key, code=1).stdout
    assert "NOT reconciled" in broken and "quantity expected 2, found 3" in broken


def _printed_bill(**overrides: Any) -> dict[str, Any]:
    line = {"line_no": 1, "meter": "runs", "segment": None, "kind": "usage", "event_period": "2026-06",
            "dataset_id": "ds_a", "product_id": None, "quantity": "2", "unit": "run", "unit_price": "0.5",
            "cap": None, "amount": "1.00", "event_count": 2, "evidence": None}
    bill = {"id": "bil_1", "period": "2026-06", "relation": "platform", "status": "draft",
            "issuer_name": "Platform", "issuer_org_id": "org_p", "payer_name": "Payer", "payer_org_id": "org_q",
            "vat": "prices include VAT at 6%", "event_count": 2, "total": "1.00", "vat_amount": "0.06",
            "gross": "1.00", "sha256": None, "lines": [line]}
    return {**bill, **{k: v for k, v in overrides.items() if k != "line"},
            "lines": [{**line, **overrides.get("line", {})}]}


def test_a_printed_bill_shows_names_evidence_and_line_kinds_verbatim_never_as_rich_markup(
        capsys: pytest.CaptureFixture[str]) -> None:
    from sandbox.cli.billing import print_bill

    print_bill(_printed_bill(payer_name="Acme [bold]Data[/bold]", issuer_name="[red]Platform",
                             line={"kind": "correction", "event_period": "2026-05",
                                   "evidence": "run [x] of [/] grant"}))
    printed = capsys.readouterr().out
    assert "to   Acme [bold]Data[/bold]" in printed
    assert "from [red]Platform" in printed
    assert "[correction" in printed and "2026-05]" in printed  # a line kind, bracketed, is not taken for a tag
    assert "#1: run [x] of [/] grant" in printed
