"""The registration workflow through the API: every transition, every refused one, notices, objections, revocation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sluice_api import Api


@dataclass
class Agency:
    """The actors of a registration: a provider's steward, the agency admin and two reviewers."""

    api: Api
    provider: str
    steward: str
    admin: str
    reviewer: str
    reviewer2: str

    def post(self, key: str, ds: str, action: str, body: dict[str, Any] | None = None, *, version: int = 1,
             expect: int = 200) -> Any:
        resp = self.api.call("POST", f"/v1/registrations/{ds}/{version}/{action}", key, json=body)
        assert resp.status_code == expect, resp.text
        return resp.json()

    def get(self, key: str, ds: str, version: int = 1) -> Any:
        return self.api.ok("GET", f"/v1/registrations/{ds}/{version}", key)

    def to_notice(self, ds: str, version: int = 1) -> Any:
        self.post(self.admin, ds, "accept", version=version)
        self.post(self.reviewer, ds, "start-review", version=version)
        return self.post(self.reviewer, ds, "approve", {"comment": "ok", "acknowledge_findings": True},
                         version=version)


@pytest.fixture
def ag(api: Api) -> Agency:
    provider, steward = api.actor("provider", "data_steward")
    return Agency(api, provider, steward, api.admin_key, api.principal(api.platform_org_id, "reviewer"),
                  api.principal(api.platform_org_id, "reviewer"))


def _audit(api: Api, action: str) -> list[dict[str, Any]]:
    events = api.ok("GET", "/v1/audit/events", api.admin_key, params={"limit": 1000, "action": action})["events"]
    return [a for a in events if a["action"] == action]


def test_a_new_dataset_answers_applied_and_stays_out_of_the_catalogue(ag: Agency) -> None:
    reg = ag.api.apply(ag.steward, dataset_id="fresh")
    assert reg["registration_state"] == "applied" and reg["certificate_code"] is None
    assert "fresh" not in ag.api.http.get("/v1/catalogue").text
    assert ag.api.ok("GET", "/v1/datasets", ag.steward) == []
    _, op = ag.api.actor("operator", "operator")
    assert ag.api.call("GET", "/v1/datasets/fresh", op).status_code == 404
    assert ag.api.ok("GET", "/v1/datasets/fresh", ag.steward)["registration_state"] == "applied"


def test_full_path_moves_through_every_state_and_the_certificate_carries_the_dates(ag: Agency) -> None:
    api = ag.api
    api.apply(ag.steward, dataset_id="full")
    assert ag.post(ag.admin, "full", "accept")["state"] == "accepted"
    assert ag.post(ag.reviewer, "full", "start-review")["state"] == "under_review"
    noticed = ag.post(ag.reviewer, "full", "approve", {"comment": "metadata right"})
    assert noticed["state"] == "in_public_notice"
    ends = noticed["dates"]["notice_ends_at"]
    assert ends == (api.clock.now() + timedelta(seconds=api.settings.registration_notice_seconds)).isoformat()
    notices = api.http.get("/v1/registrations/notices")  # public: no key
    assert notices.status_code == 200 and [n["dataset"] for n in notices.json()] == ["full"]
    assert "p001" not in notices.text and "东区" not in notices.text  # metadata and grade, never values
    assert ag.post(ag.admin, "full", "issue", expect=409)["code"] == "notice_period_running"
    api.clock.advance(timedelta(seconds=api.settings.registration_notice_seconds))
    done = ag.post(ag.reviewer2, "full", "issue")
    assert done["state"] == "certified" and done["certificate_code"]
    body = api.http.get(f"/v1/certificates/{done['certificate_code']}").json()
    assert body["valid"] and body["status"] == "valid"
    dates = body["body"]["registration"]
    assert dates["path"] == "full" and all(dates[k] for k in ("applied_at", "accepted_at", "reviewed_at",
                                                              "notice_started_at", "notice_ended_at", "issued_at"))
    assert [e["action"] for e in done["events"]] == ["apply", "accept", "start_review", "approve", "issue"]
    assert api.http.get("/v1/registrations/notices").json() == []
    assert [d["id"] for d in api.http.get("/v1/catalogue").json()] == ["full"]
    assert {a["detail"].get("to_state") for a in _audit(api, "registration:accept")} == {"accepted"}


