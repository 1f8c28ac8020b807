"""Set-up against a real `sluice serve` (bench.server.Server) for end-to-end metering tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

JOB_SQL = ("SELECT district, CAST($s AS INTEGER) AS s, count(*) AS n, sum(income) AS income FROM people "
           "GROUP BY district")


def ok(resp: httpx.Response) -> Any:
    assert resp.status_code < 400, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    return resp.json()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Served:
    base: str
    operator: str
    analyst: dict[str, str]
    finance: dict[str, str]
    finance_key: str
    job: str

    def run(self, client: httpx.Client, s: str = "7") -> dict[str, Any]:
        """POST a run ("x" makes it fail at run time); the response the client saw."""
        return ok(client.post(f"/v1/jobs/{self.job}/runs", headers=self.analyst, json={"params": {"s": s}}))


def served_world(base: str, admin_key: str, rows: int = 40) -> Served:
    """A provider's dataset, an industry operator with an approved job, agency finance, platform fees."""
    admin = bearer(admin_key)
    with httpx.Client(base_url=base, timeout=120) as http:
        me = ok(http.get("/v1/me", headers=admin))
        provider = ok(http.post("/v1/orgs", headers=admin, json={"name": "Provider", "kind": "provider"}))["id"]
        operator = ok(http.post("/v1/orgs", headers=admin, json={"name": "Operator", "kind": "operator"}))["id"]

        def key(org: str, name: str, role: str) -> str:
            return str(ok(http.post("/v1/principals", headers=admin,
                                    json={"org_id": org, "name": name, "roles": [role]}))["api_key"])

        steward, analyst, finance = (key(provider, "s", "data_steward"), key(operator, "a", "operator"),
                                     key(me["org_id"], "f", "finance"))
        csv = "person_id,district,income\n" + "".join(f"p{i:07d},d{i % 4},{1000 + i % 97}\n" for i in range(rows))
        meta = {"id": "people", "title": "people", "domain": "other", "update_frequency": "daily",
                "grade": "general"}
        ok(http.post("/v1/datasets", headers=bearer(steward), data={"metadata": json.dumps(meta)},
                     files={"file": ("people.csv", csv.encode())}))
        ok(http.post("/v1/registrations/people/1/certify-now", headers=admin,
                     json={"reason": "test set-up: certified through the shortcut"}))
        grant = ok(http.post("/v1/grants", headers=admin, json={
            "operator_org_id": operator, "scope": "whole", "purpose_class": "industry", "auto_approve": True,
            "valid_until": (datetime.now(UTC) + timedelta(days=30)).isoformat()}))["id"]
        job = ok(http.post("/v1/jobs", headers=bearer(analyst), json={
            "grant_id": grant, "title": "t", "purpose": "p", "sql": JOB_SQL, "parameters": {"s": "VARCHAR"}}))
        assert job["state"] == "approved", job
        ok(http.post("/v1/prices/platform", headers=bearer(finance),
                     json={"rates": {"runs": "0.50", "downloads": "0.10", "rows_scanned": "0.02"}}))
    return Served(base, operator, bearer(analyst), bearer(finance), finance, job["id"])


def usage(http: httpx.Client, served: Served) -> list[dict[str, Any]]:
    """Every usage event the agency's finance sees, paged."""
    events: list[dict[str, Any]] = []
    after = ""
    while True:
        page = ok(http.get("/v1/usage", headers=served.finance, params={"limit": 5000, "after": after}))
        events += page["events"]
        if not page["more"]:
            return events
        after = page["next"]


def bill_every_month(http: httpx.Client, served: Served) -> list[dict[str, Any]]:
    """Draft the operator's bill for each month (in the default billing zone) its usage falls in."""
    zone = ZoneInfo("Asia/Shanghai")
    months = sorted({datetime.fromisoformat(e["event_time"].replace("Z", "+00:00")).astimezone(zone)
                     .strftime("%Y-%m") for e in usage(http, served)})
    return [ok(http.post("/v1/bills", headers=served.finance, json={"payer_org_id": served.operator, "period": m}))
            for m in months]
