"""Data-driven fixtures: every case's verdict and finding codes; every accepted case run for real in DuckDB."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from casebook import Case, k_for, load_cases, policies_for

from policy.analysis import Verdict, analyse
from policy.output import apply_output_control, entity_count_columns

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
    assert set(result.codes) == case.codes, details
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


@pytest.mark.slow
@pytest.mark.parametrize("case", ACCEPTED, ids=_ids(ACCEPTED))
def test_accepted_fixture_runs_under_output_control(case: Case, connections: dict[str, Any]) -> None:
    con = connections[case.schema]
    result = analyse(case.sql, policies_for(case.schema), parameters=case.parameter_types)
    assert result.sql is not None, result.findings
    governed = _run(con, result.sql, case)
    original = _run(con, case.sql, case)
    helpers = entity_count_columns(governed.schema)

    # The rewrite only adds helper columns: without them, the governed result is the original result.
    assert governed.num_columns == original.num_columns + len(helpers)
    assert _rows(governed.drop_columns(helpers)) == _rows(original)
    assert bool(helpers) == bool(result.entity_tables)

    k = k_for(case.schema)
    controlled = apply_output_control(governed, k=k, max_rows=None)
    assert controlled.table.num_rows >= case.min_rows
    if case.min_rows == 0:
        assert controlled.table.num_rows == 0, "a case that expects no rows must lose them all"
    # Suppression matches an independent count written by hand for each case over entity data.
    if result.entity_tables:
        assert case.check_sql, "accepted fixtures over entity data need a check_sql"
        expected = con.sql(case.check_sql, params=case.parameter_values or None).fetchall()[0][0]
        assert controlled.suppressed_rows == expected
        assert expected == governed.num_rows - controlled.table.num_rows
    else:
        assert controlled.suppressed_rows == 0
    # Every row that survives is a row of the original query.
    kept = set(_rows(controlled.table))
    assert kept <= set(_rows(original))