def test_a_return_names_the_reason_and_the_fields_and_a_new_version_corrects_them(ag: Agency) -> None:
    ag.api.apply(ag.steward, dataset_id="ret")
    assert ag.post(ag.admin, "ret", "return", {"reason": "x", "fields": ["nonsense"]}, expect=400)["code"] == \
        "invalid_return_fields"
    back = ag.post(ag.admin, "ret", "return", {"reason": "grade too low for phone numbers",
                                               "fields": ["grade", "columns.phone"]})
    assert back["state"] == "returned" and back["return_fields"] == ["columns.phone", "grade"]
    assert back["reason"] == "grade too low for phone numbers"
    v2 = ag.api.new_version(ag.steward, "ret", content="a\n1\n", grade="important", certify=False)
    assert v2["version"] == 2 and v2["registration_state"] == "applied"


def test_provider_withdraws_and_reviewer_rejects(ag: Agency) -> None:
    ag.api.apply(ag.steward, dataset_id="wd")
    _, other_steward = ag.api.actor("provider", "data_steward")
    assert ag.post(other_steward, "wd", "withdraw", {"reason": "x"}, expect=404)["code"] == "not_found_or_not_yours"
    assert ag.post(ag.steward, "wd", "withdraw", {"reason": "wrong file"})["state"] == "withdrawn"
    ag.api.apply(ag.steward, dataset_id="rj")
    ag.post(ag.admin, "rj", "accept")
    ag.post(ag.reviewer, "rj", "start-review")
    assert ag.post(ag.reviewer, "rj", "reject", {"reason": "not public data"})["state"] == "rejected"
    assert ag.post(ag.steward, "rj", "withdraw", {"reason": "late"}, expect=409)["code"] == \
        "wrong_registration_state"


@pytest.mark.parametrize(("who", "action", "code"), [
    ("steward", "accept", "permission_denied"),
    ("operator", "start-review", "permission_denied"),
    ("admin", "start-review", "permission_denied"),
    ("reviewer", "certify-now", "permission_denied"),
    ("steward", "certify-now", "permission_denied"),
    ("regulator", "accept", "permission_denied"),
    ("other_steward", "withdraw", "not_found_or_not_yours"),
])
def test_a_step_by_the_wrong_role_is_refused_and_audited(ag: Agency, who: str, action: str, code: str) -> None:
    ag.api.apply(ag.steward, dataset_id="roles")
    if action == "start-review":
        ag.post(ag.admin, "roles", "accept")
    keys = {"steward": ag.steward, "admin": ag.admin, "reviewer": ag.reviewer,
            "operator": ag.api.actor("operator", "operator")[1],
            "regulator": ag.api.actor("regulator", "regulator")[1],
            "other_steward": ag.api.actor("provider", "data_steward")[1]}
    body = {"reason": "r"} if action in ("certify-now", "withdraw") else None
    expect = 404 if code == "not_found_or_not_yours" else 403
    assert ag.post(keys[who], "roles", action, body, expect=expect)["code"] == code
    denied = [a for a in ag.api.ok("GET", "/v1/audit/events", ag.admin, params={"limit": 1000})["events"]
              if a["decision"] == "deny" and a["action"].startswith("registration:")]
    assert denied and denied[-1]["code"] == code


def test_the_accepter_never_reviews(ag: Agency) -> None:
    ag.api.apply(ag.steward, dataset_id="self")
    ag.post(ag.reviewer, "self", "accept")
    assert ag.post(ag.reviewer, "self", "start-review", expect=403)["code"] == "self_review"
    ag.post(ag.reviewer2, "self", "start-review")
    ag.api.apply(ag.steward, dataset_id="self2")
    ag.post(ag.reviewer, "self2", "accept")
    ag.post(ag.reviewer2, "self2", "start-review")
    assert ag.post(ag.reviewer, "self2", "approve", {"comment": "ok"}, expect=403)["code"] == "self_review"
    assert ag.post(ag.reviewer, "self2", "reject", {"reason": "no"}, expect=403)["code"] == "self_review"


def test_steps_out_of_order_are_refused(ag: Agency) -> None:
    ag.api.apply(ag.steward, dataset_id="order")
    assert ag.post(ag.reviewer, "order", "start-review", expect=409)["code"] == "wrong_registration_state"
    assert ag.post(ag.admin, "order", "issue", expect=409)["code"] == "wrong_registration_state"
    ag.post(ag.admin, "order", "accept")
    assert ag.post(ag.admin, "order", "accept", expect=409)["code"] == "wrong_registration_state"
    assert ag.post(ag.admin, "order", "certify-now", {"reason": "r"}, expect=409)["code"] == \
        "wrong_registration_state"
    assert ag.api.apply(ag.steward, dataset_id="order", expect=409)["code"] == "dataset_exists"
    again = ag.api.new_version(ag.steward, "order", content="x\n1\n", certify=False, expect=409)
    assert again["code"] == "registration_in_progress"


