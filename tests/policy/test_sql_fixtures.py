"""Data-driven fixtures: every case's verdict and finding codes (a multiset); every accepted case run for real in
DuckDB, through output control and the release audit over a fresh ledger."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from casebook import Case, k_for, load_cases, policies_for

from policy.analysis import Verdict, analyse
from policy.output import Reason, apply_output_control, finish, released_columns, strip_helpers
from policy.release_audit import AuditCell, AuditPart, AuditResult, PopulationAudit, audit
from policy.release_stages import staged_audit
from policy.sql_release import ReleasePlan

CASES = load_cases()
ACCEPTED = [c for c in CASES if c.verdict == "accepted"]


def _ids(cases: list[Case]) -> list[str]:
    return [c.title for c in cases]


def test_fixture_titles_are_unique() -> None:
    titles = [c.title for c in CASES]
    assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_fixture_verdict_and_codes(case: Case) -> None:
    result = analyse(case.sql, policies_for(case.schema), parameters=case.parameter_types)
    details = [f"{f.code} @{f.line}:{f.column}: {f.message}" for f in result.findings]
    assert result.verdict == Verdict(case.verdict), details
    assert Counter(result.codes) == Counter(case.codes), details
    assert (result.sql is not None) == (result.verdict == Verdict.ACCEPTED)
    assert all(f.line is None or f.line >= 1 for f in result.findings)


def _normal(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.9g}"
    return value


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    rows = [tuple(_normal(v) for v in row.values()) for row in table.to_pylist()]
    return sorted(rows, key=repr)


def _run(con: duckdb.DuckDBPyConnection, sql: str, case: Case) -> pa.Table:
    params = case.parameter_values or None
    return con.sql(sql, params=params).to_arrow_table()


def fresh_audit(cells: list[AuditCell], populations: tuple[str, ...], k: int, controlled: Any = None,
                plan: ReleasePlan | None = None) -> AuditResult:
    """The release audit over a fresh ledger per population (in stages, as the API runs it, given output control's
    result and the plan: policy/release_stages.py)."""
    fresh = {p: PopulationAudit(p, k) for p in populations}
    if controlled is None:
        return audit(fresh, cells)
    return staged_audit(fresh, controlled.table, controlled.marks, cells, plan)


def audit_cells(controlled: Any) -> list[AuditCell]:
    """The cells output control hands to the release audit."""
    return [AuditCell((c.row, c.column), tuple(AuditPart(p.population, p.bitmap(), p.measures) for p in c.parts))
            for c in controlled.cells]


@pytest.mark.slow
@pytest.mark.parametrize("case", ACCEPTED, ids=_ids(ACCEPTED))
def test_accepted_fixture_runs_under_output_control(case: Case, connections: dict[str, Any]) -> None:
    con = connections[case.schema]
    result = analyse(case.sql, policies_for(case.schema), parameters=case.parameter_types)
    assert result.sql is not None, result.findings
    governed = _run(con, result.sql, case)
    original = _run(con, case.sql, case)
    assert bool(result.release) == bool(result.entity_tables)
    plain = strip_helpers(governed, result.release) if result.release else governed
    shell = result.release is not None and (result.release.shell is not None or result.release.setop is not None)
    if shell:
        # HAVING / LIMIT / OFFSET and set operations select rows after the audit: every group is evaluated (and
        # audited)
        assert result.release is not None
        plain = released_columns(plain, result.release)

    # The rewrite only adds helper columns: without them, the governed result is the original result.
    assert plain.num_columns == original.num_columns
    assert _rows(plain) == _rows(original)

    k = k_for(case.schema)
    controlled = apply_output_control(governed, k=k, max_rows=None, plan=result.release)
    if not result.entity_tables:
        assert controlled.suppressed_cells == 0 and controlled.table.num_rows == original.num_rows
        return
    assert case.check_sql, "accepted fixtures over entity data need a check_sql"
    assert result.release is not None
    decision = fresh_audit(audit_cells(controlled), result.release.populations, k, controlled, result.release)
    assert Counter(decision.suppressed.values()) == Counter({Reason.DIFFERENCE_AUDIT: case.audit_suppressed}
                                                             if case.audit_suppressed else {})
    released = finish(controlled.table, controlled.marks, dict(decision.suppressed), result.release)
    expected_cells = (con.sql(case.check_cells_sql, params=case.parameter_values or None).fetchall()[0][0]
                      if case.check_cells_sql else 0)
    expected_dropped = con.sql(case.check_sql, params=case.parameter_values or None).fetchall()[0][0]
    if shell:
        # Rows of the raw result that are not released, and cells suppressed for k in released rows, match
        # independent counts written by hand for each case.
        assert original.num_rows - released.num_rows == expected_dropped
        markers = [json.loads(m) for m in released.column("sluice_suppressed").to_pylist() if m]
        assert sum(1 for m in markers for reason in m.values() if reason == Reason.K) == expected_cells
    else:
        dropped = governed.num_rows - controlled.table.num_rows
        # Rows dropped for k match an independent count written by hand for each case.
        assert dropped == expected_dropped
        cells_k = controlled.suppressed.get(Reason.K, 0) - dropped * len(result.release.cells)
        assert cells_k == expected_cells
        assert controlled.suppressed.get(Reason.DOMINANCE, 0) == case.dominance_suppressed
    assert released.num_rows >= case.min_rows
    if case.min_rows == 0:
        assert released.num_rows == 0, "a case that expects no rows must lose them all"
    # Every released cell is the original query's value for its group (with LIMIT / OFFSET, of the original query
    # without them: the limit is filled in the order of released values, past rows dropped or ranked as NULL).
    every = _run(con, _unlimited(case.sql), case) if shell else original
    originals = {tuple(_normal(v) for v in row.values()) for row in every.to_pylist()}
    for row in released.drop_columns(["sluice_suppressed"]).to_pylist():
        values = tuple(_normal(v) for v in row.values())
        assert any(all(v is None or v == o for v, o in zip(values, full, strict=True)) for full in originals)


def _unlimited(sql: str) -> str:
    """`sql` without its top-level LIMIT and OFFSET."""
    query = sqlglot.parse_one(sql, dialect="duckdb")
    query.set("limit", None)
    query.set("offset", None)
    return query.sql(dialect="duckdb")


def _case(title: str) -> Case:
    return next(c for c in CASES if c.title == title)


@pytest.mark.slow
def test_the_audit_suppression_on_the_city_fixtures_protects_the_four_low_income_residents_of_the_small_district(
        connections: dict[str, Any]) -> None:
    case = _case("a FILTER complement that isolates four residents of the small district is suppressed by the audit")
    con = connections["city"]
    result = analyse(case.sql, policies_for("city"))
    assert result.release is not None and result.sql is not None
    controlled = apply_output_control(_run(con, result.sql, case), k=10, max_rows=None, plan=result.release)
    populations = {p: PopulationAudit(p, 10) for p in result.release.populations}
    decision = audit(populations, audit_cells(controlled))
    [(key, violation)] = decision.violations.items()
    row, column = key
    assert controlled.table.column("district")[row].as_py() == "湖滨区"
    assert controlled.table.schema.names[column] == "above_3k"
    ledger = populations["city_person"].ledgers["rows"]
    protected = violation.entities(ledger)
    expected = con.sql("SELECT list(__sluice_eidx) FROM residents WHERE district = '湖滨区' AND income_band = '<3k'"
                       ).fetchall()[0][0]
    assert sorted(protected) == sorted(expected) and len(expected) == 4
