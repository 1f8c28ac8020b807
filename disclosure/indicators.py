"""Scenario indicators (按季度调度) and the evaluation indicators (监测评估) of a disclosure report.

Each evaluation indicator has a dimension (feasibility, compliance, benefit, security), a name, a value and the
formula it was computed by; docs/disclosure.md documents every one. No indicator is folded into a score.
"""

from __future__ import annotations

from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from disclosure.facts import Facts, GrantFact
from metering.events import EventKind, UsageEvent
from metering.money import ZERO, fen_text

if TYPE_CHECKING:
    from collections.abc import Iterable

PRODUCT_KINDS = frozenset({EventKind.CALL, EventKind.SUBSCRIPTION, EventKind.PACKAGE})
REFUSED = frozenset({"deny", "refused"})
AUDIT_REASONS = frozenset({"difference_audit", "audit_budget_exceeded"})
# Audit actions whose records carry a release's suppression: job runs, and product calls (which run a job).
RELEASE_ACTIONS = frozenset({"run:create", "product:invoke"})
CALL_ACTIONS = frozenset({"product:invoke"})

# name -> (dimension, formula); the order is the order of the report.
INDICATORS: dict[str, tuple[str, str]] = {
    "authorized_datasets": ("feasibility", "count(datasets authorized by grants in force during the period)"),
    "used_datasets": ("feasibility", "count(authorized datasets read by at least one run)"),
    "scope_use": ("feasibility", "used_datasets / authorized_datasets"),
    "run_success_rate": ("feasibility", "runs_succeeded / runs"),
    "refusals": ("compliance", "count(audit records with decision deny or refused)"),
    "audit_check_findings": ("compliance", "sum(cells suppressed by reasons difference_audit, audit_budget_exceeded)"),
    "suspensions": ("compliance", "count(grant changes to suspended in the period)"),
    "revocations": ("compliance", "count(grant changes to revoked in the period)"),
    "products": ("benefit", "count(distinct products or price-list entries with usage)"),
    "customers": ("benefit", "count(distinct payers of product usage)"),
    "calls": ("benefit", "count(call events)"),
    "free_public_interest_use": ("benefit", "count(run and call events with purpose class public_interest)"),
    "analysis_rejections": ("security", "count(job submissions refused by analysis), by finding code"),
    "cells_suppressed_k": ("security", "sum(cells suppressed for reason k)"),
    "cells_suppressed_dominance": ("security", "sum(cells suppressed for reason dominance)"),
    "cells_suppressed_audit": ("security", "sum(cells suppressed by the release audit)"),
}


def covered(facts: Facts, grant: GrantFact) -> list[str]:
    """Datasets a grant authorizes: all certified (whole), those in its domains, or those it names."""
    if grant.scope == "whole":
        return sorted(d.id for d in facts.datasets)
    if grant.scope == "domain":
        return sorted(d.id for d in facts.datasets if d.domain in grant.domains)
    return sorted(grant.datasets)


def authorized_datasets(facts: Facts, operator: str) -> list[str]:
    """Datasets the operator's grants in force during the period authorize."""
    out: set[str] = set()
    for g in facts.grants:
        if g.operator_org_id == operator and g.created_at <= facts.cut_off and g.valid_until > facts.period_start \
                and g.status != "revoked":
            out.update(covered(facts, g))
    return sorted(out)


def scenario_datasets(grant: GrantFact) -> list[str]:
    """The datasets a scenario grant names."""
    return sorted(grant.datasets)


def ratio(numerator: int, denominator: int) -> str | None:
    """A ratio to four decimal places, or None when the denominator is zero."""
    if denominator == 0:
        return None
    return str((Decimal(numerator) / Decimal(denominator)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))


def _rows(event: UsageEvent) -> int:
    return sum(d.rows for d in event.datasets)


def _product_figures(events: Iterable[UsageEvent]) -> tuple[int, int, int]:
    products, customers, calls = set(), set(), 0
    for e in events:
        if e.kind in PRODUCT_KINDS:
            products.add(e.product_id or e.entry_id)
            customers.add(e.payer_org_id)
            calls += e.kind == EventKind.CALL
    return len(products), len(customers), calls


def _scenario_revenue(facts: Facts, grant: GrantFact, events: list[UsageEvent]) -> Decimal:
    """Final product-bill lines of the period whose price-list entry (or product) served only this grant."""
    grants_of: dict[str, set[str | None]] = {}
    for e in events:
        if e.kind in PRODUCT_KINDS:
            for key in (e.entry_id, e.product_id):
                if key:
                    grants_of.setdefault(key, set()).add(e.grant_id)
    months = set(facts.period.months)
    total = ZERO
    for line in facts.bill_lines:
        if line.relation != "product" or line.period not in months or line.issuer_org_id != grant.operator_org_id:
            continue
        key = line.product_id or line.entry_id
        if key and grants_of.get(key) == {grant.id}:
            total += line.amount
    return total


