"""Products and services through the API: publishing under the cap, the agency's listing, the public catalogue of
products, subscriptions, and calls that are authorized, audited, metered, billed, and refused for every reason."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from product_world import CAPS, Shop, build_shop

from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import UsageEventRow

JUNE = "2026-06"  # the test clock starts on 1 June 2026, 17:00 in Asia/Shanghai


@pytest.fixture
def shop(api) -> Shop:  # type: ignore[no-untyped-def]
    return build_shop(api)


def _events(shop: Shop, kind: str) -> list[UsageEventRow]:
    engine = make_engine(shop.api.settings.resolved_database_url)
    with session_factory(engine)() as s:
        rows = [r for r in s.query(UsageEventRow).order_by(UsageEventRow.id) if r.kind == kind]
        s.expunge_all()
    engine.dispose()
    return rows


def _audit(shop: Shop, action: str) -> list[dict[str, Any]]:
    return list(shop.api.ok("GET", "/v1/audit/events", shop.api.admin_key,
                            params={"action": action, "limit": 1000})["events"])


def test_a_published_product_is_a_draft_until_the_agency_lists_it(shop: Shop) -> None:
    api = shop.api
    product = shop.publish()
    assert product["status"] == "draft" and product["price"]["unit_price"] == "0.4"
    assert api.ok("GET", "/v1/products", None) == []
    assert api.call("GET", f"/v1/products/{product['id']}", None).json()["code"] == "product_not_found"
    pending = api.ok("POST", f"/v1/products/{product['id']}/submit", shop.w.industry_key)
    assert pending["status"] == "pending_review"
    assert api.call("POST", f"/v1/products/{product['id']}/review", shop.w.industry_key,
                    json={"decision": "approve"}).status_code == 403  # operators never list their own
    back = api.ok("POST", f"/v1/products/{product['id']}/review", shop.agency_reviewer,
                  json={"decision": "reject", "comment": "describe the grid"})
    assert back["status"] == "draft" and back["status_reason"] == "describe the grid"
    listed = shop.list(product["id"])
    assert listed["status"] == "listed" and listed["listed_at"]
    assert [p["id"] for p in api.ok("GET", "/v1/products", None)] == [product["id"]]
    entry = api.ok("GET", f"/v1/pricelist/{product['price']['entry_id']}", None)
    assert entry["product_id"] == product["id"]
    assert [a["decision"] for a in _audit(shop, "product:review")] == ["deny", "allow", "allow"]


def test_the_public_catalogue_of_products_names_operator_datasets_certificates_and_price(shop: Shop) -> None:
    api = shop.api
    listed = shop.listed()
    [public] = api.ok("GET", "/v1/products", None)
    assert public["operator"]["id"] == shop.w.industry
    [dataset] = public["datasets"]
    version = api.ok("GET", f"/v1/datasets/{shop.w.dataset}/versions/1", api.admin_key)
    assert dataset["id"] == shop.w.dataset and dataset["certificate_code"] == version["certificate_code"]
    assert (public["price"]["basis"], public["price"]["unit"], public["price"]["unit_price"]) == (
        "per_call", "call", "0.4")
    assert public["parameters"] == {"s": {"type": "VARCHAR", "values": ["7", "8"]}}
    assert "sql" not in str(public).lower() and "status" not in public
    catalogue = api.call("GET", "/v1/catalogue", None)
    assert "</v1/products>" in catalogue.headers["link"]
    assert api.ok("GET", f"/v1/products/{listed['id']}", None)["name"] == "District income"
    assert _audit(shop, "products:read")


def test_a_price_above_the_cap_is_refused_at_publishing(shop: Shop) -> None:
    refused = shop.publish(expect=422, price={"category": "query_interface", "basis": "per_call", "unit": "call",
                                               "unit_price": "0.51"})
    assert refused["code"] == "price_above_cap" and "cap of 0.5 CNY" in refused["detail"]
    assert shop.api.ok("GET", "/v1/products/all", shop.w.industry_key) == []
    assert any(a["code"] == "price_above_cap" for a in _audit(shop, "product:create"))


def test_a_parameter_spec_must_cover_the_job_with_a_set_or_a_grid(shop: Shop) -> None:
    assert shop.publish(expect=400, parameters={})["code"] == "invalid_parameter_spec"
    assert shop.publish(expect=400, parameters={"s": {"values": ["7"], "grid": {"min": 1, "max": 2, "step": 1}}}
                        )["code"] == "invalid_parameter_spec"
    assert shop.publish(expect=400, parameters={"s": {"grid": {"min": 1, "max": 9, "step": 1}}}
                        )["code"] == "invalid_parameter_spec"  # a grid needs a numeric parameter
    assert shop.publish(expect=400, parameters={"s": {"values": ["7"]}, "t": {"values": ["1"]}}
                        )["code"] == "invalid_parameter_spec"


def test_calls_are_run_through_the_governed_path_metered_and_billed_to_the_customer(shop: Shop) -> None:
    api, w = shop.api, shop.w
    product = shop.listed()
    sub = shop.subscribe(product["id"])
    assert sub["status"] == "active" and not sub["free"]
    answer = shop.invoke(product["id"], {"s": "7"})
    call = answer["call"]
    assert call["status"] == "succeeded" and call["run_id"] and answer["columns"][:3] == ["district", "s", "n"]
    assert {r["district"] for r in answer["rows"]} == {"东区", "西区"} and all(r["n"] == 20 for r in answer["rows"])
    run = api.ok("GET", f"/v1/runs/{call['run_id']}", w.industry_key)  # the operator sees its sandbox use
    assert run["status"] == "succeeded" and run["requested_by"] == call["requested_by"]
    shop.invoke(product["id"], {"s": "8"})
    [invoke_audit, _] = _audit(shop, "product:invoke")[-2:]
    assert invoke_audit["decision"] == "allow" and invoke_audit["resource"]["org"] == w.industry
    assert invoke_audit["detail"]["call_id"] == call["id"] and invoke_audit["result_sha256"]
    calls = _events(shop, "call")
    assert [(e.payer_org_id, e.issuer_org_id, e.outcome) for e in calls] == [(w.customer, w.industry,
                                                                               "succeeded")] * 2
    assert {e.id for e in calls} == {f"call:{c['id']}" for c in api.ok("GET", "/v1/calls", shop.customer_key)}
    period = JUNE
    bill = w.bill(w.customer, period, key=w.industry_finance)
    [line] = [ln for ln in bill["lines"] if ln["meter"] == "calls"]
    assert (line["quantity"], line["unit_price"], line["amount"], line["event_count"]) == ("2", "0.4", "0.80", 2)
    assert api.ok("GET", "/v1/reconciliation", w.finance, params={"period": period})["ok"] is True
    platform = w.bill(w.industry, period)  # the operator pays the platform for the calls' sandbox use
    assert any(ln["meter"] == "runs" and ln["base_quantity"] == 2 for ln in platform["lines"])


def test_repeated_calls_with_one_idempotency_key_count_once(shop: Shop) -> None:
    product = shop.listed()
    shop.subscribe(product["id"])
    first = shop.invoke(product["id"], idem="order-1")
    again = shop.invoke(product["id"], idem="order-1")
    assert again["call"]["id"] == first["call"]["id"] and again["idempotent_replay"] is True
    assert again["rows"] == first["rows"]
    other = shop.invoke(product["id"], idem="order-2")
    assert other["call"]["id"] != first["call"]["id"]
    assert len(_events(shop, "call")) == 2 and len(shop.api.ok("GET", "/v1/calls", shop.customer_key)) == 2


def test_concurrent_calls_with_one_idempotency_key_run_and_count_once(shop: Shop) -> None:
    product = shop.listed()
    shop.subscribe(product["id"])
    answers: list[Any] = []

    def go() -> None:
        headers = {"Authorization": f"Bearer {shop.customer_key}", "Idempotency-Key": "same"}
        answers.append(shop.api.http.post(f"/v1/products/{product['id']}/invoke", headers=headers,
                                          json={"params": {"s": "7"}}))

    threads = [threading.Thread(target=go) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(answers) == 4
    done = [a.json()["call"]["id"] for a in answers if a.status_code == 201]
    busy = [a.json()["code"] for a in answers if a.status_code != 201]
    assert done and len(set(done)) == 1 and set(busy) <= {"call_in_progress"}
    assert len(_events(shop, "call")) == 1 and len(shop.api.ok("GET", "/v1/calls", shop.customer_key)) == 1


def test_an_unlisted_product_refuses_calls_and_the_refusal_is_metered_never_charged(shop: Shop) -> None:
    api, w = shop.api, shop.w
    draft = shop.publish(name="Not yet")
    refused = shop.invoke(draft["id"], expect=422)
    assert refused["code"] == "product_not_listed"
    product = shop.listed()
    shop.subscribe(product["id"])
    shop.invoke(product["id"])
    api.ok("POST", f"/v1/products/{product['id']}/withdraw", w.industry_key, json={"reason": "retired"})
    withdrawn = shop.invoke(product["id"], expect=422)
    assert withdrawn["code"] == "product_not_listed" and "retired" in withdrawn["detail"]
    outcomes = sorted(e.outcome for e in _events(shop, "call"))
    assert outcomes == ["refused", "refused", "succeeded"]
    refusals = [a for a in _audit(shop, "product:invoke") if a["decision"] == "refused"]
    assert [a["code"] for a in refusals] == ["product_not_listed", "product_not_listed"]
    period = JUNE
    bill = w.bill(w.customer, period, key=w.industry_finance)
    assert bill["total"] == "0.40"  # the refused calls are on the bill at price 0


def test_the_agency_delists_with_a_reason_and_calls_are_refused(shop: Shop) -> None:
    product = shop.listed()
    shop.subscribe(product["id"])
    assert shop.api.call("POST", f"/v1/products/{product['id']}/delist", shop.api.admin_key,
                         json={"reason": ""}).json()["code"] == "reason_required"
    delisted = shop.api.ok("POST", f"/v1/products/{product['id']}/delist", shop.api.admin_key,
                           json={"reason": "misleading description"})
    assert delisted["status"] == "delisted"
    refused = shop.invoke(product["id"], expect=422)
    assert refused["code"] == "product_not_listed" and "misleading description" in refused["detail"]
    assert shop.api.ok("GET", "/v1/products", None) == []


def test_calling_without_a_subscription_is_refused(shop: Shop) -> None:
    product = shop.listed()
    assert shop.invoke(product["id"], expect=422)["code"] == "not_subscribed"


@pytest.mark.parametrize(("action", "status"), [("suspend", "suspended"), ("revoke", "revoked")])
def test_a_suspended_or_revoked_grant_behind_the_product_refuses_calls_with_that_reason(shop: Shop, action: str,
                                                                                       status: str) -> None:
    api, w = shop.api, shop.w
    product = shop.listed()
    shop.subscribe(product["id"])
    api.ok("POST", f"/v1/grants/{product['grant_id']}/{action}", api.admin_key,
           json={"reason": f"{action} for the audit finding 7"})
    refused = shop.invoke(product["id"], expect=422)
    assert refused["code"] == f"grant_{status}"
    assert "audit finding 7" in refused["detail"]
    [call] = api.ok("GET", "/v1/calls", shop.customer_key)
    assert call["status"] == "refused" and call["run_id"]  # refused at the run's checks, like a run
    assert api.ok("GET", f"/v1/runs/{call['run_id']}", w.industry_key)["status"] == "refused"
    assert [e.outcome for e in _events(shop, "call")] == ["refused"]


def test_an_expired_grant_refuses_calls(shop: Shop) -> None:
    product = shop.listed()
    shop.subscribe(product["id"])
    shop.api.clock.advance(timedelta(days=400))
    assert shop.invoke(product["id"], expect=422)["code"] == "grant_expired"


def test_a_price_suspended_by_a_lowered_cap_refuses_calls_until_repriced(shop: Shop) -> None:
    api, w = shop.api, shop.w
    product = shop.listed()
    shop.subscribe(product["id"])
    lowered = [{**CAPS[0], "price": "0.30"}, *CAPS[1:]]
    caps = api.ok("POST", "/v1/prices/caps", w.finance, json={"caps": lowered})
    assert [s["product_id"] for s in caps["suspended"]] == [product["id"]]
    refused = shop.invoke(product["id"], expect=422)
    assert refused["code"] == "price_suspended" and "0.3" in refused["detail"]
    api.ok("POST", f"/v1/pricelist/{product['price']['entry_id']}/versions", w.industry_finance,
           json={"unit_price": "0.30"})
    assert shop.invoke(product["id"])["call"]["status"] == "succeeded"


def test_a_parameter_outside_its_set_or_grid_is_refused(shop: Shop) -> None:
    api, w = shop.api, shop.w
    product = shop.listed()
    shop.subscribe(product["id"])
    refused = shop.invoke(product["id"], {"s": "9"}, expect=422)
    assert refused["code"] == "parameter_not_allowed" and "one of 7, 8" in refused["detail"]
    job = api.ok("POST", "/v1/jobs", w.industry_key, json={
        "grant_id": product["grant_id"], "title": "rich districts", "purpose": "p",
        "sql": f"SELECT district, count(*) AS n FROM {w.dataset} WHERE income >= $floor GROUP BY district",
        "parameters": {"floor": "INTEGER"}})
    grid = shop.listed(job_id=job["id"], name="Above a floor", parameters={"floor": {"grid": {
        "min": 1000, "max": 1020, "step": 10}}}, price={"category": "query_interface", "basis": "per_call",
                                                       "unit": "call", "unit_price": "0.10"})
    shop.subscribe(grid["id"])
    assert shop.invoke(grid["id"], {"floor": 1010})["call"]["status"] == "succeeded"
    for bad in (1015, 990, 1030):
        assert shop.invoke(grid["id"], {"floor": bad}, expect=422)["code"] == "parameter_not_allowed"
    assert shop.invoke(grid["id"], {"floor": "x"}, expect=400)["code"] == "invalid_parameter"


def test_a_public_interest_subscription_approved_by_the_agency_is_free(shop: Shop) -> None:
    api, w = shop.api, shop.w
    product = shop.listed()
    sub = shop.subscribe(product["id"], public_interest_purpose="flood relief planning")
    shop.invoke(product["id"])
    approved = api.ok("POST", f"/v1/subscriptions/{sub['id']}/approve-public-interest", api.admin_key,
                      json={"reason": "emergency management, 2026 flood season"})
    assert approved["free"] is True and "approved by the agency" in approved["free_reason"]
    assert api.call("POST", f"/v1/subscriptions/{sub['id']}/approve-public-interest", shop.customer_key,
                    json={"reason": "x"}).status_code == 403
    assert shop.invoke(product["id"])["call"]["free"] is True
    period = JUNE
    bill = w.bill(w.customer, period, key=w.industry_finance)
    free = [ln for ln in bill["lines"] if ln["purpose_class"] == "public_interest"]
    assert bill["total"] == "0.40" and free and free[0]["amount"] == "0.00"


def test_who_sees_which_product_subscription_and_call(shop: Shop) -> None:
    api, w = shop.api, shop.w
    product = shop.listed()
    sub = shop.subscribe(product["id"])
    shop.invoke(product["id"])
    other_op = api.principal(w.public, "operator")
    assert api.call("GET", f"/v1/products/{product['id']}/record", other_op).json()["code"] == (
        "not_found_or_not_yours")
    assert api.ok("GET", "/v1/products/all", other_op) == []
    assert len(api.ok("GET", "/v1/products/all", w.regulator_key)) == 1
    assert [s["id"] for s in api.ok("GET", "/v1/subscriptions", w.industry_key)] == [sub["id"]]
    assert api.ok("GET", "/v1/calls", other_op) == []
    [call] = api.ok("GET", "/v1/calls", w.industry_key)
    assert api.ok("GET", f"/v1/calls/{call['id']}", shop.customer_key)["id"] == call["id"]
    other_customer = api.actor("customer", "customer")[1]
    assert api.call("GET", f"/v1/calls/{call['id']}", other_customer).json()["code"] == "not_found_or_not_yours"
    assert shop.subscribe(product["id"], expect=409)["code"] == "subscription_exists"
    assert api.call("POST", "/v1/products", shop.customer_key, json={
        "job_id": w.industry_job, "name": "x", "description": "x", "entry_id": "pe_x"}).status_code == 403


def test_a_products_calls_pass_through_the_release_audit_as_runs_do(api) -> None:  # type: ignore[no-untyped-def]
    """Leave-one-out through a product: the operator releases district A's total with a run; a product whose
    parameter excludes one phone number would give that person's income by difference, so the call's cell is
    suppressed by the release audit (the ledger is shared by runs and calls), and audited as such."""
    from test_output_control_attacks import PEOPLE_META, _people_csv, marker

    shop = build_shop(api)
    _, steward = api.actor("provider", "data_steward")
    api.register(steward, dataset_id="people", content=_people_csv(), **PEOPLE_META)
    grant = api.grant(shop.w.industry, purpose_class="industry", auto_approve=True, min_group_size=10)["id"]
    base = api.ok("POST", "/v1/jobs", shop.w.industry_key, json={
        "grant_id": grant, "title": "A", "purpose": "p", "sql": "SELECT sum(income) AS s FROM people "
                                                                "WHERE district = 'A'"})
    released = api.ok("POST", f"/v1/jobs/{base['id']}/runs", shop.w.industry_key, json={"params": {}})
    assert released["status"] == "succeeded" and released["suppressed_cells"] == 0
    job = api.ok("POST", "/v1/jobs", shop.w.industry_key, json={
        "grant_id": grant, "title": "A but one", "purpose": "p", "parameters": {"p": "VARCHAR"},
        "sql": "SELECT sum(income) AS s FROM people WHERE district = 'A' AND phone <> $p"})
    assert job["state"] == "approved"
    phones = [f"1380000{i:04d}" for i in (1, 2)]
    product = shop.listed(job_id=job["id"], name="A without one", parameters={"p": {"values": phones}})
    shop.subscribe(product["id"])
    answer = shop.invoke(product["id"], {"p": phones[0]})
    assert answer["call"]["status"] == "succeeded"
    [row] = answer["rows"]
    assert row["s"] is None and marker(row) == {"s": "difference_audit"}
    run = api.ok("GET", f"/v1/runs/{answer['call']['run_id']}", shop.w.industry_key)
    assert run["suppression"] == {"difference_audit": 1} and run["suppressed_cells"] == 1
    [audit] = [a for a in _audit(shop, "product:invoke") if a["decision"] == "allow"]
    assert audit["rows"]["suppressed_cells"] == 1 and audit["detail"]["suppression"] == {"difference_audit": 1}


def test_a_per_period_product_bills_one_period_per_subscription_and_month(shop: Shop) -> None:
    api, w = shop.api, shop.w
    product = shop.listed(price={"category": "statistics_report", "basis": "per_period", "unit": "month",
                                 "unit_price": "2800"})
    shop.subscribe(product["id"])
    shop.invoke(product["id"])
    shop.invoke(product["id"])
    assert len(_events(shop, "subscription")) == 1
    api.clock.advance(timedelta(days=32))
    shop.invoke(product["id"])
    periods = _events(shop, "subscription")
    assert len(periods) == 2 and len({e.id for e in periods}) == 2
    period = JUNE
    bill = w.bill(w.customer, period, key=w.industry_finance)
    [line] = [ln for ln in bill["lines"] if ln["meter"] == "periods" and ln["base_quantity"]]
    assert (line["base_quantity"], line["amount"]) == (1, "2800.00")
