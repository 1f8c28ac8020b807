"""The demo's metering part: platform fees and caps, a price list under the caps, this month's bills issued,
finalized, printed, reconciled and exported; the public-interest operator's bill is zero with evidence."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sandbox.cli.billing import print_bill
from sandbox.cli.client import ApiError, Client
from sandbox.demo.products import products_flow

PLATFORM_FEES = {"runs": "0.50", "rows_scanned": "0.02", "bytes_scanned": "1.00", "cpu_seconds": "0.01",
                 "downloads": "0.20", "download_bytes": "2.00"}
CATEGORIES = (("statistics_report", "统计报告 statistics report"), ("query_interface", "查询接口 query interface"),
              ("model_service", "模型服务 model service"))
CAPS = [
    {"basis": "per_call", "category": "query_interface", "unit": "call", "price": "0.50"},
    {"basis": "per_volume", "category": "query_interface", "unit": "GB", "price": "50"},
    {"basis": "per_volume", "category": "statistics_report", "unit": "10k_rows", "price": "20"},
    {"basis": "per_period", "category": "statistics_report", "unit": "month", "price": "3000"},
    {"basis": "per_period", "category": "model_service", "unit": "month", "price": "8000"},
]
LOOKUP = {"name": "Business density lookup 商业密度查询", "category": "query_interface", "basis": "per_call",
          "unit": "call", "unit_price": "0.40",
          "tiers": [{"up_to": "10000", "unit_price": "0.40"}, {"up_to": None, "unit_price": "0.30"}],
          "package": {"quantity": "50000", "price": "12000"}}
REPORT = {"name": "District economy monthly report 区域经济月报", "category": "statistics_report",
          "basis": "per_period", "unit": "month", "unit_price": "2800"}
TOO_DEAR = {"name": "Enterprise detail API 企业明细接口", "category": "query_interface", "basis": "per_call",
            "unit": "call", "unit_price": "0.80"}
COMMERCE_QUERIES = (
    ("Firms and employees by industry and district",
     "SELECT industry, district, count(*) AS firms, sum(employees) AS employees FROM enterprises "
     "GROUP BY industry, district"),
    ("Boardings by route", "SELECT route, sum(boardings) AS boardings FROM bus_ridership GROUP BY route"),
)


class Say(Protocol):
    def step(self, text: str) -> None: ...

    def detail(self, text: str) -> None: ...

    @property
    def as_json(self) -> bool: ...


def billing_flow(admin: Client, keys: dict[str, str], orgs: dict[str, str], say: Say, home: Path, now: datetime,
                 billing_tz: str) -> dict[str, Any]:
    """Prices and caps, the industry operator's price list, its runs, and this month's bills end to end."""
    from sandbox.demo.run import DemoError as DemoFailure  # a promise the demo shows did not hold

    out: dict[str, Any] = {}
    me = admin.get("/v1/me")
    for key, org, roles in (("agency_finance", me["org_id"], ["finance"]),
                            ("commerce_finance", orgs["commerce_ops"], ["finance"]),
                            ("health_finance", orgs["health_ops"], ["finance"])):
        keys[key] = admin.post("/v1/principals", {"org_id": org, "name": key, "roles": roles})["api_key"]
    agency = admin.with_key(keys["agency_finance"])
    commerce = admin.with_key(keys["commerce_finance"])

    say.step("The agency sets government-guided prices: product categories, platform fees and price caps")
    for code, name in CATEGORIES:
        agency.post("/v1/prices/categories", {"code": code, "name": name})
    fees = agency.post("/v1/prices/platform", {"rates": PLATFORM_FEES, "note": "platform fees 2026"})
    say.detail(f"platform fees v{fees['version']} (CNY per unit): "
               + ", ".join(f"{k} {v}" for k, v in fees["rates"].items()))
    caps = agency.post("/v1/prices/caps", {"caps": CAPS, "note": "上限收费标准 2026"})
    say.detail(f"price caps v{caps['version']}: " + "; ".join(
        f"{c['category']} {c['basis']} ≤ {c['price']}/{c['unit']}" for c in caps["caps"]))
    year = now.astimezone(ZoneInfo(billing_tz)).year
    agency.post("/v1/prices/revenue-caps", {"operator_org_id": orgs["commerce_ops"], "year": year,
                                            "amount": "500000", "note": "最高准许收入"})
    say.detail(f"maximum allowed revenue of the industry operator for {year}: 500000 CNY")
    vat = admin.get("/v1/prices")["vat"]
    say.detail(f"VAT: {vat}")

    say.step("The industry operator publishes its price list; a price above the cap is refused")
    lookup = commerce.post("/v1/pricelist", LOOKUP)
    report = commerce.post("/v1/pricelist", REPORT)
    for e in (lookup, report):
        v = e["versions"][-1]
        say.detail(f"{e['id']} {e['name']}: {v['unit_price']} per {e['unit']} ({e['status']}, cap {e['cap']})"
                   + (f", package {v['package']['quantity']} for {v['package']['price']}" if v["package"] else ""))
    try:
        commerce.post("/v1/pricelist", TOO_DEAR)
        raise DemoFailure("a price above its cap was accepted")
    except ApiError as e:
        say.detail(f"refused {e.code}: {e.problem['detail']}")
        out["refused_price"] = e.code

    say.step("The agency lowers the query-interface cap; the listed price is suspended until repriced")
    lowered = [dict(c, price="0.35") if c["category"] == "query_interface" and c["unit"] == "call" else c
               for c in CAPS]
    caps2 = agency.post("/v1/prices/caps", {"caps": lowered, "note": "cap lowered"})
    status = admin.get("/v1/pricelist/" + lookup["id"])["status"]
    say.detail(f"caps v{caps2['version']} suspends {[s['entry_id'] for s in caps2['suspended']]}; "
               f"status now {status}")
    repriced = commerce.post(f"/v1/pricelist/{lookup['id']}/versions", {
        "unit_price": "0.35", "tiers": [{"up_to": "10000", "unit_price": "0.35"},
                                        {"up_to": None, "unit_price": "0.30"}],
        "package": {"quantity": "50000", "price": "12000"}})
    say.detail(f"repriced to 0.35 (v{repriced['current_version']}): {repriced['status']}")
    out["price_list"] = {"entries": [lookup["id"], report["id"]], "lookup_status": repriced["status"]}

    say.step("The industry operator runs two auto-approved queries under its industry grant and downloads a result")
    analyst = admin.with_key(keys["commerce_analyst"])
    grant = next(g for g in analyst.get("/v1/grants") if g["purpose_class"] == "industry")["id"]
    runs = []
    for title, sql in COMMERCE_QUERIES:
        job = analyst.post("/v1/jobs", {"grant_id": grant, "title": title, "purpose": "market analysis", "sql": sql})
        for _ in range(2):
            runs.append(analyst.post(f"/v1/jobs/{job['id']}/runs", {"params": {}}))
    data = analyst.get(f"/v1/runs/{runs[0]['id']}/result", raw=True, params={"format": "csv"})
    say.detail(f"{len(runs)} runs ({', '.join(sorted({r['status'] for r in runs}))}), one download of "
               f"{len(data)} bytes")

    out["products"] = products_flow(admin, keys, orgs, say, lookup_entry=lookup["id"], report_entry=report["id"],
                                    grant=grant, now=now, billing_tz=billing_tz)

    period = now.astimezone(ZoneInfo(billing_tz)).strftime("%Y-%m")
    say.step(f"The agency issues this month's platform bills ({period}), prints and finalizes them")
    bills = {}
    for who in ("commerce_ops", "health_ops"):
        draft = agency.post("/v1/bills", {"payer_org_id": orgs[who], "period": period})
        bills[who] = agency.post(f"/v1/bills/{draft['id']}/finalize")
        if not say.as_json:
            print_bill(bills[who])
    health = bills["health_ops"]
    if health["total"] != "0.00" or not all(
            "public_interest" in ln["evidence"] and ln["amount"] == "0.00" for ln in health["lines"]):
        raise DemoFailure("the public-interest operator's bill is not zero with evidence on every line")
    say.detail(f"public-interest operator: total {health['total']} CNY, evidence on all {len(health['lines'])} lines")
    say.detail(f"industry operator: total {bills['commerce_ops']['total']} CNY "
               f"(VAT {bills['commerce_ops']['vat_amount']}), sha256 {bills['commerce_ops']['sha256'][:16]}…")

    say.step("Finance exports the bills (CSV with BOM, Parquet) with the usage detail; the regulator reconciles")
    exports = home / "exports"
    exports.mkdir(exist_ok=True)
    written = []
    for fmt in ("csv", "parquet"):
        for name, path in (("bills", "/v1/bills/export"), ("usage", "/v1/bills/export/usage")):
            target = exports / f"{name}-{period}.{fmt}"
            target.write_bytes(agency.get(path, raw=True, params={"period": period, "format": fmt}))
            written.append(str(target))
    for f in written:
        say.detail(f)
    check = admin.with_key(keys["auditor"]).get("/v1/reconciliation", params={"period": period})
    if not check["ok"]:
        raise DemoFailure(f"reconciliation failed: {check}")
    say.detail(f"reconciliation of {len(check['bills'])} bills: ok")
    attribution = admin.with_key(keys["steward"]).get("/v1/attribution", params={"period": period})
    for d in attribution["datasets"]:
        say.detail(f"attributed to {d['dataset_id']}: {d['total']} CNY (谁投入、谁贡献、谁收益)")
    out.update({"period": period, "bills": {k: {"id": b["id"], "total": b["total"], "status": b["status"],
                                                  "lines": len(b["lines"])} for k, b in bills.items()},
                "exports": written, "reconciled": check["ok"], "attribution": attribution["datasets"]})
    return out
