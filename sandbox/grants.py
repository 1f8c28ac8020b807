"""Grants (authorized operation): scopes, grades, limits, column tightening and the grant lifecycle."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metering.meters import PurposeClass
from policy.constraints import Constraint, Grade, tighten
from policy.errors import ConstraintLoosening
from policy.sql_engines import DEFAULT_ENGINE, ENGINES
from sandbox.catalogue.domains import DOMAINS
from sandbox.catalogue.registry import latest_certified_version
from sandbox.errors import Conflict, InvalidInput, NotFound, Refused
from sandbox.run_inputs import AnyGrant
from sandbox.store.models import Dataset, DatasetVersion, Grant, GrantEvent, Organization
from sandbox.store.types import new_id

DEFAULT_MIN_GROUP_SIZE = 10
IMPORTANT_MIN_GROUP_SIZE = 20


class GrantScope(StrEnum):
    WHOLE = "whole"
    DOMAIN = "domain"
    SCENARIO = "scenario"


class GrantStatus(StrEnum):
    """Stored states. Expiry is not a state: it follows from `valid_until` and the clock."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class GrantAction(StrEnum):
    SUSPEND = "suspend"
    REVOKE = "revoke"
    REINSTATE = "reinstate"


# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[GrantAction, tuple[frozenset[GrantStatus], GrantStatus]] = {
    GrantAction.SUSPEND: (frozenset({GrantStatus.ACTIVE}), GrantStatus.SUSPENDED),
    GrantAction.REVOKE: (frozenset({GrantStatus.ACTIVE, GrantStatus.SUSPENDED}), GrantStatus.REVOKED),
    GrantAction.REINSTATE: (frozenset({GrantStatus.SUSPENDED}), GrantStatus.ACTIVE),
}


@dataclass(frozen=True)
class Scenario:
    """A scenario answers three questions: what data is used, how it is supplied, what problem it solves."""

    name: str
    data_used: str
    supply: str
    problem: str


@dataclass
class GrantRequest:
    """What the agency asks for when it grants an operator organization."""

    operator_org_id: str
    scope: str
    purpose_class: str
    valid_from: datetime
    valid_until: datetime
    domains: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    scenario: Scenario | None = None
    min_group_size: int | None = None
    max_result_rows: int = 10_000
    auto_approve: bool = False
    column_overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    engine: str = DEFAULT_ENGINE


@dataclass(frozen=True)
class Coverage:
    """Whether a grant covers a dataset, and why."""

    covered: bool
    reason: str


def _latest(session: Session, dataset_id: str) -> DatasetVersion:
    """The version a grant is checked against: the latest certified one (an application cannot be granted)."""
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise NotFound(f"dataset {dataset_id!r} does not exist", code="dataset_not_found", dataset=dataset_id)
    v = latest_certified_version(session, dataset_id)
    if v is None:
        raise Refused(f"dataset {dataset_id} has no certified version yet; only a certified registration can be "
                      "granted", code="dataset_not_certified", dataset=dataset_id)
    return v


def _nearest(word: str, known: list[str]) -> str:
    """' (did you mean `x`?)' for the closest known name, or ''."""
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _refuse(message: str, code: str, **ctx: Any) -> Refused:
    return Refused(message, code=code, **ctx)


