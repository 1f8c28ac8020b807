"""The release audit of a run that OFFSET / LIMIT cut (policy/release_stages.py): the cells of rows the limit drops
are neither audited nor recorded; the values that decide the selection are, for every group."""

from __future__ import annotations

from typing import Any

from casebook import CITY_K, policies_for

from policy.analysis import analyse
from policy.output import apply_output_control, finish
from policy.release_audit import AuditCell, AuditPart, AuditResult, PopulationAudit, audit
from policy.release_stages import staged_audit


def _decide(sql: str, con: Any) -> tuple[AuditResult, Any, Any]:
    result = analyse(sql, policies_for("city"))
    assert result.release is not None, result.findings
    controlled = apply_output_control(con.sql(result.sql).to_arrow_table(), k=CITY_K, max_rows=None,
                                      plan=result.release)
    cells = [AuditCell((c.row, c.column), tuple(AuditPart(p.population, p.bitmap(), p.measures) for p in c.parts))
             for c in controlled.cells]
    decision = staged_audit({p: PopulationAudit(p, CITY_K) for p in result.release.populations}, controlled.table,
                            controlled.marks, cells, result.release)
    return decision, controlled, result.release


def _kept_rows(controlled: Any, plan: Any, decision: AuditResult) -> list[str]:
    released = finish(controlled.table, controlled.marks, dict(decision.suppressed), plan)
    return released.column(0).to_pylist()


def test_the_cells_of_rows_a_limit_drops_are_not_recorded_but_every_order_value_is(
        connections: dict[str, Any]) -> None:
    sql = ("SELECT c.clinic, count(*) AS visits, sum(c.cost) AS cost FROM clinic_visits AS c GROUP BY c.clinic "
           "ORDER BY visits DESC LIMIT 2")
    decision, controlled, plan = _decide(sql, connections["city"])
    kept = _kept_rows(controlled, plan, decision)
    clinics = controlled.table.column(0).to_pylist()
    recorded = {(clinics[row], column) for row, column in (a.key for a in decision.accepted)}
    assert len(kept) == 2 and controlled.table.num_rows > 2
    assert {clinic for clinic, column in recorded if column == 1} == set(clinics)  # the order value: every group
    assert {clinic for clinic, column in recorded if column == 2} == set(kept)  # the cost: the kept rows only
    everything = audit({p: PopulationAudit(p, CITY_K) for p in plan.populations},
                       [AuditCell((c.row, c.column), tuple(AuditPart(p.population, p.bitmap(), p.measures)
                                                          for p in c.parts)) for c in controlled.cells])
    assert len(decision.accepted) < len(everything.accepted)


def test_rows_tied_on_the_order_across_the_edge_of_the_limit_have_every_cell_audited(
        connections: dict[str, Any]) -> None:
    # every group has the same order value: the tie-break by the output columns picks the rows, so it reads (and
    # the audit records) the cells of every tied row
    sql = ("SELECT c.clinic, sum(c.cost) AS cost FROM clinic_visits AS c GROUP BY c.clinic "
           "ORDER BY count(*) > 0 LIMIT 2")
    decision, controlled, plan = _decide(sql, connections["city"])
    rows = {row for row, column in (a.key for a in decision.accepted) if column == 1}
    assert rows == set(range(controlled.table.num_rows)) and len(_kept_rows(controlled, plan, decision)) == 2


def test_without_limit_every_cell_is_audited_in_one_stage(connections: dict[str, Any]) -> None:
    sql = "SELECT c.clinic, sum(c.cost) AS cost FROM clinic_visits AS c GROUP BY c.clinic ORDER BY cost DESC"
    decision, controlled, _ = _decide(sql, connections["city"])
    assert len(decision.accepted) == len(controlled.cells)
