"""docs/permissions.md is the stored matrix, and the enforcer obeys every row of it."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.orm import Session

from policy.authz import Authorizer, Scope
from sandbox.store.db import load_policy_rows, make_engine

DOC = Path(__file__).resolve().parents[2] / "docs" / "permissions.md"
ROW = re.compile(r"^\| `([^`]+)` \| `([^`]+)` \| `([^`]+)` \| (own|any) \|$")


def _doc_rows() -> set[tuple[str, str, str, str]]:
    rows = set()
    for line in DOC.read_text("utf-8").splitlines():
        m = ROW.match(line.strip())
        if m:
            rows.add(m.groups())  # type: ignore[arg-type]
    return rows


def _store_rows(store_url: str) -> list[tuple[str, ...]]:
    engine = make_engine(store_url)
    with Session(engine) as s:
        rows = load_policy_rows(s)
    engine.dispose()
    return rows


def test_documented_matrix_equals_the_stored_matrix(store_url: str) -> None:
    stored = {tuple(r[1:]) for r in _store_rows(store_url)}
    assert len(stored) > 50
    assert _doc_rows() == stored


def test_enforcer_allows_every_documented_row_and_nothing_wider(store_url: str) -> None:
    authz = Authorizer(_store_rows(store_url))
    rows = _doc_rows()
    for sub, obj, act, _scope in rows:
        assert authz.decide([sub], obj, act, Scope.OWN).allowed, (sub, obj, act)
        other = authz.decide([sub], obj, act, Scope.OTHER)
        assert other.allowed == ((sub, obj, act, "any") in rows), (sub, obj, act)
    subjects = {r[0] for r in rows}
    actions = {(r[1], r[2]) for r in rows}
    for sub in subjects:
        for obj, act in actions:
            if (sub, obj, act, "own") not in rows and (sub, obj, act, "any") not in rows:
                decision = authz.decide([sub], obj, act, Scope.OWN)
                assert not decision.allowed and decision.rule == "deny-by-default"


def test_regulator_has_no_changing_action(store_url: str) -> None:
    changing = {"create", "change", "review", "revoke"}
    for row in _store_rows(store_url):
        if row[1] == "regulator.regulator":
            assert row[3] not in changing, row


def test_decisions_carry_rule_and_reason(store_url: str) -> None:
    authz = Authorizer(_store_rows(store_url))
    yes = authz.decide(["agency.admin"], "grant", "create", Scope.OTHER)
    assert yes.allowed and yes.rule == "p, agency.admin, grant, create, any"
    no = authz.decide(["operator.operator"], "grant", "read", Scope.OTHER)
    assert not no.allowed and "only for its own organization" in no.reason
