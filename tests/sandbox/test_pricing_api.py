"""Government-guided pricing through the API: caps, price lists refused above the cap, suspension by a lowered cap,
customer bills with tiers and packages, and the maximum allowed revenue carried into the next year."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from billing_world import World, build_world
from sqlalchemy import select

from metering.events import DatasetUse, UsageEvent
from sandbox.billing.prices import require_active_price
from sandbox.billing.usage import ingest, product_event
from sandbox.errors import Refused
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import RevenueExcess

CAPS = [{"basis": "per_call", "category": "query_interface", "unit": "call", "price": "0.50"},
        {"basis": "per_volume", "category": "statistics_report", "unit": "10k_rows", "price": "20"},
        {"basis": "per_period", "category": "statistics_report", "unit": "month", "price": "3000"}]


@pytest.fixture
def world(api) -> World:  # type: ignore[no-untyped-def]
    w = build_world(api)
    for code, name in (("query_interface", "查询接口 query interface"), ("statistics_report", "统计报告 report")):
        api.ok("POST", "/v1/prices/categories", w.finance, json={"code": code, "name": name})
    api.ok("POST", "/v1/prices/caps", w.finance, json={"caps": CAPS})
    return w


def _entry(w: World, expect: int = 201, **body: Any) -> Any:
    payload = {"name": "District lookup", "category": "query_interface", "basis": "per_call", "unit": "call",
               "unit_price": "0.50", **body}
    resp = w.api.call("POST", "/v1/pricelist", w.industry_finance, json=payload)
    assert resp.status_code == expect, resp.text
    return resp.json()


def test_a_price_above_its_cap_is_refused_with_the_cap_and_audited(world: World) -> None:
    refused = _entry(world, expect=422, unit_price="0.60")
    assert refused["code"] == "price_above_cap" and "cap of 0.5 CNY" in refused["detail"]
    tier = _entry(world, expect=422, tiers=[{"up_to": "10", "unit_price": "0.50"}, {"up_to": None,
                                                                                   "unit_price": "0.51"}])
    assert tier["code"] == "price_above_cap" and "tier 2 0.51" in tier["detail"]
    package = _entry(world, expect=422, package={"quantity": "1000", "price": "600"})
    assert package["code"] == "price_above_cap" and "package 0.6" in package["detail"]
    assert _entry(world, expect=422, basis="per_volume", unit="GB")["code"] == "no_price_cap"
    assert _entry(world, expect=400, category="satellite")["code"] == "unknown_category"
    assert _entry(world, expect=422, unit_price=0.3)["code"] == "validation_error"  # floats never carry money
    past = (world.api.clock.now() - timedelta(days=1)).isoformat()
    assert _entry(world, expect=400, effective_from=past)["code"] == "retroactive_schedule"
    audit = world.api.ok("GET", "/v1/audit/events", world.api.admin_key,
                         params={"action": "pricelist:change", "limit": 1000})["events"]
    assert any(a["code"] == "price_above_cap" and a["decision"] == "refused" for a in audit)


def test_tiers_and_packages_at_or_below_the_cap_are_listed_and_public(world: World) -> None:
    entry = _entry(world, tiers=[{"up_to": "100", "unit_price": "0.50"}, {"up_to": None, "unit_price": "0.30"}],
                   package={"quantity": "1000", "price": "400"})
    assert entry["status"] == "active" and entry["cap"] == "0.5"
    public = world.api.call("GET", "/v1/pricelist", None, params={"operator_org_id": world.industry})
    assert public.status_code == 200 and [e["id"] for e in public.json()] == [entry["id"]]
    assert public.json()[0]["versions"][0]["package"]["unit_price"] == "0.4"
    assert world.api.call("GET", "/v1/prices", None).json()["vat"] == "prices include VAT at 6%"


def test_a_lowered_cap_suspends_a_listed_price_until_it_is_repriced(world: World) -> None:
    api = world.api
    entry = _entry(world)
    lowered = [{**CAPS[0], "price": "0.45"}, *CAPS[1:]]
    caps = api.ok("POST", "/v1/prices/caps", world.finance, json={"caps": lowered})
    assert [s["entry_id"] for s in caps["suspended"]] == [entry["id"]]
    shown = api.ok("GET", f"/v1/pricelist/{entry['id']}", None)
    assert shown["status"] == "suspended" and "cap of 0.45 CNY" in shown["status_reason"]
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine)() as s, pytest.raises(Refused) as refused:
        require_active_price(s, entry["id"], api.clock.now())
    assert refused.value.code == "price_suspended"
    other = api.principal(world.public, "finance")
    assert api.call("POST", f"/v1/pricelist/{entry['id']}/versions", other,
                    json={"unit_price": "0.40"}).json()["code"] == "not_found_or_not_yours"
    repriced = api.ok("POST", f"/v1/pricelist/{entry['id']}/versions", world.industry_finance,
                      json={"unit_price": "0.45"})
    assert repriced["status"] == "active" and repriced["current_version"] == 2
    with session_factory(engine)() as s:
        assert require_active_price(s, entry["id"], api.clock.now()).unit_price == Decimal("0.45")
    engine.dispose()
    assert api.call("POST", "/v1/prices/caps", world.industry_finance, json={"caps": CAPS}).status_code == 403


def _calls(w: World, entry_id: str, n: int, *, free: bool = False, start: int = 0) -> list[UsageEvent]:
    return [product_event(kind="call", source_id=f"call_{start + i:04d}", entry_id=entry_id, product_id="prd_demo",
                          customer_org_id=w.customer, operator_org_id=w.industry, grant=None,
                          counts={"calls": 1, "result_rows": 20}, datasets=[DatasetUse(w.dataset, 40, 0)],
                          outcome="succeeded", at=w.api.clock.now(),
                          free_reason="subscription sub_1 approved by the agency for public-interest use"
                          if free else None) for i in range(n)]


def test_customer_bill_counts_tiers_per_period_and_revenue_above_the_maximum_is_carried(world: World) -> None:
    api = world.api
    entry = _entry(world, tiers=[{"up_to": "3", "unit_price": "0.50"}, {"up_to": None, "unit_price": "0.20"}])
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine).begin() as s:
        fresh = ingest(s, [*_calls(world, entry["id"], 5), *_calls(world, entry["id"], 2, free=True, start=100)])
        replay = ingest(s, _calls(world, entry["id"], 1))
    engine.dispose()
    assert all(created for _, created in fresh) and replay[0][1] is False
    api.ok("POST", "/v1/prices/revenue-caps", world.finance,
           json={"operator_org_id": world.industry, "year": 2026, "amount": "1.00"})
    api.ok("POST", "/v1/prices/revenue-caps", world.finance,
           json={"operator_org_id": world.industry, "year": 2027, "amount": "100.00"})
    bill = world.bill(world.customer, "2026-06", key=world.industry_finance)
    assert bill["relation"] == "product" and bill["issuer_org_id"] == world.industry
    tiers = {ln["segment"]: ln for ln in bill["lines"] if ln["purpose_class"] == "industry"}
    assert (tiers["tier 1"]["quantity"], tiers["tier 1"]["amount"]) == ("3", "1.50")
    assert (tiers["tier 2"]["quantity"], tiers["tier 2"]["amount"]) == ("2", "0.40")
    free = [ln for ln in bill["lines"] if ln["purpose_class"] == "public_interest"]
    assert free and all(ln["amount"] == "0.00" and "approved by the agency" in ln["evidence"] for ln in free)
    assert bill["total"] == "1.90" and all(ln["cap"] == "0.5" for ln in bill["lines"])
    assert api.ok("GET", f"/v1/bills/{bill['id']}", world.customer_finance)["total"] == "1.90"
    assert api.call("POST", f"/v1/bills/{bill['id']}/finalize", world.finance).json()["code"] == (
        "not_found_or_not_yours")  # the operator issues product bills; only it finalizes them
    api.ok("POST", f"/v1/bills/{bill['id']}/finalize", world.industry_finance)
    [y2026] = api.ok("GET", "/v1/revenue", world.industry_finance, params={"year": 2026})
    assert (y2026["revenue"], y2026["effective_max"], y2026["excess"]) == ("1.90", "1.00", "0.90")
    [y2027] = api.ok("GET", "/v1/revenue", world.finance, params={"year": 2027, "operator_org_id": world.industry})
    assert (y2027["carried_excess"], y2027["effective_max"]) == ("0.90", "99.10")
    assert api.ok("GET", "/v1/reconciliation", world.finance, params={"period": "2026-06"})["ok"] is True
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine)() as s:
        recorded = [(r.year, r.excess, r.bill_id) for r in s.scalars(select(RevenueExcess))]
    engine.dispose()
    assert recorded == [(2026, Decimal("0.9"), bill["id"])]