def create_grant(session: Session, req: GrantRequest, *, now: datetime, created_by: str) -> Grant:
    """Validate a grant request against grades, scope rules and tightening-only overrides, then store it."""
    org = session.get(Organization, req.operator_org_id)
    if org is None:
        raise NotFound(f"organization {req.operator_org_id} does not exist", code="org_not_found")
    if org.kind != "operator":
        raise InvalidInput(f"grants go to operator organizations; {org.name} is a {org.kind}",
                           code="grantee_not_operator")
    try:
        scope = GrantScope(req.scope)
    except ValueError:
        raise InvalidInput(f"scope must be one of {', '.join(GrantScope)}", code="invalid_scope") from None
    try:
        purpose = PurposeClass(req.purpose_class)
    except ValueError:
        raise InvalidInput(f"purpose_class must be one of {', '.join(PurposeClass)}",
                           code="invalid_purpose_class") from None
    if req.valid_until <= req.valid_from:
        raise InvalidInput("valid_until must be after valid_from", code="invalid_validity")
    if req.max_result_rows < 1:
        raise InvalidInput("max_result_rows must be at least 1", code="invalid_max_result_rows")
    if req.engine not in ENGINES:
        raise InvalidInput(f"engine must be one of {', '.join(ENGINES)}{_nearest(req.engine, list(ENGINES))}",
                           code="invalid_engine", engine=req.engine)

    domains = sorted(set(req.domains))
    for d in domains:
        if d not in DOMAINS:
            raise InvalidInput(f"unknown domain {d!r}; see GET /v1/domains", code="invalid_domain", domain=d)
    if scope == GrantScope.DOMAIN and not domains:
        raise InvalidInput("a domain grant names at least one domain", code="domains_required")
    if scope != GrantScope.DOMAIN and domains:
        raise InvalidInput("only a domain grant names domains", code="domains_not_allowed")
    if scope == GrantScope.WHOLE and req.datasets:
        raise InvalidInput("a whole grant covers every grantable dataset; it names none",
                           code="datasets_not_allowed")
    if scope == GrantScope.SCENARIO:
        if not req.datasets:
            raise InvalidInput("a scenario grant names its datasets", code="datasets_required")
        sc = req.scenario
        if sc is None or not all(x.strip() for x in (sc.name, sc.data_used, sc.supply, sc.problem)):
            raise InvalidInput("a scenario grant answers: name, what data is used (data_used), how it is "
                               "supplied (supply), what problem it solves (problem)", code="scenario_incomplete")
    elif req.scenario is not None:
        raise InvalidInput("only a scenario grant carries a scenario", code="scenario_not_allowed")

    datasets = sorted(set(req.datasets))
    versions = {d: _latest(session, d) for d in datasets}
    has_important = False
    for d, v in versions.items():
        if v.grade == Grade.CORE:
            raise _refuse(f"dataset {d} is graded core; core data is never granted", "core_not_grantable",
                          dataset=d)
        if v.grade == Grade.IMPORTANT:
            if scope != GrantScope.SCENARIO:
                raise _refuse(f"dataset {d} is graded important; important data is granted only under "
                              "scenario scope", "important_requires_scenario", dataset=d)
            has_important = True
        if scope == GrantScope.DOMAIN and v.domain not in domains:
            raise InvalidInput(f"dataset {d} is in domain {v.domain}, outside this grant's domains",
                               code="dataset_outside_domains", dataset=d)

    floor = IMPORTANT_MIN_GROUP_SIZE if has_important else 1
    k = req.min_group_size if req.min_group_size is not None else (
        IMPORTANT_MIN_GROUP_SIZE if has_important else DEFAULT_MIN_GROUP_SIZE)
    if k < floor:
        raise _refuse(f"min_group_size must be at least {floor}" + (" for important data" if has_important else ""),
                      "min_group_size_too_small", min_group_size=k, floor=floor)
    if req.auto_approve and has_important:
        raise _refuse("auto_approve is never allowed for important data", "auto_approve_not_allowed")

    overrides: dict[str, dict[str, str]] = {}
    for d, cols in req.column_overrides.items():
        if scope == GrantScope.SCENARIO and d not in versions:
            raise InvalidInput(f"override names dataset {d}, which this grant does not name",
                               code="override_dataset_not_granted", dataset=d)
        if session.get(Dataset, d) is None:
            known = list(session.scalars(select(Dataset.id)))
            raise InvalidInput(f"column_overrides names dataset {d!r}, which does not exist{_nearest(d, known)}",
                               code="unknown_dataset", dataset=d)
        v = versions.get(d) or _latest(session, d)
        by_name = {c["name"]: c for c in v.columns}
        overrides[d] = {}
        for col, constraint in cols.items():
            if col not in by_name:
                raise InvalidInput(f"dataset {d} has no column {col!r}{_nearest(col, list(by_name))}",
                                   code="unknown_column", dataset=d, column=col)
            try:
                target = Constraint(constraint)
            except ValueError:
                raise InvalidInput(f"column_overrides.{d}.{col}: unknown constraint {constraint!r}"
                                   f"{_nearest(constraint, [c.value for c in Constraint])}; one of "
                                   f"{', '.join(c.value for c in Constraint)}", code="invalid_constraint",
                                   dataset=d, column=col) from None
            try:
                tighten(Constraint(by_name[col]["constraint"]), target, column=f"{d}.{col}")
            except ConstraintLoosening as e:
                raise Refused(e.message, code=e.code, dataset=d, **e.context) from None
            overrides[d][col] = target.value

    grant = Grant(
        id=new_id("grt"), operator_org_id=org.id, scope=scope.value, domains=domains, datasets=datasets,
        scenario=None if req.scenario is None else vars(req.scenario).copy(), purpose_class=purpose.value,
        valid_from=req.valid_from, valid_until=req.valid_until, min_group_size=k,
        max_result_rows=req.max_result_rows, auto_approve=req.auto_approve, column_overrides=overrides,
        status=GrantStatus.ACTIVE.value, status_reason="granted", created_at=now, created_by=created_by,
        engine=req.engine,
    )
    session.add(grant)
    session.flush()
    session.add(GrantEvent(grant_id=grant.id, at=now, actor_id=created_by, action="create", from_status=None,
                           to_status=GrantStatus.ACTIVE.value, reason="granted"))
    session.flush()
    return grant