def test_approving_with_findings_needs_their_acknowledgement(ag: Agency) -> None:
    ag.api.apply(ag.steward, dataset_id="find", expectations=[{"kind": "range", "column": "income", "max": 1010}])
    ag.post(ag.admin, "find", "accept")
    review = ag.post(ag.reviewer, "find", "start-review")
    assert [f["code"] for f in review["findings"]] == ["expectation_failed"]
    assert ag.post(ag.reviewer, "find", "approve", {"comment": "ok"}, expect=400)["code"] == \
        "findings_not_acknowledged"
    assert ag.post(ag.reviewer, "find", "approve", {"comment": "ok", "acknowledge_findings": True})["state"] == \
        "in_public_notice"


def test_a_version_that_is_not_certified_is_never_granted_or_queried(ag: Agency) -> None:
    api = ag.api
    api.apply(ag.steward, dataset_id="pending", domain="economy")
    op, key = api.actor("operator", "operator")
    assert api.grant(op, scope="scenario", datasets=["pending"], expect=422, scenario={
        "name": "s", "data_used": "d", "supply": "s", "problem": "p"})["code"] == "dataset_not_certified"
    grant = api.grant(op, scope="whole", auto_approve=True)
    resp = api.call("POST", "/v1/jobs", key, json={"grant_id": grant["id"], "title": "t", "purpose": "p",
                                                   "sql": "SELECT district, count(*) AS n FROM pending GROUP BY 1"})
    assert resp.status_code == 422 and resp.json()["context"]["findings"][0]["code"] == "unknown_table"


def test_a_newer_version_not_yet_certified_leaves_grants_and_jobs_on_the_certified_one(ag: Agency) -> None:
    api = ag.api
    api.register(ag.steward, dataset_id="ver", domain="economy")
    op, key = api.actor("operator", "operator")
    grant = api.grant(op, scope="whole", auto_approve=True)
    api.new_version(ag.steward, "ver", content="district,income\nA,1\n", domain="economy", certify=False)
    job = api.ok("POST", "/v1/jobs", key, json={"grant_id": grant["id"], "title": "t", "purpose": "p",
                                                "sql": "SELECT district, sum(income) AS s FROM ver GROUP BY 1"})
    assert job["dataset_versions"] == {"ver": 1}
    run = api.ok("POST", f"/v1/jobs/{job['id']}/runs", key, json={"params": {}})
    assert run["status"] == "succeeded" and run["dataset_versions"] == {"ver": 1}


def test_an_objection_holds_the_certificate_until_a_reviewer_resolves_it_publicly(ag: Agency) -> None:
    api = ag.api
    api.apply(ag.steward, dataset_id="obj")
    ag.to_notice("obj")
    _, op = api.actor("operator", "operator")
    filed = ag.post(op, "obj", "objections", {"reason": "my district is missing"}, expect=201)
    assert filed["status"] == "open"
    api.clock.advance(timedelta(seconds=api.settings.registration_notice_seconds))
    assert ag.post(ag.admin, "obj", "issue", expect=409)["code"] == "objection_open"
    assert ag.post(op, "obj", "objections", {"reason": "late"}, expect=409)["code"] == "notice_period_over"
    ag.post(ag.reviewer2, "obj", f"objections/{filed['id']}/resolve",
            {"outcome": "dismiss", "resolution": "every district is present"})
    public = api.http.get("/v1/registrations/notices").json()[0]["objections"][0]
    assert public["status"] == "dismissed" and public["resolution"] == "every district is present"
    assert "reason" not in public and "filed_by" not in public  # the text and the filer stay private
    assert ag.post(ag.admin, "obj", "issue")["state"] == "certified"


