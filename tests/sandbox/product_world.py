"""Products on top of the billing world: categories and caps set, a customer with a key, and helpers that publish,
list, subscribe and call through the HTTP API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billing_world import World, build_world
from sluice_api import Api

CAPS = [{"basis": "per_call", "category": "query_interface", "unit": "call", "price": "0.50"},
        {"basis": "per_volume", "category": "statistics_report", "unit": "10k_rows", "price": "20"},
        {"basis": "per_period", "category": "statistics_report", "unit": "month", "price": "3000"}]
PARAMS = {"s": {"values": ["7", "8"]}}


@dataclass
class Shop:
    w: World
    customer_key: str
    agency_reviewer: str

    @property
    def api(self) -> Api:
        return self.w.api

    def publish(self, *, expect: int = 201, key: str | None = None, **body: Any) -> Any:
        payload = {"job_id": self.w.industry_job, "name": "District income", "description": "income by district",
                   "parameters": PARAMS, "price": {"category": "query_interface", "basis": "per_call",
                                                   "unit": "call", "unit_price": "0.40"}, **body}
        resp = self.api.call("POST", "/v1/products", key or self.w.industry_key, json=payload)
        assert resp.status_code == expect, resp.text
        return resp.json()

    def list(self, product_id: str) -> Any:
        """Submit and approve: the product is listed."""
        self.api.ok("POST", f"/v1/products/{product_id}/submit", self.w.industry_key)
        return self.api.ok("POST", f"/v1/products/{product_id}/review", self.agency_reviewer,
                           json={"decision": "approve", "comment": "fits the grant"})

    def listed(self, **body: Any) -> Any:
        return self.list(self.publish(**body)["id"])

    def subscribe(self, product_id: str, key: str | None = None, expect: int = 201, **body: Any) -> Any:
        resp = self.api.call("POST", f"/v1/products/{product_id}/subscriptions", key or self.customer_key,
                             json=body or None)
        assert resp.status_code == expect, resp.text
        return resp.json()

    def invoke(self, product_id: str, params: dict[str, Any] | None = None, *, key: str | None = None,
               idem: str | None = None, expect: int = 201) -> Any:
        headers = {"Authorization": f"Bearer {key or self.customer_key}"}
        if idem:
            headers["Idempotency-Key"] = idem
        resp = self.api.http.post(f"/v1/products/{product_id}/invoke", headers=headers,
                                  json={"params": params if params is not None else {"s": "7"}})
        assert resp.status_code == expect, resp.text
        return resp.json()


def build_shop(api: Api) -> Shop:
    w = build_world(api)
    for code, name in (("query_interface", "查询接口 query interface"), ("statistics_report", "统计报告 report")):
        api.ok("POST", "/v1/prices/categories", w.finance, json={"code": code, "name": name})
    api.ok("POST", "/v1/prices/caps", w.finance, json={"caps": CAPS})
    customer_key = api.principal(w.customer, "customer")
    reviewer = api.principal(api.platform_org_id, "reviewer")
    return Shop(w=w, customer_key=customer_key, agency_reviewer=reviewer)
