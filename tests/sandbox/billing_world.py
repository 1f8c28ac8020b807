"""A small world for billing tests, built through the API factories: agency finance, a provider with a dataset,
an industry and a public-interest operator with an approved job each, a customer and a regulator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sluice_api import Api

JOB_SQL = "SELECT district, CAST($s AS INTEGER) AS s, count(*) AS n, sum(income) AS income FROM {ds} GROUP BY district"
PLATFORM_RATES = {"runs": "0.50", "rows_scanned": "0.35", "bytes_scanned": "2", "cpu_seconds": "0.01",
                  "downloads": "0.10", "download_bytes": "1.5"}


@dataclass
class World:
    api: Api
    finance: str
    provider: str
    steward: str
    dataset: str
    industry: str
    industry_key: str
    industry_finance: str
    industry_job: str
    public: str
    public_key: str
    public_job: str
    customer: str
    customer_finance: str
    regulator_key: str

    def run(self, key: str, job: str, s: str = "7", expect: int = 201) -> Any:
        """Run a job: s="7" succeeds, s="x" fails at run time (conversion error)."""
        resp = self.api.call("POST", f"/v1/jobs/{job}/runs", key, json={"params": {"s": s}})
        assert resp.status_code == expect, resp.text
        return resp.json()

    def set_platform_fees(self, rates: dict[str, str] | None = None, **body: Any) -> Any:
        return self.api.ok("POST", "/v1/prices/platform", self.finance,
                           json={"rates": rates or PLATFORM_RATES, **body})

    def bill(self, payer: str, period: str, key: str | None = None, expect: int = 201, **body: Any) -> Any:
        resp = self.api.call("POST", "/v1/bills", key or self.finance,
                             json={"payer_org_id": payer, "period": period, **body})
        assert resp.status_code == expect, resp.text
        return resp.json()


def _job(api: Api, key: str, grant: str, dataset: str) -> str:
    job = api.ok("POST", "/v1/jobs", key, json={"grant_id": grant, "title": "income by district", "purpose": "p",
                                                 "sql": JOB_SQL.format(ds=dataset), "parameters": {"s": "VARCHAR"}})
    assert job["state"] == "approved", job
    return str(job["id"])


def build_world(api: Api) -> World:
    finance = api.principal(api.platform_org_id, "finance")
    provider, steward = api.actor("provider", "data_steward")
    dataset = api.register(steward)["id"]
    industry, industry_key = api.actor("operator", "operator")
    industry_finance = api.principal(industry, "finance")
    public, public_key = api.actor("operator", "operator")
    g_ind = api.grant(industry, purpose_class="industry", auto_approve=True)["id"]
    g_pub = api.grant(public, purpose_class="public_interest", auto_approve=True)["id"]
    customer, _ = api.actor("customer", "customer")
    customer_finance = api.principal(customer, "finance")
    _, regulator_key = api.actor("regulator", "regulator")
    return World(api=api, finance=finance, provider=provider, steward=steward, dataset=dataset, industry=industry,
                 industry_key=industry_key, industry_finance=industry_finance,
                 industry_job=_job(api, industry_key, g_ind, dataset), public=public, public_key=public_key,
                 public_job=_job(api, public_key, g_pub, dataset), customer=customer,
                 customer_finance=customer_finance, regulator_key=regulator_key)
