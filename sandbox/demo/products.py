"""The demo's products part: the industry operator publishes two products on its price-list entries, the agency
lists them, the public catalogue of products shows them, a customer subscribes to one and calls it (a retried call
counts once, a parameter outside its set is refused), and the calls show up on the customer's bill."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sandbox.cli.billing import print_bill
from sandbox.cli.client import ApiError, Client

INDUSTRIES = ["制造业", "批发和零售业", "信息传输、软件和信息技术服务业", "住宿和餐饮业"]
LOOKUP_SQL = ("SELECT district, count(*) AS firms, sum(employees) AS employees FROM enterprises "
              "WHERE industry = $industry GROUP BY district")
REPORT_SQL = "SELECT route, sum(boardings) AS boardings FROM bus_ridership GROUP BY route"


def products_flow(admin: Client, keys: dict[str, str], orgs: dict[str, str], say: Any, *, lookup_entry: str,
                  report_entry: str, grant: str, now: datetime, billing_tz: str) -> dict[str, Any]:
    """Publish and list two products, subscribe, call, and bill the calls to the customer."""
    from sandbox.demo.run import DemoError as DemoFailure  # a promise the demo shows did not hold

    analyst = admin.with_key(keys["commerce_analyst"])
    reviewer = admin.with_key(keys["reviewer_1"])
    customer = admin.with_key(keys["customer"])
    commerce_finance = admin.with_key(keys["commerce_finance"])

    say.step("The industry operator publishes two products on its approved jobs; the agency lists them")
    specs = [
        ("Business density lookup 商业密度查询", "Firms and insured employees per district for one industry "
         "section; small groups are suppressed", LOOKUP_SQL, {"industry": "VARCHAR"},
         {"industry": {"values": INDUSTRIES}}, lookup_entry),
        ("Route boardings monthly report 线路客流月报", "Boardings per bus route over the last year",
         REPORT_SQL, {}, {}, report_entry),
    ]
    products = []
    for name, description, sql, declared, params, entry in specs:
        job = analyst.post("/v1/jobs", {"grant_id": grant, "title": name, "purpose": "a data product",
                                        "sql": sql, "parameters": declared})
        product = analyst.post("/v1/products", {"job_id": job["id"], "name": name, "description": description,
                                                "parameters": params, "entry_id": entry})
        analyst.post(f"/v1/products/{product['id']}/submit")
        product = reviewer.post(f"/v1/products/{product['id']}/review", {"decision": "approve",
                                                                          "comment": "within the grant"})
        products.append(product)
        say.detail(f"{product['id']} {name}: {product['status']}, {product['price']['unit_price']} CNY per "
                   f"{product['price']['unit']} ({product['price']['basis']}, cap {product['price']['cap']})")
    catalogue = customer.get("/v1/products")  # the public catalogue of products (no key needed)
    for p in catalogue:
        datasets = ", ".join(f"{d['id']} [{d['certificate_code']}]" for d in p["datasets"])
        say.detail(f"public catalogue: {p['name']} by {p['operator']['name']} on {datasets}")

    lookup = products[0]
    say.step("A customer subscribes to the lookup and calls it; a retried call counts once, a value outside the "
             "product's set is refused")
    sub = customer.post(f"/v1/products/{lookup['id']}/subscriptions")
    say.detail(f"subscription {sub['id']}: {sub['status']}")
    answers = []
    for industry, key in ((INDUSTRIES[0], "order-1"), (INDUSTRIES[0], "order-1"), (INDUSTRIES[1], "order-2")):
        answer = customer.post(f"/v1/products/{lookup['id']}/invoke", {"params": {"industry": industry}},
                               headers={"Idempotency-Key": key})
        answers.append(answer)
        call = answer["call"]
        say.detail(f"call {call['id']} ({industry}, key {key}): {call['status']}, {len(answer['rows'])} rows"
                   + (" — replayed, not counted again" if answer["idempotent_replay"] else ""))
    try:
        customer.post(f"/v1/products/{lookup['id']}/invoke", {"params": {"industry": "金融业"}})
        raise DemoFailure("a parameter outside the product's set was accepted")
    except ApiError as e:
        say.detail(f"refused {e.code}: {e.problem['detail']}")
        refused = e.code
    calls = {a["call"]["id"] for a in answers}

    period = now.astimezone(ZoneInfo(billing_tz)).strftime("%Y-%m")
    say.step(f"The operator bills the customer for {period}: the calls are on the bill")
    draft = commerce_finance.post("/v1/bills", {"payer_org_id": orgs["customer"], "period": period})
    bill = commerce_finance.post(f"/v1/bills/{draft['id']}/finalize")
    if not say.as_json:
        print_bill(bill)
    charged = sum(int(ln["base_quantity"]) for ln in bill["lines"]
                  if ln["meter"] == "calls" and ln["outcome"] == "succeeded")
    if charged != len(calls):
        raise DemoFailure(f"the bill charges {charged} calls, the customer made {len(calls)}")
    say.detail(f"customer bill {bill['id']}: {charged} calls, total {bill['total']} CNY")
    return {"products": [p["id"] for p in products], "public": [p["id"] for p in catalogue],
            "subscription": sub["id"], "calls": sorted(calls), "refused_call": refused,
            "bill": {"id": bill["id"], "total": bill["total"], "calls": charged}}
