"""Product verbs of the `sluice` CLI: publish, list publicly, subscribe, call, and a refusal without a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from product_world import PARAMS, Shop, build_shop
from typer.testing import CliRunner

from sandbox.cli import app


@pytest.fixture
def shop(api, monkeypatch: pytest.MonkeyPatch) -> Shop:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SLUICE_HOME", str(api.settings.home))
    monkeypatch.setenv("SLUICE_DATABASE_URL", api.settings.resolved_database_url)
    return build_shop(api)


def sluice(*args: str, key: str, code: int = 0) -> Any:
    result = CliRunner().invoke(app, ["--api-key", key, *args])
    assert result.exit_code == code, (args, result.output)
    return result


def test_a_product_is_published_listed_subscribed_and_called_from_the_cli(shop: Shop, tmp_path: Path) -> None:
    params, price = tmp_path / "params.json", tmp_path / "price.json"
    params.write_text(json.dumps(PARAMS), "utf-8")
    price.write_text(json.dumps({"category": "query_interface", "basis": "per_call", "unit": "call",
                                 "unit_price": "0.40"}), "utf-8")
    product = json.loads(sluice("products", "publish", "--job", shop.w.industry_job, "--name", "Lookup",
                                "--description", "income by district", "--params", str(params), "--price",
                                str(price), "--json", key=shop.w.industry_key).stdout)
    assert product["status"] == "draft"
    sluice("products", "submit", product["id"], key=shop.w.industry_key)
    sluice("products", "review", product["id"], "--decision", "approve", "--comment", "ok", key=shop.agency_reviewer)
    [listed] = json.loads(sluice("products", "list", "--json", key=shop.customer_key).stdout)
    assert (listed["name"], listed["price"]["unit_price"], listed["price"]["unit"]) == ("Lookup", "0.4", "call")
    assert "per_call" in sluice("products", "list", key=shop.customer_key).stdout  # the table (wrapped to width)
    sluice("products", "subscribe", product["id"], key=shop.customer_key)
    answer = json.loads(sluice("products", "call", product["id"], "--param", "s=7", "--idempotency-key", "k1",
                               "--json", key=shop.customer_key).stdout)
    assert answer["call"]["status"] == "succeeded" and len(answer["rows"]) == 2
    table = sluice("products", "call", product["id"], "--param", "s=8", key=shop.customer_key).stdout
    assert "district" in table and "succeeded" in table
    refused = sluice("products", "call", product["id"], "--param", "s=9", key=shop.customer_key, code=1)
    assert "parameter_not_allowed" in refused.output and "Traceback" not in refused.output
    calls = json.loads(sluice("products", "calls", "--json", key=shop.w.industry_key).stdout)
    assert sorted(c["status"] for c in calls) == ["refused", "succeeded", "succeeded"]
    subs = json.loads(sluice("subscriptions", "list", "--json", key=shop.customer_key).stdout)
    assert [s["product_id"] for s in subs] == [product["id"]]
