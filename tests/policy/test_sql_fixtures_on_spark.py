"""The same fixtures on both engines: identical verdicts and codes under a Spark grant, and every accepted case run
on Spark (transpiled from the checked tree, over Parquet inputs in a new session) with the same result as DuckDB
within float tolerance and decimal scale, and the same output control, release audit and released table."""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from casebook import Case, k_for, load_cases, policies_for
from test_sql_fixtures import audit_cells, fresh_audit

from policy.analysis import Verdict, analyse
from policy.output import apply_output_control, finish
from policy.sql_engines import SPARK, to_spark
from policy.sql_release import POS
from sandbox.executor import InputTable, RunSpec

CASES = load_cases()
ACCEPTED = [c for c in CASES if c.verdict == "accepted"]
REL_TOL = 1e-9
SCALE_TOL = 1e-6  # Spark's avg over DECIMAL keeps 6 decimal places; DuckDB's is a DOUBLE


def _ids(cases: list[Case]) -> list[str]:
    return [c.title for c in cases]


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_a_spark_grant_gives_every_fixture_the_same_verdict_and_codes(case: Case) -> None:
    duck = analyse(case.sql, policies_for(case.schema), parameters=case.parameter_types)
    spark = analyse(case.sql, policies_for(case.schema), parameters=case.parameter_types, engine=SPARK)
    assert spark.verdict == duck.verdict == Verdict(case.verdict)
    assert Counter(spark.codes) == Counter(duck.codes) == Counter(case.codes)
    assert spark.sql == duck.sql and spark.release == duck.release
    if spark.accepted:
        assert duck.sql is not None and spark.engine_sql == {SPARK: to_spark(duck.sql)}
        assert "$" not in spark.engine_sql[SPARK]  # parameters are Spark markers, bound as values at run time
    else:
        assert spark.engine_sql == {}


def test_the_transpiled_sql_is_regenerated_from_the_checked_tree_never_the_submitted_text() -> None:
    case = next(c for c in ACCEPTED if c.params)
    spark = analyse(case.sql + "  -- a comment the operator wrote", policies_for(case.schema),
                    parameters=case.parameter_types, engine=SPARK)
    text = spark.engine_sql[SPARK]
    assert "comment the operator wrote" not in text and "__sluice" in text
    assert all(f":{name}" in text for name in case.params)


@pytest.fixture(scope="session")
def parquet_inputs(schema_tables: dict[str, dict[str, pa.Table]],
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[InputTable, ...]]:
    """Per schema, every dataset as a prepared Parquet input (what a Spark run reads)."""
    out = {}
    for schema, tables in schema_tables.items():
        folder = tmp_path_factory.mktemp(f"spark-{schema}")
        inputs = []
        for name, table in sorted(tables.items()):
            path = folder / f"{name}.parquet"
            pq.write_table(table, path)
            inputs.append(InputTable(name, path))
        out[schema] = tuple(inputs)
    return out


def _value(v: Any) -> Any:
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, list):  # an entity set: a NULL entity is index 0 (NO_ENTITY) to output control
        return sorted(0 if x is None else _value(x) for x in v)
    return v


def _close(a: Any, b: Any) -> bool:
    a, b = _value(a), _value(b)
    if (a is None and b == []) or (a == [] and b is None):
        return True  # an entity set with no member: DuckDB's list() is NULL, Spark's collect_list() is []
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=SCALE_TOL)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _key(row: tuple[Any, ...]) -> str:
    """A sort key that puts equal-within-tolerance rows together: floats rounded to the tolerance."""
    def rounded(v: Any) -> Any:
        v = _value(v)
        return round(v, 4) if isinstance(v, float) and not math.isnan(v) else v
    return repr(tuple(rounded(v) for v in row))


def assert_same_rows(duck: pa.Table, spark: pa.Table) -> None:
    """The same columns and the same rows as a multiset, within float tolerance and decimal scale.

    The hidden row position (__sluice_pos) only numbers the rows of one result (in its raw order, arbitrary among
    ties and without an ORDER BY); output control and the released table, compared after this, depend on it.
    """
    assert spark.column_names == duck.column_names
    if POS in duck.column_names:
        duck, spark = duck.drop_columns([POS]), spark.drop_columns([POS])
    assert spark.num_rows == duck.num_rows
    left = sorted((tuple(r.values()) for r in duck.to_pylist()), key=_key)
    right = sorted((tuple(r.values()) for r in spark.to_pylist()), key=_key)
    for a, b in zip(left, right, strict=True):
        assert all(_close(x, y) for x, y in zip(a, b, strict=True)), (a, b)


@pytest.mark.slow
@pytest.mark.xdist_group("spark")
@pytest.mark.parametrize("case", ACCEPTED, ids=_ids(ACCEPTED))
def test_an_accepted_fixture_gives_the_same_result_and_release_on_spark_as_on_duckdb(
        case: Case, connections: dict[str, duckdb.DuckDBPyConnection],
        parquet_inputs: dict[str, tuple[InputTable, ...]], spark_engine: Any, tmp_path: Path) -> None:
    analysis = analyse(case.sql, policies_for(case.schema), parameters=case.parameter_types, engine=SPARK)
    assert analysis.sql is not None, analysis.findings
    params = case.parameter_values
    duck = connections[case.schema].sql(analysis.sql, params=params or None).to_arrow_table()
    spec = RunSpec(instance_key=case.schema, inputs=parquet_inputs[case.schema], sql=analysis.engine_sql[SPARK],
                   params=params, k=k_for(case.schema), max_rows=None, result_path=tmp_path / "r.parquet",
                   release=analysis.release.to_dict() if analysis.release else None)
    spark = spark_engine.execute(spec)
    assert_same_rows(duck, spark)

    k = k_for(case.schema)
    controlled = {name: apply_output_control(t, k=k, max_rows=None, plan=analysis.release)
                  for name, t in (("duckdb", duck), ("spark", spark))}
    assert controlled["spark"].suppressed == controlled["duckdb"].suppressed
    released = {}
    for name, c in controlled.items():
        later = {}
        if analysis.release is not None:
            later = dict(fresh_audit(audit_cells(c), analysis.release.populations, k).suppressed)
        released[name] = finish(c.table, c.marks, later)
    assert_same_rows(released["duckdb"], released["spark"])
    assert released["spark"].num_rows >= case.min_rows


@pytest.mark.slow
@pytest.mark.xdist_group("spark")
def test_a_spark_run_writes_the_controlled_result_and_reports_its_cells_like_duckdb(
        connections: dict[str, duckdb.DuckDBPyConnection], parquet_inputs: dict[str, tuple[InputTable, ...]],
        spark_engine: Any, tmp_path: Path) -> None:
    case = next(c for c in ACCEPTED if c.schema == "city" and c.audit_suppressed)
    analysis = analyse(case.sql, policies_for("city"), parameters=case.parameter_types, engine=SPARK)
    assert analysis.release is not None
    spec = RunSpec(instance_key="city", inputs=parquet_inputs["city"], sql=analysis.engine_sql[SPARK],
                   params=case.parameter_values, k=10, max_rows=None, result_path=tmp_path / "r.parquet",
                   release=analysis.release.to_dict())
    outcome = spark_engine.run(spec)
    assert outcome.status == "succeeded", outcome.internal_detail
    assert outcome.pending is not None and outcome.result_path is None  # the API audits, then writes
    decision = fresh_audit(audit_cells(outcome.pending), analysis.release.populations, 10)
    assert len(decision.suppressed) == case.audit_suppressed
    assert [p for p, _, _ in outcome.phases] == ["execute", "output_control"]
