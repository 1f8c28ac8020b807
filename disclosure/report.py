"""The disclosure report (信息披露): a pure function from `Facts` to a language-neutral JSON document.

Every figure is computed here from the usage events and the audit records the facts carry, so anyone holding the
audit log and those events can recompute it (docs/disclosure.md names each source). Lists are sorted and no
wall-clock time enters the document: the same facts give byte-identical canonical JSON.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from disclosure.facts import Facts, GrantFact, OrgFact
from disclosure.indicators import CALL_ACTIONS, RELEASE_ACTIONS, authorized_datasets, evaluation, scenarios
from disclosure.signing import canonical_json
from metering.canonical import utc_text
from metering.events import EventKind, UsageEvent
from metering.money import ZERO, fen_text, text
from metering.revenue import positions

REPORT_TYPE = "sluice.disclosure/v1"
PRODUCT_KINDS = frozenset({EventKind.CALL, EventKind.SUBSCRIPTION, EventKind.PACKAGE})
REFUSED = frozenset({"deny", "refused"})


def counted(events: Iterable[UsageEvent]) -> list[UsageEvent]:
    """The events a report counts: reversals and the events they reverse cancel each other out."""
    events = list(events)
    reversed_ids = {e.reverses for e in events if e.reverses}
    return [e for e in events if e.kind != EventKind.REVERSAL and e.id not in reversed_ids]


def ids_digest(ids: Iterable[str]) -> str:
    """SHA-256 of the sorted ids, one per line (each followed by a newline)."""
    return hashlib.sha256("".join(f"{i}\n" for i in sorted(ids)).encode("utf-8")).hexdigest()


def rows_of(event: UsageEvent) -> int:
    """Rows an access read, summed over its datasets."""
    return sum(d.rows for d in event.datasets)


def grant_in_force(grant: GrantFact, at: datetime) -> bool:
    """Active, and `at` inside its validity."""
    return grant.status == "active" and grant.valid_from <= at < grant.valid_until


def status_at(facts: Facts, grant: GrantFact, at: datetime) -> str:
    """A grant's status at `at`: the state its last change at or before `at` led to (the stored one if none)."""
    status = None
    for c in sorted(facts.grant_changes, key=lambda c: c.at):
        if c.grant_id == grant.id and c.at <= at:
            status = c.to_status
    return status or grant.status


def build_report(facts: Facts) -> dict[str, Any]:
    """The report document for the facts' period (see docs/disclosure.md for every field)."""
    names = {o.id: o.name for o in facts.orgs}
    events = counted(facts.events)
    operators = sorted({o.id for o in facts.orgs if o.kind == "operator"} | {g.operator_org_id for g in facts.grants})
    report: dict[str, Any] = {
        "type": REPORT_TYPE,
        "period": str(facts.period),
        "period_kind": facts.period.kind,
        "from": utc_text(facts.period_start),
        "until": utc_text(facts.period_end),
        "time_zone": facts.time_zone,
        "status": "draft" if facts.draft else "final",
        "cut_off": _cut_off(facts),
        "agency": _agency(facts, names),
        "operators": [_operator(facts, names.get(op, op), op, events) for op in operators],
        "scenarios": scenarios(facts, events),
        "evaluation": evaluation(facts, events, operators),
        "attribution": _attribution(facts, names),
        "security": _security(facts),
        "adjustments": _adjustments(facts),
    }
    canonical_json(report)  # refuses anything that is not plain JSON
    return report


def _cut_off(facts: Facts) -> dict[str, Any]:
    cp = facts.checkpoint
    return {
        "time": utc_text(facts.cut_off),
        "checkpoint": {"origin": cp.origin, "tree_size": cp.tree_size, "root_hash": cp.root_hash,
                       "timestamp": utc_text(cp.timestamp), "kid": cp.kid, "note": cp.note},
        "audit_records": len(facts.audit),
        "audit_records_sha256": ids_digest(str(r["seq"]) for r in facts.audit),
        "usage_events": len(facts.events),
        "usage_events_sha256": ids_digest(e.id for e in facts.events),
    }


