"""Transpiling the checked query to Spark SQL: DuckDB-only constructs of the rewrite become exact Spark forms."""

from __future__ import annotations

import pytest
import sqlglot
from casebook import policies_for

from policy.analysis import Verdict, analyse
from policy.sql_engines import DUCKDB, SPARK, UnsupportedOnEngine, check_engine, engine_sql, to_spark


def test_duckdb_runs_the_regenerated_sql_unchanged() -> None:
    assert engine_sql("SELECT 1 AS x", DUCKDB) == "SELECT 1 AS x"


def test_top_n_max_becomes_the_n_largest_collected_values() -> None:
    text = to_spark("SELECT max(abs(v), 2) AS t FROM p")
    assert text == "SELECT SLICE(SORT_ARRAY(COLLECT_LIST(ABS(v)), FALSE), 1, 2) AS t FROM p"


def test_entity_lists_keep_a_null_entity_as_index_zero_like_duckdb() -> None:
    assert to_spark("SELECT list(e) FILTER (WHERE f) AS s FROM p") == \
        "SELECT COLLECT_LIST(COALESCE(e, 0)) FILTER(WHERE f) AS s FROM p"


def test_materialized_ctes_lose_the_duckdb_hint() -> None:
    assert "MATERIALIZED" not in to_spark("WITH a AS MATERIALIZED (SELECT 1 AS x) SELECT x FROM a")


def test_a_scalar_subquery_beside_aggregates_is_pinned_per_group_and_one_inside_an_aggregate_is_left() -> None:
    text = to_spark("SELECT k, count(*) AS n, (SELECT avg(w.t) FROM w WHERE w.k = r.k) AS a, "
                    "sum((SELECT 1)) AS s FROM r GROUP BY k")
    assert "ANY_VALUE((SELECT AVG(w.t)" in text and "SUM((SELECT 1))" in text
    assert "ANY_VALUE" not in to_spark("SELECT (SELECT max(t) FROM w) AS m FROM r")  # not an aggregate query


def test_parameters_become_spark_markers_bound_as_values() -> None:
    assert to_spark("SELECT a FROM t WHERE b = CAST($p AS VARCHAR)") == \
        "SELECT a FROM t WHERE b = CAST(:p AS STRING)"


@pytest.mark.parametrize("sql", ["SELECT 1; SELECT 2", "SELEC 1", "SELECT (1"])
def test_anything_but_exactly_one_parsable_query_is_unsupported(sql: str) -> None:
    with pytest.raises(UnsupportedOnEngine):
        to_spark(sql)


def test_an_unknown_engine_is_refused_with_a_clear_code() -> None:
    with pytest.raises(UnsupportedOnEngine) as err:
        check_engine("oracle")
    assert err.value.code == "unknown_engine"
    result = analyse("SELECT district, avg(temperature) AS t FROM weather GROUP BY district",
                     policies_for("city"), engine="oracle")
    assert result.verdict == Verdict.REFUSED and result.codes == ("unsupported_on_engine",)
    assert result.sql is None and result.engine_sql == {}


def test_the_spark_sql_of_an_accepted_query_is_frozen_with_its_analysis() -> None:
    result = analyse("SELECT district, avg(temperature) AS t FROM weather GROUP BY district", policies_for("city"),
                     engine=SPARK)
    assert result.accepted
    frozen = result.to_dict()
    assert frozen["engine_sql"] == {SPARK: result.engine_sql[SPARK]}
    assert type(result).from_dict(frozen).engine_sql == result.engine_sql
    assert len(sqlglot.parse(result.engine_sql[SPARK], dialect="spark")) == 1


def test_duckdbs_multi_column_grouping_is_the_same_bitmask_of_one_column_groupings() -> None:
    assert to_spark("SELECT grouping(a, b) AS g, grouping(a) AS h FROM t GROUP BY ROLLUP (a, b)") == \
        "SELECT (GROUPING(a) * 2 + GROUPING(b) * 1) AS g, GROUPING(a) AS h FROM t GROUP BY ROLLUP (a, b)"
