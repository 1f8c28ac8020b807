"""The demo's registration part: one dataset through every step of the workflow, the shortcut for the rest,
and a quality report answered by the provider. Real time only: the notice period is shortened through the
demo's own settings (SLUICE_REGISTRATION_NOTICE_SECONDS), never by back-dating anything."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Protocol

from sandbox.cli.client import ApiError, Client
from sandbox.clock import Clock
from sandbox.demo.city import DISTRICTS

DEMO_NOTICE_SECONDS = 3
FULL_PATH_DATASET = "weather"

# Declared expectations (质量自查) per dataset, checked at registration.
EXPECTATIONS: dict[str, list[dict[str, Any]]] = {
    "residents": [{"kind": "unique", "column": "person_id"},
                  {"kind": "in_set", "column": "district", "values": list(DISTRICTS)},
                  {"kind": "not_null", "column": "birth_date"}],
    "clinic_visits": [{"kind": "unique", "column": "visit_id"}, {"kind": "range", "column": "cost", "min": 0}],
    "enterprises": [{"kind": "unique", "column": "credit_code"},
                    {"kind": "matches", "column": "credit_code", "pattern": "9199[0-9A-Z]{14}"}],
    "bus_ridership": [{"kind": "range", "column": "boardings", "min": 0}],
    "weather": [{"kind": "in_set", "column": "district", "values": list(DISTRICTS)},
                {"kind": "range", "column": "rain_mm", "min": 0, "max": 40},
                {"kind": "not_null", "column": "day"}],
}
FRESHNESS_COLUMNS = {"clinic_visits": "visit_date", "bus_ridership": "hour", "weather": "day"}


class Say(Protocol):
    def step(self, text: str) -> None: ...

    def detail(self, text: str) -> None: ...


def _refusal(fn: Any) -> str:
    try:
        fn()
    except ApiError as e:
        return e.code
    return "NOT REFUSED"


def full_workflow(admin: Client, keys: dict[str, str], clock: Clock, say: Say) -> dict[str, Any]:
    """Take the weather application through accept, review, notice with an objection, and issue."""
    ds, v = FULL_PATH_DATASET, 1
    base = f"/v1/registrations/{ds}/{v}"
    r1, r2 = admin.with_key(keys["reviewer_1"]), admin.with_key(keys["reviewer_2"])
    out: dict[str, Any] = {"dataset": ds}
    say.step(f"'{ds}' goes through every registration step (申请、受理、审查、公示、凭证签发)")
    reg = admin.post(f"{base}/accept", {"comment": "application complete"})
    say.detail(f"agency admin accepts (受理) -> {reg['state']}")
    reg = r1.post(f"{base}/start-review")
    say.detail(f"reviewer_1 starts the review (审查) -> {reg['state']}; quality findings: {len(reg['findings'])}")
    for f in reg["findings"]:
        say.detail(f"  finding {f['code']} ({f['severity']}): {f['message']}")
    out["findings"] = [f["code"] for f in reg["findings"]]
    reg = r1.post(f"{base}/approve", {"comment": "metadata and grade are right; findings explained by the "
                                                 "provider", "acknowledge_findings": True})
    say.detail(f"reviewer_1 approves -> {reg['state']} until {reg['dates']['notice_ends_at']} "
               f"(demo notice period {DEMO_NOTICE_SECONDS} s)")
    public = admin.with_key("").get("/v1/registrations/notices")
    say.detail(f"public notice list (no key): {[(n['dataset'], n['grade']) for n in public]}")
    objection = admin.with_key(keys["customer"]).post(f"{base}/objections", {
        "reason": "Is the 湖滨区 station really part of this dataset? It looks missing on some days."})
    say.detail(f"a customer objects (异议): {objection['id']} {objection['status']}")
    out["early_issue"] = _refusal(lambda: admin.post(f"{base}/issue"))
    say.detail(f"issuing now is refused: {out['early_issue']}")
    reg = r2.post(f"{base}/objections/{objection['id']}/resolve", {
        "outcome": "dismiss", "resolution": "every district, including 湖滨区, has one row per day; checked by "
                                            "the declared expectations"})
    say.detail("reviewer_2 dismisses the objection; the resolution is public")
    ends = datetime.fromisoformat(reg["dates"]["notice_ends_at"])
    while clock.now() < ends:
        time.sleep(min(0.5, max(0.05, (ends - clock.now()).total_seconds())))
    reg = admin.post(f"{base}/issue")
    say.detail(f"notice over; agency admin issues the certificate (凭证签发): {reg['certificate_code']}")
    for label, key in (("applied", "applied_at"), ("accepted", "accepted_at"), ("reviewed", "reviewed_at"),
                       ("notice", "notice_started_at"), ("issued", "certified_at")):
        say.detail(f"  {label:9} {reg['dates'][key]}")
    out.update(state=reg["state"], certificate=reg["certificate_code"], dates=reg["dates"])
    return out


def certify_rest(admin: Client, applications: dict[str, int], say: Say) -> dict[str, str]:
    """The shortcut (agency admin, audited as such) for every other application."""
    say.step("The agency admin certifies the other applications with the demo shortcut (certify_now, audited)")
    codes = {}
    for ds, version in applications.items():
        reg = admin.post(f"/v1/registrations/{ds}/{version}/certify-now",
                         {"reason": "demo: shortcut for the datasets not walked through every step"})
        codes[ds] = reg["certificate_code"]
        say.detail(f"{ds:14} {reg['state']} {reg['certificate_code']} (path {reg['path']})")
    return codes


def quality_feedback(admin: Client, keys: dict[str, str], say: Say) -> dict[str, Any]:
    """A customer files a quality report; the provider answers it; the agency sees the statistics."""
    say.step("Quality feedback (质量问题反馈): a customer reports a problem, the provider answers")
    receipt = admin.with_key(keys["customer"]).post("/v1/quality/reports", {
        "dataset": FULL_PATH_DATASET, "category": "wrong_values", "column": "rain_mm",
        "description": "Rainfall is exactly 0.0 on many summer days in 城南区; is that a sensor gap?"})
    say.detail(f"receipt {receipt['id']}: {receipt['status']}, answer due {receipt['due_at']} "
               "(the filer never sees the answer: no oracle over the data)")
    steward = admin.with_key(keys["steward"])
    answered = steward.post(f"/v1/quality/reports/{receipt['id']}/answer", {
        "answer": "not_a_defect", "reason": "dry days record 0.0 mm; the gauges reported on every day"})
    say.detail(f"provider answers: {answered['status']} ({answered['answer_reason']})")
    refused = _refusal(lambda: admin.with_key(keys["commerce_analyst"]).get(f"/v1/quality/reports/{receipt['id']}"))
    say.detail(f"another operator reading the report: {refused}")
    stats = admin.get("/v1/quality/stats")
    say.detail(f"agency statistics: filed={stats['filed']} resolved={stats['resolved']} "
               f"median time to resolve={stats['median_time_to_resolve_seconds']} s")
    return {"report": receipt["id"], "status": answered["status"], "foreign_read": refused, "stats": stats}