def test_an_upheld_objection_returns_the_application(ag: Agency) -> None:
    ag.api.apply(ag.steward, dataset_id="up")
    ag.to_notice("up")
    _, customer = ag.api.actor("customer", "customer")
    filed = ag.post(customer, "up", "objections", {"reason": "contains my phone number"}, expect=201)
    _, regulator = ag.api.actor("regulator", "regulator")
    assert ag.post(regulator, "up", "objections", {"reason": "x"}, expect=403)["code"] == "permission_denied"
    out = ag.post(ag.reviewer2, "up", f"objections/{filed['id']}/resolve",
                  {"outcome": "uphold", "resolution": "phone numbers must be masked"})
    assert out["state"] == "returned" and out["reason"].startswith("objection upheld")


def test_revocation_stops_every_job_on_the_version_and_online_verification_reports_it(ag: Agency) -> None:
    api = ag.api
    reg = api.register(ag.steward, dataset_id="gone", domain="economy")
    op, key = api.actor("operator", "operator")
    grant = api.grant(op, scope="whole", auto_approve=True)
    job = api.ok("POST", "/v1/jobs", key, json={"grant_id": grant["id"], "title": "t", "purpose": "p",
                                                "sql": "SELECT district, sum(income) AS s FROM gone GROUP BY 1"})
    assert api.ok("POST", f"/v1/jobs/{job['id']}/runs", key, json={"params": {}})["status"] == "succeeded"
    out = ag.post(ag.steward, "gone", "revoke", {"reason": "source system decommissioned"})
    assert out["state"] == "revoked" and out["stopped_jobs"] == [job["id"]]
    stopped = api.ok("GET", f"/v1/jobs/{job['id']}", key)
    assert stopped["state"] == "stopped" and "source system decommissioned" in stopped["stopped_reason"]
    refused = api.call("POST", f"/v1/jobs/{job['id']}/runs", key, json={"params": {}})
    assert refused.status_code == 422 and refused.json()["code"] == "job_stopped"
    assert "gone v1" in refused.json()["detail"]
    online = api.http.get(f"/v1/certificates/{reg['certificate_code']}").json()
    assert online["status"] == "revoked" and online["valid"] is False and online["signature_valid"] is True
    assert online["revoked_reason"] == "source system decommissioned"
    assert api.ok("GET", "/v1/datasets", key) == []


def test_certify_now_at_registration_is_agency_admin_only_and_audited_as_a_shortcut(ag: Agency) -> None:
    api = ag.api
    meta = {"id": "quick", "title": "t", "domain": "other", "update_frequency": "monthly", "grade": "general",
            "certify_now": True}
    files = {"file": ("d.csv", b"a,b\n1,2\n")}
    refused = api.call("POST", "/v1/datasets", ag.steward, data={"metadata": json.dumps(meta)}, files=files)
    assert refused.status_code == 403 and refused.json()["code"] == "certify_now_not_allowed"
    plain = {**meta, "certify_now": False, "provider_org_id": ag.provider}
    assert api.call("POST", "/v1/datasets", ag.admin, data={"metadata": json.dumps(plain)},
                    files=files).json()["code"] == "filing_for_another_organization"
    done = api.call("POST", "/v1/datasets", ag.admin, data={"metadata": json.dumps({**meta,
                    "provider_org_id": ag.provider})}, files=files)
    assert done.status_code == 201 and done.json()["registration_state"] == "certified"
    assert done.json()["registration_path"] == "certify_now"
    row = [a for a in _audit(api, "dataset:create") if a["detail"].get("shortcut") == "certify_now"]
    assert len(row) == 1 and row[0]["detail"]["shortcut_rule"].endswith("certify_now, any")


def test_a_metadata_only_change_skips_the_notice_and_a_loosening_one_does_not(ag: Agency) -> None:
    api = ag.api
    api.register(ag.steward, dataset_id="meta", columns={"phone": {"constraint": "hidden"}})
    v2 = api.new_version(ag.steward, "meta", description="clearer", columns={"phone": {"constraint": "hidden"}},
                         certify=False)
    assert v2["registration_path"] == "metadata_change"
    ag.post(ag.admin, "meta", "accept", version=2)
    ag.post(ag.reviewer, "meta", "start-review", version=2)
    done = ag.post(ag.reviewer, "meta", "approve", {"comment": "text only"}, version=2)
    assert done["state"] == "certified" and done["dates"]["notice_started_at"] is None
    v3 = api.new_version(ag.steward, "meta", description="clearer", certify=False)  # phone hidden -> open
    assert v3["registration_path"] == "full"
    assert ag.get(ag.admin, "meta", 3)["events"][0]["detail"]["full_path_because"].startswith("column phone")
