"""Grants: scopes, grades, tightening, lifecycle and who may see them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

CSV = "person_id,district,income,phone\n" + "".join(f"p{i},d{i % 3},{i},1380000{i:04d}\n" for i in range(30))


@pytest.fixture
def world(api) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A provider with general, important and core datasets and two operators."""
    _, steward = api.actor("provider", "data_steward")
    cols = {"person_id": {"constraint": "join"}, "income": {"constraint": "aggregate"},
            "district": {"constraint": "open"}}
    api.register(steward, dataset_id="general_ds", content=CSV, domain="economy", entity_column="person_id",
                 columns=cols)
    api.register(steward, dataset_id="important_ds", content=CSV, domain="health_care", grade="important",
                 entity_column="person_id", columns=cols)
    api.register(steward, dataset_id="core_ds", content=CSV, domain="social_management", grade="core",
                 entity_column="person_id", columns=cols)
    op_a, key_a = api.actor("operator", "operator")
    op_b, key_b = api.actor("operator", "operator")
    return {"steward": steward, "op_a": op_a, "key_a": key_a, "op_b": op_b, "key_b": key_b}


SCENARIO = {"name": "health cost", "data_used": "visits", "supply": "sandbox aggregates", "problem": "plan clinics"}


def _code(resp) -> str:  # type: ignore[no-untyped-def]
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.text
    return str(resp.json()["code"])


def test_whole_grant_gets_default_limits(api, world) -> None:  # type: ignore[no-untyped-def]
    g = api.grant(world["op_a"])
    assert g["min_group_size"] == 10 and g["status"] == "active" and g["effective_status"] == "active"
    assert g["auto_approve"] is False


def test_granting_a_core_dataset_is_refused(api, world) -> None:  # type: ignore[no-untyped-def]
    resp = api.call("POST", "/v1/grants", api.admin_key, json={
        "operator_org_id": world["op_a"], "scope": "scenario", "purpose_class": "public_interest",
        "valid_until": (api.clock.now() + timedelta(days=30)).isoformat(), "datasets": ["core_ds"],
        "scenario": SCENARIO})
    assert resp.status_code == 422 and _code(resp) == "core_not_grantable"


def test_granting_important_data_outside_a_scenario_is_refused(api, world) -> None:  # type: ignore[no-untyped-def]
    body = api.grant(world["op_a"], scope="domain", domains=["health_care"], datasets=["important_ds"], expect=422)
    assert body["code"] == "important_requires_scenario"


def test_important_data_under_a_scenario_needs_k_of_at_least_20(api, world) -> None:  # type: ignore[no-untyped-def]
    g = api.grant(world["op_a"], scope="scenario", datasets=["important_ds"], scenario=SCENARIO)
    assert g["min_group_size"] == 20
    low = api.grant(world["op_a"], scope="scenario", datasets=["important_ds"], scenario=SCENARIO,
                    min_group_size=10, expect=422)
    assert low["code"] == "min_group_size_too_small"


def test_auto_approve_is_refused_for_important_data(api, world) -> None:  # type: ignore[no-untyped-def]
    body = api.grant(world["op_a"], scope="scenario", datasets=["important_ds"], scenario=SCENARIO,
                     auto_approve=True, expect=422)
    assert body["code"] == "auto_approve_not_allowed"


def test_scenario_grant_needs_its_three_answers(api, world) -> None:  # type: ignore[no-untyped-def]
    body = api.grant(world["op_a"], scope="scenario", datasets=["general_ds"],
                     scenario={**SCENARIO, "problem": " "}, expect=400)
    assert body["code"] == "scenario_incomplete"


@pytest.mark.parametrize(("column", "override", "allowed"), [
    ("district", "group", True),
    ("district", "hidden", True),
    ("income", "hidden", True),
    ("income", "open", False),
    ("income", "group", False),
    ("person_id", "open", False),
    ("district", "aggregate", False),
])
def test_grant_may_only_tighten_constraints(api, world, column: str, override: str,  # type: ignore[no-untyped-def]
                                            allowed: bool) -> None:
    body = api.grant(world["op_a"], scope="domain", domains=["economy"],
                     column_overrides={"general_ds": {column: override}}, expect=201 if allowed else 422)
    if not allowed:
        assert body["code"] == "grant_loosens_constraint"


def test_override_of_unknown_column_is_refused(api, world) -> None:  # type: ignore[no-untyped-def]
    body = api.grant(world["op_a"], column_overrides={"general_ds": {"nope": "hidden"}}, expect=400)
    assert body["code"] == "unknown_column"