def _agency(facts: Facts, names: dict[str, str]) -> dict[str, Any]:
    start, end = facts.period_start, facts.period_end
    changes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in sorted(facts.grant_changes, key=lambda c: (c.at, c.grant_id, c.action)):
        if start <= c.at <= facts.cut_off:
            changes[c.grant_id].append({"at": utc_text(c.at), "action": c.action, "from": c.from_status,
                                        "to": c.to_status, "reason": c.reason})
    at = min(facts.cut_off, end - _EPSILON)
    grants = []
    for g in sorted(facts.grants, key=lambda g: g.id):
        if g.created_at > facts.cut_off or g.valid_until <= start:
            continue  # granted after the cut-off, or expired before the period began
        grants.append({
            "id": g.id, "operator_org_id": g.operator_org_id, "operator": names.get(g.operator_org_id),
            "scope": g.scope, "domains": sorted(g.domains), "datasets": sorted(g.datasets),
            "scenario": (g.scenario or {}).get("name"), "purpose_class": g.purpose_class,
            "valid_from": utc_text(g.valid_from), "valid_until": utc_text(g.valid_until),
            "status": status_at(facts, g, at),
            "issued_in_period": start <= g.created_at < end,
            "changed_in_period": any(c["action"] != "create" for c in changes.get(g.id, [])),
            "in_force": grant_in_force(replace(g, status=status_at(facts, g, at)), at),
            "changes": [c for c in changes.get(g.id, []) if c["action"] != "create"],
        })
    caps = [{"version": c.version, "effective_from": utc_text(c.effective_from), "vat_included": c.vat_included,
             "caps": sorted(c.caps, key=lambda x: (x.get("basis", ""), x.get("category", ""), x.get("unit", "")))}
            for c in sorted(facts.price_caps, key=lambda c: c.version)]
    years = range(facts.period.year, facts.period.year + 1)
    maxima = [{"operator_org_id": r.operator_org_id, "operator": names.get(r.operator_org_id), "year": r.year,
               "amount": fen_text(r.amount), "vat_included": r.vat_included}
              for r in sorted(facts.revenue_caps, key=lambda r: (r.operator_org_id, r.year)) if r.year in years]
    return {"grants": grants,
            "summary": {"issued": sum(g["issued_in_period"] for g in grants),
                        "changed": sum(g["changed_in_period"] for g in grants),
                        "in_force": sum(g["in_force"] for g in grants)},
            "price_caps": caps, "max_allowed_revenue": maxima}


_EPSILON = datetime.resolution


def _operator(facts: Facts, name: str, op: str, events: list[UsageEvent]) -> dict[str, Any]:
    mine = [e for e in events if e.operator_org_id == op]
    runs = [e for e in mine if e.kind == EventKind.RUN]
    calls = [e for e in mine if e.kind in PRODUCT_KINDS]
    by_dataset: dict[str, dict[str, int]] = defaultdict(lambda: {"runs": 0, "rows": 0})
    for e in runs:
        for d in e.datasets:
            by_dataset[d.dataset_id]["runs"] += 1
            by_dataset[d.dataset_id]["rows"] += d.rows
    by_product: dict[str, dict[str, Any]] = {}
    for e in calls:
        key = e.product_id or e.entry_id or "-"
        p = by_product.setdefault(key, {"product_id": e.product_id, "entry_id": e.entry_id, "calls": 0,
                                        "rows": 0, "customers": set()})
        p["calls"] += 1 if e.kind == EventKind.CALL else 0
        p["rows"] += rows_of(e)
        p["customers"].add(e.payer_org_id)
    datasets = {d.id: d for d in facts.datasets}
    resources = []
    for ds in authorized_datasets(facts, op):
        fact = datasets.get(ds)
        resources.append({"dataset_id": ds, "title": fact.title if fact else None,
                          "grade": fact.grade if fact else None, "version": fact.version if fact else None,
                          "certificate_code": fact.certificate_code if fact else None,
                          "certificate_revoked": fact.certificate_revoked if fact else None})
    catalogue = [{"id": c.id, "name": c.name, "category": c.category, "basis": c.basis, "unit": c.unit,
                  "unit_price": None if c.unit_price is None else text(c.unit_price),
                  "vat_included": c.vat_included, "product_id": c.product_id, "product_name": c.product_name}
                 for c in sorted(facts.catalogue, key=lambda c: c.id) if c.operator_org_id == op]
    free = [e for e in mine if e.free]
    return {
        "org_id": op, "name": name,
        "data_resources": resources,
        "catalogue": catalogue,
        "usage": {
            "runs": len(runs), "runs_succeeded": sum(e.outcome == "succeeded" for e in runs),
            "calls": sum(e.kind == EventKind.CALL for e in calls), "rows": sum(rows_of(e) for e in mine),
            "by_dataset": [{"dataset_id": k, **v} for k, v in sorted(by_dataset.items())],
            "by_product": [{"product_id": v["product_id"], "entry_id": v["entry_id"], "calls": v["calls"],
                            "rows": v["rows"], "customers": len(v["customers"])}
                           for _, v in sorted(by_product.items())],
        },
        "revenue": _revenue(facts, op),
        "free_public_interest": {"runs": sum(e.kind == EventKind.RUN for e in free),
                                 "calls": sum(e.kind == EventKind.CALL for e in free),
                                 "rows": sum(rows_of(e) for e in free)},
    }


