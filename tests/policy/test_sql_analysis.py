"""The analyse() contract: serializable results, positions, limits, the rewrite, parameters, fail-closed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlglot

import policy.analysis as analysis_module
from policy import sql_lineage
from policy.analysis import Analysis, Verdict, analyse
from policy.constraints import TablePolicy
from policy.sql_findings import ALL_CODES, Finding
from policy.sql_release import helper_names
from sandbox.demo.city import city_table_policies

DOCS = Path(__file__).resolve().parents[2] / "docs" / "governed-queries.md"


@pytest.fixture(scope="module")
def city() -> dict[str, TablePolicy]:
    return city_table_policies()


JOIN_SQL = """SELECT r.district, count(DISTINCT c.person_id) AS patients, sum(c.cost) AS cost
FROM residents r JOIN clinic_visits c ON r.person_id = c.person_id
JOIN weather w ON w.district = r.district AND w.day = c.visit_date
WHERE w.rain_mm > 20 GROUP BY r.district"""


def test_accepted_analysis_round_trips_through_json(city: dict[str, TablePolicy]) -> None:
    result = analyse(JOIN_SQL, city)
    assert result.verdict == Verdict.ACCEPTED
    restored = Analysis.from_dict(json.loads(json.dumps(result.to_dict())))
    assert restored == result


def test_refused_analysis_round_trips_and_has_no_sql(city: dict[str, TablePolicy]) -> None:
    result = analyse("SELECT phone FROM residents", city)
    assert result.verdict == Verdict.REFUSED and result.sql is None
    assert Analysis.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_analysis_reports_what_the_query_reads(city: dict[str, TablePolicy]) -> None:
    result = analyse(JOIN_SQL, city)
    assert result.tables_read == ("clinic_visits", "residents", "weather")
    assert dict(result.columns_read) == {
        "clinic_visits": ("cost", "person_id", "visit_date"),
        "residents": ("district", "person_id"),
        "weather": ("day", "district", "rain_mm"),
    }
    assert result.joins_datasets and result.is_aggregate
    assert result.output_columns == ("district", "patients", "cost")
    assert result.entity_tables == ("clinic_visits", "residents")


def test_a_single_dataset_query_does_not_join_datasets(city: dict[str, TablePolicy]) -> None:
    result = analyse("SELECT route, sum(boardings) FROM bus_ridership GROUP BY 1", city)
    assert result.accepted and not result.joins_datasets and result.entity_tables == ()


def test_the_rewrite_adds_entity_sets_after_the_user_columns(city: dict[str, TablePolicy]) -> None:
    result = analyse("SELECT district, count(*) AS n FROM residents GROUP BY ALL", city)
    assert result.sql is not None and result.release is not None
    select = sqlglot.parse_one(result.sql, dialect="duckdb")
    names = [e.alias_or_name for e in select.expressions]
    assert names == ["district", "n", *helper_names(result.release)]
    assert result.release.populations == ("city_person",)
    # one pre-aggregated row per (group, person index), counted and listed per group
    assert 'GROUP BY "residents"."district", "residents"."__sluice_eidx"' in result.sql


def test_the_release_plan_names_cells_components_and_measures(city: dict[str, TablePolicy]) -> None:
    result = analyse("SELECT clinic, count(*) AS n, sum(cost * 2 + 1) AS s, avg(cost) AS a, "
                     "count(DISTINCT person_id) AS p, stddev(cost) AS d FROM clinic_visits GROUP BY 1", city)
    plan = result.release
    assert plan is not None
    assert [c.name for c in plan.cells] == ["n", "s", "a", "p", "d"]
    kinds = [(c.kind, c.measures) for c in plan.components]
    assert kinds == [("rows", ("rows",)), ("value", ("clinic_visits.cost", "rows")),
                     ("value", ("clinic_visits.cost", "rows")), ("entities", ()),
                     ("value", ("clinic_visits.cost", "clinic_visits.cost*clinic_visits.cost", "rows"))]
    assert [s.column for s in plan.stats] == ["clinic_visits.cost"] * 3
    assert Analysis.from_dict(json.loads(json.dumps(result.to_dict()))).release == plan


def test_dominance_is_computed_on_the_base_column_carried_through_a_cte(city: dict[str, TablePolicy]) -> None:
    sql = "WITH v AS (SELECT person_id, cost + 1 AS c FROM clinic_visits) SELECT sum(c) - count(*) AS x FROM v"
    result = analyse(sql, city)
    assert result.release is not None and result.sql is not None
    assert [s.column for s in result.release.stats] == ["clinic_visits.cost"]
    assert result.release.components[0].measures == ("clinic_visits.cost", "rows")
    assert re.search(r'"clinic_visits"\."cost" AS "__sluice_e\d+"', result.sql)


def test_the_entity_is_passed_through_every_level_of_nested_subqueries(city: dict[str, TablePolicy]) -> None:
    sql = """WITH a AS (SELECT person_id AS pid, cost FROM clinic_visits), b AS (SELECT pid, cost FROM a WHERE cost > 1)
             SELECT count(*) FROM (SELECT cost FROM b) t"""
    result = analyse(sql, city)
    assert result.sql is not None
    assert len(re.findall(r'AS "__sluice_e\d+"', result.sql)) == 3  # projected by a, b and t
    assert '"t"."__sluice_e2" AS "__sluice_entity"' in result.sql


def test_the_regenerated_sql_is_not_the_submitted_text(city: dict[str, TablePolicy]) -> None:
    result = analyse("select route /* note */, sum(boardings) from bus_ridership -- trailing\n group by 1", city)
    assert result.sql is not None
    assert "note" not in result.sql and "trailing" not in result.sql
    assert '"bus_ridership"."route"' in result.sql


def test_comments_cannot_smuggle_a_second_statement(city: dict[str, TablePolicy]) -> None:
    result = analyse("SELECT count(*) FROM weather -- */ ; DROP VIEW residents; /*\n", city)
    assert result.sql == 'SELECT COUNT(*) AS "_col_0" FROM "weather" AS "weather"'


def test_parameters_are_bound_to_their_declared_types(city: dict[str, TablePolicy]) -> None:
    result = analyse("SELECT count(*) FROM weather WHERE day >= $since AND district = $d", city,
                     parameters={"since": "DATE", "d": "VARCHAR"})
    assert result.accepted, result.findings
    assert result.parameters == ("d", "since")
    assert result.sql is not None
    assert re.search(r"CAST\(\$since AS DATE\)", result.sql)
    assert re.search(r"CAST\(\$d AS (TEXT|VARCHAR)\)", result.sql)


def test_findings_carry_one_based_line_and_column(city: dict[str, TablePolicy]) -> None:
    result = analyse("SELECT district,\n       phone\nFROM residents GROUP BY ALL", city)
    assert result.findings == (Finding(result.findings[0].code, result.findings[0].message, 2, 8),)
    syntax = analyse("SELECT district FROM\nweather WHERE", city)
    assert syntax.codes == ("syntax_error",) and syntax.findings[0].line == 2


def test_deeply_nested_sql_is_refused_not_crashed(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT " + "(" * 500 + "1" + ")" * 500
    assert analyse(sql, city).codes == ("query_too_deep",)


def test_a_long_expression_chain_is_refused_as_too_deep(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT count(*) FROM weather WHERE " + " OR ".join(f"rain_mm = {i}" for i in range(300))
    result = analyse(sql, city)
    assert result.verdict == Verdict.REFUSED and result.codes[0] == "query_too_deep"


def test_sql_longer_than_the_cap_is_refused(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT count(*) FROM weather WHERE district = '" + "x" * 200 + "'"
    assert analyse(sql, city, max_sql_length=100).codes == ("sql_too_long",)
    assert analyse(sql, city).accepted


def test_a_bug_in_the_analyser_fails_closed(city: dict[str, TablePolicy], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(analysis_module, "plan_threshold", broken)
    result = analyse("SELECT district, count(*) FROM residents GROUP BY 1", city)
    assert result.verdict == Verdict.REFUSED and result.codes == ("internal_analysis_error",)


def test_table_mapping_keys_do_not_matter_only_policy_names(city: dict[str, TablePolicy]) -> None:
    renamed = {f"dataset-{i}": policy for i, policy in enumerate(city.values())}
    assert analyse("SELECT district, count(*) FROM residents GROUP BY 1", renamed).accepted


def test_a_grant_without_a_dataset_does_not_see_it(city: dict[str, TablePolicy]) -> None:
    narrow = {"weather": city["weather"]}
    assert analyse("SELECT count(*) FROM weather", narrow).accepted
    assert analyse("SELECT district, count(*) FROM residents GROUP BY 1", narrow).codes == ("unknown_table",)


def test_every_finding_code_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [code for code in ALL_CODES if f"`{code}`" not in text]
    assert not missing



def test_a_long_product_is_analysed_in_linear_work(city: dict[str, TablePolicy], monkeypatch: pytest.MonkeyPatch
                                                   ) -> None:
    spent: list[int] = []
    real = sql_lineage.WorkBudget

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, limit: int) -> None:
            super().__init__(limit)
            spent.append(0)

        def spend(self, units: int = 1) -> None:
            super().spend(units)
            spent[-1] = self.spent

    monkeypatch.setattr(sql_lineage, "WorkBudget", Counting)
    for factors in (10, 22, 44):
        product = " * ".join(["(employees + 1)"] * factors)
        result = analyse(f"SELECT industry, sum({product}) AS s FROM enterprises GROUP BY 1", city)
        assert result.codes == ("complex_aggregate_over_entity_data",)
    # work grows linearly with the number of factors (it once grew about 4x per two factors)
    assert spent[2] < 3 * spent[1] < 9 * spent[0]


def test_analysis_past_its_work_budget_is_refused_as_too_complex(city: dict[str, TablePolicy],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_lineage, "DEFAULT_WORK_BUDGET", 5)
    result = analyse("SELECT industry, sum(employees + registered_capital) AS s FROM enterprises GROUP BY 1", city)
    assert result.codes == ("query_too_complex",)


ROW_LEVEL = ("residents.income_band has constraint group; a row-level (non-aggregate) query may only reference open "
             "columns")


@pytest.mark.parametrize(("sql", "column"), [
    ("SELECT district FROM residents WHERE income_band = '<3k'", 38),
    # an aggregation in a subquery is checked by role; the row-level use after it is still refused
    ("SELECT district FROM residents WHERE (SELECT count(DISTINCT income_band) FROM residents) > 0 "
     "AND income_band = '<3k'", 98),
])
def test_a_row_level_query_names_each_non_open_column_it_reads_and_its_constraint(
        city: dict[str, TablePolicy], sql: str, column: int) -> None:
    found = [f for f in analyse(sql, city).findings if f.code == "non_open_column_in_row_level_query"]
    assert [(f.line, f.column, f.message) for f in found] == [(1, column, ROW_LEVEL)]


ENTITY_USE = "only in equi-joins with join columns and in count(DISTINCT ...)"


@pytest.mark.parametrize(("sql", "findings"), [
    ("SELECT person_id, count(*) AS n FROM residents GROUP BY person_id",
     [("entity_column_in_output", 8, "is never output"),
      ("entity_column_in_group_key", 57, "is never a group key (every group would be one entity)")]),
    ("SELECT count(*) AS n FROM residents WHERE person_id = 'P000001'",
     [("entity_column_compared", 43,
       "is never compared with a literal or a parameter (that singles out one entity)")]),
    ("SELECT count(*) AS n FROM residents r JOIN clinic_visits c ON r.person_id > c.person_id",
     [("entity_column_compared", 65, "may only be compared with another join column in an equi-join")]),
])
def test_a_refused_use_of_the_entity_column_says_where_it_may_appear_instead(
        city: dict[str, TablePolicy], sql: str, findings: list[tuple[str, int, str]]) -> None:
    found = [(f.code, f.line, f.column, f.message) for f in analyse(sql, city).findings
             if f.code.startswith("entity_column") and f.message.startswith("residents.")]
    assert found == [(code, 1, column, f"residents.person_id is the entity column of residents and {why}; it may "
                      f"appear {ENTITY_USE}") for code, column, why in findings]