def transition(session: Session, grant: Grant, action: GrantAction, *, reason: str, actor_id: str,
               now: datetime) -> Grant:
    """The one function that changes a grant's state; it records the event with its reason."""
    if not reason.strip():
        raise InvalidInput(f"{action.value} needs a reason", code="reason_required")
    allowed_from, to = TRANSITIONS[action]
    current = GrantStatus(grant.status)
    if current not in allowed_from:
        raise Conflict(f"cannot {action.value} a grant that is {current.value}; allowed from "
                       f"{', '.join(sorted(s.value for s in allowed_from))}", code="invalid_grant_transition",
                       status=current.value, action=action.value)
    grant.status = to.value
    grant.status_reason = reason
    session.add(GrantEvent(grant_id=grant.id, at=now, actor_id=actor_id, action=action.value,
                           from_status=current.value, to_status=to.value, reason=reason))
    session.flush()
    return grant


def effective_status(grant: AnyGrant, now: datetime) -> str:
    """The stored state, or `expired` / `not_yet_valid` as the clock says."""
    if grant.status != GrantStatus.ACTIVE:
        return grant.status
    if now >= grant.valid_until:
        return "expired"
    if now < grant.valid_from:
        return "not_yet_valid"
    return GrantStatus.ACTIVE.value


def covers(grant: AnyGrant, version: DatasetVersion) -> Coverage:
    """Whether a grant covers a dataset version, with the reason."""
    if version.grade == Grade.CORE:
        return Coverage(False, f"{version.dataset_id} v{version.version} is graded core; never granted")
    scope = GrantScope(grant.scope)
    if scope == GrantScope.SCENARIO:
        if version.dataset_id in grant.datasets:
            return Coverage(True, f"named by scenario {grant.scenario and grant.scenario.get('name')}")
        return Coverage(False, f"{version.dataset_id} is not named by this scenario grant")
    if version.grade == Grade.IMPORTANT:
        return Coverage(False, f"{version.dataset_id} is graded important; only a scenario grant covers it")
    if scope == GrantScope.WHOLE:
        return Coverage(True, "whole grant covers every general dataset")
    if version.domain not in grant.domains:
        return Coverage(False, f"{version.dataset_id} is in domain {version.domain}, outside the grant's domains")
    if grant.datasets and version.dataset_id not in grant.datasets:
        return Coverage(False, f"{version.dataset_id} is not among the datasets this domain grant names")
    return Coverage(True, f"domain {version.domain} is granted")


def effective_constraints(grant: AnyGrant, version: DatasetVersion) -> dict[str, str]:
    """Column -> constraint after the grant's tightening."""
    overrides = grant.column_overrides.get(version.dataset_id, {})
    out = {}
    for col in version.columns:
        base = Constraint(col["constraint"])
        if col["name"] in overrides:
            base = tighten(base, Constraint(overrides[col["name"]]), column=col["name"])
        out[col["name"]] = base.value
    return out