def _revenue(facts: Facts, op: str) -> dict[str, Any]:
    months = set(facts.period.months)
    in_period = sum((line.amount for line in facts.bill_lines
                     if line.issuer_org_id == op and line.relation == "product" and line.period in months), ZERO)
    caps = {r.year: r.amount for r in facts.revenue_caps if r.operator_org_id == op}
    year = facts.period.year
    pos = positions(op, facts.year_revenue.get(op, {}), caps, year)[-1]
    return {"period": fen_text(in_period), "year_to_date": fen_text(pos.revenue),
            "max_allowed": None if pos.max_allowed is None else fen_text(pos.max_allowed),
            "carried_excess": fen_text(pos.carried_excess),
            "effective_max": None if pos.effective_max is None else fen_text(pos.effective_max),
            "excess": fen_text(pos.excess), "over_maximum": pos.excess > 0}


def _attribution(facts: Facts, names: dict[str, str]) -> dict[str, Any]:
    months = set(facts.period.months)
    providers: dict[str, dict[str, Decimal]] = defaultdict(lambda: {"platform": ZERO, "product": ZERO})
    datasets: dict[str, dict[str, Any]] = {}
    for a in facts.attributions:
        if a.period not in months:
            continue
        p = a.provider_org_id or "unattributed"
        d = a.dataset_id or "unattributed"
        providers[p][a.relation] += a.amount
        row = datasets.setdefault(d, {"provider_org_id": a.provider_org_id, "platform": ZERO, "product": ZERO})
        row[a.relation] += a.amount
    return {
        "basis": "final bills",
        "providers": [{"provider_org_id": None if k == "unattributed" else k, "name": names.get(k),
                       "platform": fen_text(v["platform"]), "product": fen_text(v["product"]),
                       "total": fen_text(v["platform"] + v["product"])} for k, v in sorted(providers.items())],
        "datasets": [{"dataset_id": None if k == "unattributed" else k, "provider_org_id": v["provider_org_id"],
                      "platform": fen_text(v["platform"]), "product": fen_text(v["product"]),
                      "total": fen_text(v["platform"] + v["product"])} for k, v in sorted(datasets.items())],
    }


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


def _security(facts: Facts) -> dict[str, Any]:
    records = list(facts.audit)
    refused = refusals(records)
    by_code = Counter(str(r["code"] or "-") for r in refused)
    cells = suppressed_cells(records)
    changes = [c for c in facts.grant_changes if facts.period_start <= c.at <= facts.cut_off]
    v = facts.verification
    return {
        "analysis_rejections": [{"code": k, "count": n} for k, n in sorted(analysis_rejections(records).items())],
        "refused_runs": sum(r["action"] == "run:create" for r in refused),
        "refused_calls": sum(r["action"] in CALL_ACTIONS or r["action"].endswith(":call") for r in refused),
        "refusals": len(refused),
        "refusals_by_code": [{"code": k, "count": n} for k, n in sorted(by_code.items())],
        "suppressed_cells": [{"reason": k, "cells": n} for k, n in sorted(cells.items())],
        "grants_suspended": sorted({c.grant_id for c in changes if c.to_status == "suspended"}),
        "grants_revoked": sorted({c.grant_id for c in changes if c.to_status == "revoked"}),
        "audit_log_verification": {"verified": v.verified, "records_checked": v.records_checked,
                                   "root_matches": v.root_matches, "signature_valid": v.signature_valid,
                                   "sequence_gapless": v.sequence_gapless},
    }


def _adjustments(facts: Facts) -> dict[str, Any]:
    """Late events: accesses of earlier periods that arrived after those periods closed, counted here."""
    late = counted(facts.late_events)
    by_op: dict[str, dict[str, int]] = defaultdict(lambda: {"runs": 0, "calls": 0, "rows": 0})
    for e in late:
        row = by_op[e.operator_org_id]
        row["runs"] += e.kind == EventKind.RUN
        row["calls"] += e.kind == EventKind.CALL
        row["rows"] += rows_of(e)
    return {"usage_events": len(facts.late_events), "usage_events_sha256": ids_digest(e.id for e in facts.late_events),
            "by_operator": [{"org_id": k, **v} for k, v in sorted(by_op.items())]}


def org_lookup(orgs: Iterable[OrgFact]) -> dict[str, str]:
    """Organization names by id."""
    return {o.id: o.name for o in orgs}