def test_grants_go_only_to_operators(api, world) -> None:  # type: ignore[no-untyped-def]
    provider = api.org("provider")
    assert api.grant(provider, expect=400)["code"] == "grantee_not_operator"


@pytest.mark.parametrize("kind_roles", [("provider", "data_steward"), ("operator", "operator"),
                                        ("regulator", "regulator"), ("agency", "reviewer")])
def test_only_the_agency_admin_creates_grants(api, world, kind_roles) -> None:  # type: ignore[no-untyped-def]
    _, key = api.actor(*kind_roles)
    resp = api.call("POST", "/v1/grants", key, json={
        "operator_org_id": world["op_a"], "scope": "whole", "purpose_class": "industry",
        "valid_until": (api.clock.now() + timedelta(days=30)).isoformat()})
    assert resp.status_code == 403 and _code(resp) == "permission_denied"


def test_lifecycle_suspend_reinstate_revoke_with_reasons(api, world) -> None:  # type: ignore[no-untyped-def]
    gid = api.grant(world["op_a"])["id"]
    s = api.ok("POST", f"/v1/grants/{gid}/suspend", api.admin_key, json={"reason": "audit finding"})
    assert s["status"] == "suspended" and s["status_reason"] == "audit finding"
    r = api.ok("POST", f"/v1/grants/{gid}/reinstate", api.admin_key, json={"reason": "finding closed"})
    assert r["status"] == "active"
    bad = api.call("POST", f"/v1/grants/{gid}/reinstate", api.admin_key, json={"reason": "again"})
    assert bad.status_code == 409 and _code(bad) == "invalid_grant_transition"
    v = api.ok("POST", f"/v1/grants/{gid}/revoke", api.admin_key, json={"reason": "misuse"})
    assert v["status"] == "revoked"
    after = api.call("POST", f"/v1/grants/{gid}/reinstate", api.admin_key, json={"reason": "undo"})
    assert after.status_code == 409
    shown = api.ok("GET", f"/v1/grants/{gid}", api.admin_key)
    assert [e["action"] for e in shown["events"]] == ["create", "suspend", "reinstate", "revoke"]
    assert shown["events"][-1]["reason"] == "misuse"


def test_transition_without_a_reason_is_refused(api, world) -> None:  # type: ignore[no-untyped-def]
    gid = api.grant(world["op_a"])["id"]
    # a blank reason passes the schema's length check and is refused by the domain rule itself
    resp = api.call("POST", f"/v1/grants/{gid}/suspend", api.admin_key, json={"reason": "   "})
    assert resp.status_code == 400 and resp.json()["code"] == "reason_required"
    assert api.ok("GET", f"/v1/grants/{gid}", api.admin_key)["status"] == "active"


def test_expiry_follows_the_clock_and_is_not_stored(api, world) -> None:  # type: ignore[no-untyped-def]
    gid = api.grant(world["op_a"], valid_until=(api.clock.now() + timedelta(days=1)).isoformat())["id"]
    api.clock.advance(timedelta(days=2))
    g = api.ok("GET", f"/v1/grants/{gid}", api.admin_key)
    assert g["effective_status"] == "expired" and g["status"] == "active"


def test_operators_see_only_their_own_grants(api, world) -> None:  # type: ignore[no-untyped-def]
    ga = api.grant(world["op_a"])["id"]
    gb = api.grant(world["op_b"])["id"]
    assert [g["id"] for g in api.ok("GET", "/v1/grants", world["key_a"])] == [ga]
    resp = api.call("GET", f"/v1/grants/{gb}", world["key_a"])
    assert resp.status_code == 404 and _code(resp) == "not_found_or_not_yours"
    _, reg = api.actor("regulator", "regulator")
    assert {g["id"] for g in api.ok("GET", "/v1/grants", reg)} == {ga, gb}


def test_grant_refusals_are_audited_with_their_code(api, world) -> None:  # type: ignore[no-untyped-def]
    api.grant(world["op_a"], scope="domain", domains=["health_care"], datasets=["important_ds"], expect=422)
    _, reg = api.actor("regulator", "regulator")
    rows = api.ok("GET", "/v1/audit/events", reg, params={"limit": 1000})["events"]
    refused = [r for r in rows if r["action"] == "grant:create" and r["decision"] == "refused"]
    assert refused and refused[-1]["code"] == "important_requires_scenario"
    assert "important" in refused[-1]["reason"]