def scenarios(facts: Facts, events: list[UsageEvent]) -> list[dict[str, Any]]:
    """Each scenario grant's three answers and the period's indicators."""
    out = []
    for g in sorted(facts.grants, key=lambda g: g.id):
        if g.scope != "scenario" or g.created_at > facts.cut_off or g.valid_until <= facts.period_start:
            continue
        mine = [e for e in events if e.grant_id == g.id]
        runs = [e for e in mine if e.kind == EventKind.RUN]
        supplied = {d.dataset_id for e in runs for d in e.datasets}
        products, customers, calls = _product_figures(mine)
        free = [e for e in mine if e.free]
        sc = g.scenario or {}
        out.append({
            "grant_id": g.id, "operator_org_id": g.operator_org_id, "name": sc.get("name"),
            "data_used": sc.get("data_used"), "supply": sc.get("supply"), "problem": sc.get("problem"),
            "datasets": sorted(g.datasets),
            "indicators": {
                "datasets_supplied": len(supplied), "rows": sum(_rows(e) for e in runs), "runs": len(runs),
                "products": products, "customers": customers, "calls": calls,
                "revenue": fen_text(_scenario_revenue(facts, g, mine)),
                "free_public_interest_runs": sum(e.kind == EventKind.RUN for e in free),
                "free_public_interest_calls": sum(e.kind == EventKind.CALL for e in free),
            },
        })
    return out


def _indicators(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"dimension": INDICATORS[name][0], "name": name, "value": values[name], "formula": INDICATORS[name][1]}
            for name in INDICATORS]


def refusals(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Audit records of refused or denied requests."""
    return [r for r in records if r["decision"] in REFUSED]


def analysis_rejections(records: Iterable[dict[str, Any]]) -> Counter[str]:
    """Finding codes of queries refused by analysis (job:create refused with `query_refused`)."""
    out: Counter[str] = Counter()
    for r in records:
        if r["action"] == "job:create" and r["code"] == "query_refused":
            for code in set(r["detail"].get("findings") or []):
                out[str(code)] += 1
    return out


def suppressed_cells(records: Iterable[dict[str, Any]]) -> Counter[str]:
    """Cells suppressed per reason, from the audit records of runs."""
    out: Counter[str] = Counter()
    for r in records:
        if r["action"] in RELEASE_ACTIONS:
            for reason, cells in (r["detail"].get("suppression") or {}).items():
                out[str(reason)] += int(cells)
    return out


def _subject_values(facts: Facts, events: list[UsageEvent], records: list[dict[str, Any]], authorized: list[str],
                    grant_ids: set[str]) -> dict[str, Any]:
    runs = [e for e in events if e.kind == EventKind.RUN]
    used = {d.dataset_id for e in runs for d in e.datasets if d.rows > 0 or e.outcome == "succeeded"}
    used &= set(authorized)
    products, customers, calls = _product_figures(events)
    cells, rejections = suppressed_cells(records), analysis_rejections(records)
    changes = [c for c in facts.grant_changes
               if c.grant_id in grant_ids and facts.period_start <= c.at <= facts.cut_off]
    return {
        "authorized_datasets": len(authorized), "used_datasets": len(used),
        "scope_use": ratio(len(used), len(authorized)),
        "run_success_rate": ratio(sum(e.outcome == "succeeded" for e in runs), len(runs)),
        "refusals": len(refusals(records)),
        "audit_check_findings": sum(n for k, n in cells.items() if k in AUDIT_REASONS),
        "suspensions": sum(c.to_status == "suspended" for c in changes),
        "revocations": sum(c.to_status == "revoked" for c in changes),
        "products": products, "customers": customers, "calls": calls,
        "free_public_interest_use": sum(e.free and e.kind in (EventKind.RUN, EventKind.CALL) for e in events),
        "analysis_rejections": {k: n for k, n in sorted(rejections.items())},
        "cells_suppressed_k": cells.get("k", 0), "cells_suppressed_dominance": cells.get("dominance", 0),
        "cells_suppressed_audit": sum(n for k, n in cells.items() if k in AUDIT_REASONS),
    }


def evaluation(facts: Facts, events: list[UsageEvent], operators: list[str]) -> list[dict[str, Any]]:
    """Named indicators on the four dimensions for each operator, then each scenario grant."""
    out = []
    for op in operators:
        records = [r for r in facts.audit if op in (r["actor"]["org"], r["resource"]["org"])]
        grant_ids = {g.id for g in facts.grants if g.operator_org_id == op}
        values = _subject_values(facts, [e for e in events if e.operator_org_id == op], records,
                                 authorized_datasets(facts, op), grant_ids)
        out.append({"subject": "operator", "id": op, "indicators": _indicators(values)})
    for g in sorted(facts.grants, key=lambda g: g.id):
        if g.scope != "scenario" or g.created_at > facts.cut_off or g.valid_until <= facts.period_start:
            continue
        records = [r for r in facts.audit if r.get("grant") == g.id]
        values = _subject_values(facts, [e for e in events if e.grant_id == g.id], records,
                                 scenario_datasets(g), {g.id})
        out.append({"subject": "scenario", "id": g.id, "indicators": _indicators(values)})
    return out
