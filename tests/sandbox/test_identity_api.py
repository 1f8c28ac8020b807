"""Authentication, roles, organizations and keys through the HTTP API."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import create_engine, select, text

from sandbox.store.models import ApiKey, AuditEvent

PROBLEM = "application/problem+json"


def _problem(resp, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["code"] == code, body
    assert body["status"] == status
    return body


def _audit(api) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    engine = create_engine(api.settings.resolved_database_url)
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        rows = list(s.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    engine.dispose()
    return rows


def test_bootstrap_admin_creates_organizations(api) -> None:  # type: ignore[no-untyped-def]
    org_id = api.org("operator", "Acme Data Ops")
    orgs = api.ok("GET", "/v1/orgs", api.admin_key)
    assert {"Acme Data Ops", "Sluice Platform (implementing agency)"} <= {o["name"] for o in orgs}
    assert api.ok("GET", f"/v1/orgs/{org_id}", api.admin_key)["kind"] == "operator"


def test_missing_credentials_are_refused(api) -> None:  # type: ignore[no-untyped-def]
    _problem(api.call("GET", "/v1/orgs", None), 401, "missing_credentials")


def test_malformed_key_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    _problem(api.call("GET", "/v1/orgs", "not-a-key"), 401, "key_malformed")


def test_unknown_key_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    fake = "sk_0123456789ab_" + "A" * 43
    _problem(api.call("GET", "/v1/orgs", fake), 401, "key_unknown")


def test_wrong_secret_for_a_known_key_id_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    key_id = api.admin_key.split("_")[1]
    _problem(api.call("GET", "/v1/orgs", f"sk_{key_id}_" + "B" * 43), 401, "key_unknown")


def test_revoked_key_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    org_id = api.org("operator")
    created = api.ok("POST", "/v1/principals", api.admin_key,
                     json={"org_id": org_id, "name": "alice", "roles": ["operator"]})
    key = created["api_key"]
    assert api.call("GET", "/v1/me", key).status_code == 200
    revoked = api.ok("POST", f"/v1/principals/{created['id']}/keys/{created['key_id']}/revoke", api.admin_key,
                     json={"reason": "left the company"})
    assert revoked["revoked_reason"] == "left the company"
    _problem(api.call("GET", "/v1/me", key), 401, "key_revoked")
    again = api.call("POST", f"/v1/principals/{created['id']}/keys/{created['key_id']}/revoke", api.admin_key,
                     json={"reason": "x"})
    _problem(again, 409, "key_already_revoked")


def test_expired_key_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    org_id = api.org("operator")
    key = api.principal(org_id, "operator", key_ttl_days=1)
    assert api.call("GET", "/v1/me", key).status_code == 200
    api.clock.advance(timedelta(days=1, seconds=1))
    _problem(api.call("GET", "/v1/me", key), 401, "key_expired")


def test_role_that_does_not_fit_its_organization_kind_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    org_id = api.org("operator")
    resp = api.call("POST", "/v1/principals", api.admin_key,
                    json={"org_id": org_id, "name": "bob", "roles": ["reviewer"]})
    body = _problem(resp, 400, "role_not_allowed_for_org_kind")
    assert "agency" in body["detail"]


def test_unknown_role_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    org_id = api.org("provider")
    resp = api.call("POST", "/v1/principals", api.admin_key,
                    json={"org_id": org_id, "name": "bob", "roles": ["superuser"]})
    _problem(resp, 400, "invalid_role")


def test_every_role_fits_the_kinds_in_the_matrix(api) -> None:  # type: ignore[no-untyped-def]
    fits = {"agency": ["admin", "reviewer", "finance"], "provider": ["admin", "data_steward", "finance"],
            "operator": ["admin", "operator", "finance"], "customer": ["admin", "customer", "finance"],
            "regulator": ["admin", "regulator", "finance"]}
    for kind, roles in fits.items():
        org_id = api.org(kind)
        api.principal(org_id, *roles)


def test_wrong_role_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    _, key = api.actor("operator", "operator")
    body = _problem(api.call("POST", "/v1/orgs", key, json={"name": "x", "kind": "operator"}), 403,
                    "permission_denied")
    assert "org" in body["detail"]


def test_key_is_stored_only_as_sha256(api) -> None:  # type: ignore[no-untyped-def]
    secret = api.admin_key.split("_", 2)[2]
    engine = create_engine(api.settings.resolved_database_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, secret_sha256 FROM api_keys")).all()
    engine.dispose()
    import hashlib

    assert any(r.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest() for r in rows)
    assert all(secret not in (r.secret_sha256 + r.id) for r in rows)
    assert ApiKey.__table__.c.keys() == ["id", "principal_id", "secret_sha256", "created_at", "expires_at",
                                          "revoked_at", "revoked_reason"]


def test_org_admin_manages_principals_of_its_own_organization_only(api) -> None:  # type: ignore[no-untyped-def]
    org_a, admin_a = api.actor("operator", "admin")
    org_b = api.org("operator")
    ok = api.call("POST", "/v1/principals", admin_a, json={"org_id": org_a, "name": "new", "roles": ["operator"]})
    assert ok.status_code == 201
    resp = api.call("POST", "/v1/principals", admin_a, json={"org_id": org_b, "name": "x", "roles": ["operator"]})
    _problem(resp, 404, "not_found_or_not_yours")
    listed = api.ok("GET", "/v1/principals", admin_a)
    assert {p["org_id"] for p in listed} == {org_a}


def test_cross_organization_read_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    _, key_a = api.actor("operator", "operator")
    org_b = api.org("operator")
    _problem(api.call("GET", f"/v1/orgs/{org_b}", key_a), 404, "not_found_or_not_yours")
    missing = _problem(api.call("GET", "/v1/orgs/org_doesnotexist", key_a), 404, "not_found_or_not_yours")
    foreign = _problem(api.call("GET", f"/v1/orgs/{org_b}", key_a), 404, "not_found_or_not_yours")
    assert missing["title"] == foreign["title"]  # a typo and another organization's id look alike
    denied = [r for r in _audit(api) if r.code == "not_found_or_not_yours"]
    assert denied and all(r.decision == "deny" and "own organization" in r.reason for r in denied)


def test_regulator_reads_everything_and_changes_nothing(api) -> None:  # type: ignore[no-untyped-def]
    _, reg = api.actor("regulator", "regulator")
    other = api.org("operator")
    assert api.call("GET", f"/v1/orgs/{other}", reg).status_code == 200
    assert len(api.ok("GET", "/v1/orgs", reg)) >= 3
    assert api.call("GET", "/v1/audit/events", reg).status_code == 200
    _problem(api.call("POST", "/v1/orgs", reg, json={"name": "x", "kind": "operator"}), 403, "permission_denied")
    _problem(api.call("POST", "/v1/principals", reg, json={"org_id": other, "name": "y", "roles": ["operator"]}),
             403, "permission_denied")


def test_refusals_and_successes_are_audited_with_reasons(api) -> None:  # type: ignore[no-untyped-def]
    _, key = api.actor("operator", "operator")
    api.call("POST", "/v1/orgs", key, json={"name": "x", "kind": "operator"})
    api.call("GET", "/v1/orgs", "sk_0123456789ab_" + "A" * 43)
    rows = _audit(api)
    denied = [r for r in rows if r.action == "org:create" and r.decision == "deny"]
    assert denied and denied[-1].code == "permission_denied" and "no rule" in denied[-1].reason
    unknown = [r for r in rows if r.code == "key_unknown"]
    assert unknown and unknown[-1].actor_id is None and unknown[-1].actor_key_id == "0123456789ab"
    allowed = [r for r in rows if r.action == "org:create" and r.decision == "allow"]
    assert allowed and allowed[0].status == 201 and "platform.admin" in allowed[0].rule


def test_validation_errors_are_problem_json(api) -> None:  # type: ignore[no-untyped-def]
    resp = api.call("POST", "/v1/orgs", api.admin_key, json={"name": "x"})
    _problem(resp, 422, "validation_error")
    _problem(api.call("GET", "/v1/nope", api.admin_key), 404, "route_not_found")


def test_invalid_org_kind_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    _problem(api.call("POST", "/v1/orgs", api.admin_key, json={"name": "x", "kind": "ministry"}), 400,
             "invalid_org_kind")


def test_an_unexpected_failure_is_problem_json_and_still_audited(api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sandbox.app import routes_identity

    def boom(_: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(routes_identity, "_org_out", boom)
    resp = api.call("GET", "/v1/orgs", api.admin_key)
    body = _problem(resp, 500, "internal_error")
    assert "disk on fire" not in body["detail"]
    errors = [r for r in _audit(api) if r.action == "org:read" and r.decision == "failed"]
    assert errors and errors[-1].code == "internal_error" and "RuntimeError" in errors[-1].reason
