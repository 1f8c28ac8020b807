"""The demo's differencing attack: two accepted queries whose difference would single out one person.

Each query passes k on its own (both cover well over 20 patients), but they differ by one WHERE bound, and the
attacker knows from outside that exactly one patient of the district was born in the month between the bounds.
Releasing both would give that person's visits and total cost exactly: the release audit suppresses the second
release's differing cells with `difference_audit`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Protocol

import duckdb

from sandbox.cli.client import Client
from sandbox.demo.city import SMALL_DISTRICT


class _Say(Protocol):
    def step(self, text: str) -> None: ...

    def detail(self, text: str) -> None: ...


SQL = """SELECT count(DISTINCT v.person_id) AS patients, count(*) AS visits, sum(v.cost) AS total_cost
FROM clinic_visits AS v
JOIN residents AS r ON v.person_id = r.person_id
WHERE r.district = '{district}' AND r.birth_date < DATE '{born_before}'"""


def lone_birth_month(files: dict[str, Path], k: int) -> tuple[str, date, date]:
    """(district, month, next month): in that district exactly one patient was born in `month`, and at least
    `k` patients were born before it. This is the attacker's outside knowledge (here: read from the synthetic
    files)."""
    con = duckdb.connect()
    try:
        row = con.execute(f"""
            WITH patients AS (
                SELECT DISTINCT r.person_id, r.district, date_trunc('month', r.birth_date)::DATE AS month
                FROM read_csv_auto('{files["residents"]}') AS r
                JOIN (SELECT DISTINCT person_id FROM read_csv_auto('{files["clinic_visits"]}')) AS v
                  ON v.person_id = r.person_id
                WHERE r.district <> '{SMALL_DISTRICT}'),
            months AS (SELECT district, month, count(*) AS born,
                              sum(count(*)) OVER (PARTITION BY district ORDER BY month) - count(*) AS before
                       FROM patients GROUP BY district, month)
            SELECT district, month, (month + INTERVAL 1 MONTH)::DATE FROM months
            WHERE born = 1 AND before >= ? ORDER BY before, district LIMIT 1""", [k + 5]).fetchone()
    finally:
        con.close()
    if row is None:
        from sandbox.demo.run import DemoError  # a promise the demo shows did not hold
        raise DemoError("no district has a lone patient in a birth month")
    return str(row[0]), row[1], row[2]


def differencing_attack(admin: Client, keys: dict[str, str], grant: str, files: dict[str, Path], say: _Say,
                        k: int = 20) -> dict[str, Any]:
    """Submit, approve and run the two queries; show the second one's differing cells suppressed."""
    analyst = admin.with_key(keys["health_analyst"])
    district, month, next_month = lone_birth_month(files, k)
    say.step("A differencing attack: two queries that each pass k, but differ by one person")
    say.detail(f"the operator knows that exactly one patient in {district} was born in {month:%Y-%m}; it asks for "
               f"the patients born before {month:%Y-%m}, then before {next_month:%Y-%m}")
    runs = []
    for label, bound in (("born before", month), ("born before", next_month)):
        job = analyst.post("/v1/jobs", {"grant_id": grant, "title": f"Clinic cost, {district}, {label} {bound}",
                                        "purpose": "clinic cost of the oldest residents",
                                        "sql": SQL.format(district=district, born_before=bound.isoformat())})
        for reviewer in ("reviewer_1", "reviewer_2"):
            job = admin.with_key(keys[reviewer]).post(f"/v1/jobs/{job['id']}/review", {
                "decision": "approve", "comment": "one aggregate row over at least k patients"})
        run = analyst.post(f"/v1/jobs/{job['id']}/runs", {"params": {}})
        [row] = analyst.get(f"/v1/runs/{run['id']}/result", params={"format": "json"})
        cost = "suppressed" if row["total_cost"] is None else f"{float(row['total_cost']):,.2f}"
        visits = "suppressed" if row["visits"] is None else str(row["visits"])
        say.detail(f"{label} {bound:%Y-%m}: job {job['id']} {job['state']}, run {run['status']}: "
                   f"patients={row['patients']} visits={visits} total_cost={cost}; "
                   f"suppression {run['suppression'] or {}} marker {row.get('sluice_suppressed')}")
        runs.append({"job": job["id"], "run": run["id"], "row": row, "suppression": run["suppression"] or {}})
    from sandbox.demo.run import DemoError  # a promise the demo shows did not hold
    first, second = runs
    if first["row"]["total_cost"] is None or first["suppression"]:
        raise DemoError(f"the first query should be released in full: {first}")
    if second["row"]["total_cost"] is not None or second["suppression"].get("difference_audit", 0) < 1:
        raise DemoError(f"the second query's differing cells were not suppressed: {second}")
    say.detail("the difference would have been that one person's visits and total cost; the release audit "
               "suppressed the second release's differing cells (difference_audit), whichever came second")
    return {"district": district, "month": month.isoformat(), "runs": runs}
