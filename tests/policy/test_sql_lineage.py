"""Lineage edge cases: which base column each reference carries, and in which role it is used."""

from __future__ import annotations

import pytest

from policy.analysis import analyse, trace
from policy.constraints import TablePolicy
from policy.sql_lineage import Lineage
from policy.sql_model import Role
from sandbox.demo.city import city_table_policies


@pytest.fixture(scope="module")
def city() -> dict[str, TablePolicy]:
    return city_table_policies()


def _trace(sql: str, city: dict[str, TablePolicy]) -> Lineage:
    lineage = trace(sql, city)
    assert lineage is not None
    return lineage


def _roles(lineage: Lineage, table: str, column: str) -> set[Role]:
    return {u.role for u in lineage.uses if (u.table, u.column) == (table, column)}


def test_cte_rename_of_aggregate_column_is_refused_in_output(city: dict[str, TablePolicy]) -> None:
    sql = "WITH v AS (SELECT cost AS amount, person_id FROM clinic_visits) SELECT amount, count(*) FROM v GROUP BY ALL"
    assert _roles(_trace(sql, city), "clinic_visits", "cost") == {Role.PASSTHROUGH, Role.GROUP_OUTPUT}
    assert "column_not_allowed_in_output" in analyse(sql, city).codes


def test_cte_rename_of_aggregate_column_is_allowed_inside_sum(city: dict[str, TablePolicy]) -> None:
    sql = ("WITH v AS (SELECT cost AS amount, person_id, clinic FROM clinic_visits) "
           "SELECT clinic, sum(amount) FROM v GROUP BY 1")
    assert _roles(_trace(sql, city), "clinic_visits", "cost") == {Role.PASSTHROUGH, Role.AGGREGATE_ARG}
    assert analyse(sql, city).accepted


def test_two_level_rename_keeps_the_base_column(city: dict[str, TablePolicy]) -> None:
    sql = """WITH a AS (SELECT phone AS x, person_id FROM residents), b AS (SELECT x AS y, person_id FROM a)
             SELECT y, count(*) FROM b GROUP BY y"""
    lineage = _trace(sql, city)
    assert Role.GROUP_KEY in _roles(lineage, "residents", "phone")
    assert set(analyse(sql, city).codes) == {"column_not_allowed_in_output", "column_not_allowed_in_group_key"}


def test_subquery_in_where_is_traced_to_its_base_column(city: dict[str, TablePolicy]) -> None:
    sql = ("SELECT count(*) FROM weather WHERE rain_mm > (SELECT avg(temperature) FROM weather) "
           "AND district IN (SELECT stop FROM bus_ridership)")
    lineage = _trace(sql, city)
    assert _roles(lineage, "bus_ridership", "stop") == {Role.PASSTHROUGH, Role.EQUI_JOIN}
    assert _roles(lineage, "weather", "temperature") == {Role.AGGREGATE_ARG}


def test_set_operation_in_a_cte_merges_both_branches(city: dict[str, TablePolicy]) -> None:
    sql = """WITH u AS (SELECT district AS d FROM weather UNION ALL SELECT income_band FROM residents)
             SELECT d FROM u"""
    lineage = _trace(sql, city)
    assert Role.OUTPUT in _roles(lineage, "residents", "income_band")
    assert Role.OUTPUT in _roles(lineage, "weather", "district")
    assert "column_not_allowed_in_output" in analyse(sql, city).codes


def test_correlated_reference_resolves_to_the_outer_table(city: dict[str, TablePolicy]) -> None:
    sql = """SELECT r.district, count(*) FROM residents r
             WHERE EXISTS (SELECT 1 FROM weather w WHERE w.day > r.birth_date) GROUP BY 1"""
    assert _roles(_trace(sql, city), "residents", "birth_date") == {Role.PREDICATE}


def test_case_condition_inside_a_group_key_is_a_group_key_use(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT CASE WHEN income_band = '>20k' THEN 'high' ELSE 'other' END, count(*) FROM residents GROUP BY 1"
    assert _roles(_trace(sql, city), "residents", "income_band") == {Role.GROUP_KEY, Role.GROUP_OUTPUT}


def test_case_condition_inside_an_aggregate_is_a_condition_use(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT district, sum(CASE WHEN income_band = '>20k' THEN 1 ELSE 0 END) FROM residents GROUP BY 1"
    assert Role.AGGREGATE_CONDITION in _roles(_trace(sql, city), "residents", "income_band")


def test_filter_clause_columns_are_filter_conditions(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT clinic, count(*) FILTER (WHERE diagnosis_group = '肿瘤') FROM clinic_visits GROUP BY 1"
    assert _roles(_trace(sql, city), "clinic_visits", "diagnosis_group") == {Role.FILTER_CONDITION}


def test_window_functions_are_not_aggregates(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT district, count(*) OVER (PARTITION BY district) FROM weather"
    lineage = _trace(sql, city)
    assert not lineage.root.is_aggregate
    assert _roles(lineage, "weather", "district") == {Role.OUTPUT, Role.WINDOW}
    assert analyse(sql, city).is_aggregate is False


def test_window_over_a_protected_column_is_refused(city: dict[str, TablePolicy]) -> None:
    sql = ("SELECT t.clinic, count(*) FROM (SELECT clinic, person_id, sum(cost) OVER () AS s FROM clinic_visits) t "
           "GROUP BY 1")
    assert "column_not_allowed_in_window" in analyse(sql, city).codes


def test_equi_join_must_be_a_top_level_conjunct(city: dict[str, TablePolicy]) -> None:
    joined = "SELECT count(*) FROM residents r JOIN clinic_visits c ON r.person_id = c.person_id AND c.cost > 1"
    either = "SELECT count(*) FROM residents r JOIN clinic_visits c ON r.person_id = c.person_id OR c.cost > 1"
    assert analyse(joined, city).accepted
    assert "entity_column_compared" in analyse(either, city).codes


def test_equi_join_through_a_renamed_join_column_is_allowed(city: dict[str, TablePolicy]) -> None:
    sql = """WITH v AS (SELECT person_id AS pid, cost FROM clinic_visits)
             SELECT r.district, sum(v.cost) FROM residents r JOIN v ON r.person_id = v.pid GROUP BY 1"""
    lineage = _trace(sql, city)
    assert _roles(lineage, "clinic_visits", "person_id") == {Role.PASSTHROUGH, Role.EQUI_JOIN}
    assert analyse(sql, city).accepted


def test_equi_join_through_a_transformed_join_column_is_refused(city: dict[str, TablePolicy]) -> None:
    sql = """WITH v AS (SELECT lower(person_id) AS pid, cost FROM clinic_visits)
             SELECT r.district, sum(v.cost) FROM residents r JOIN v ON r.person_id = v.pid GROUP BY 1"""
    assert Role.PREDICATE in _roles(_trace(sql, city), "clinic_visits", "person_id")
    assert "entity_column_compared" in analyse(sql, city).codes


def test_count_distinct_of_a_function_of_a_join_column_is_refused(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT clinic, count(DISTINCT substr(visit_id, 1, 5)) FROM clinic_visits GROUP BY 1"
    assert _roles(_trace(sql, city), "clinic_visits", "visit_id") == {Role.AGGREGATE_ARG}
    assert "column_not_allowed_in_aggregate" in analyse(sql, city).codes


def test_order_by_alias_in_a_row_level_subquery_traces_to_its_projection(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT count(*) FROM (SELECT cost AS c, person_id FROM clinic_visits ORDER BY c LIMIT 5) t"
    assert Role.ORDER_BY in _roles(_trace(sql, city), "clinic_visits", "cost")
    assert "column_not_allowed_in_order_by" in analyse(sql, city).codes


def test_outputs_of_an_open_data_aggregate_are_open_downstream(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT s FROM (SELECT route, sum(boardings) AS s FROM bus_ridership GROUP BY route) t WHERE s > 10"
    lineage = _trace(sql, city)
    assert _roles(lineage, "bus_ridership", "boardings") == {Role.AGGREGATE_ARG}
    assert analyse(sql, city).accepted


def test_text_compared_with_text_on_a_protected_column_is_not_an_error_channel(city: dict[str, TablePolicy]) -> None:
    assert analyse("SELECT district, count(*) FROM residents WHERE phone LIKE '138%' GROUP BY 1", city).accepted
    assert analyse("SELECT count(*) FROM weather WHERE district = 5", city).accepted  # open column: no secret


def test_boolean_cast_to_integer_cannot_fail(city: dict[str, TablePolicy]) -> None:
    sql = "SELECT clinic, count(*) FROM clinic_visits WHERE CAST(diagnosis_group = '肿瘤' AS INTEGER) = 1 GROUP BY 1"
    assert analyse(sql, city).accepted


def test_quoted_identifiers_do_not_change_which_column_is_meant(city: dict[str, TablePolicy]) -> None:
    sql = 'SELECT "PHONE" FROM "Residents" GROUP BY ALL'
    assert _roles(_trace(sql, city), "residents", "phone") == {Role.GROUP_OUTPUT}
    assert "column_not_allowed_in_output" in analyse(sql, city).codes


def test_three_table_join_roles(city: dict[str, TablePolicy]) -> None:
    sql = """SELECT r.district, w.rain_mm > 10 AS rainy, count(DISTINCT c.person_id), sum(c.cost)
             FROM residents r JOIN clinic_visits c ON r.person_id = c.person_id
             JOIN weather w ON w.district = r.district AND w.day = c.visit_date
             WHERE c.cost > 10 GROUP BY ALL"""
    lineage = _trace(sql, city)
    assert _roles(lineage, "residents", "person_id") == {Role.EQUI_JOIN}
    assert _roles(lineage, "clinic_visits", "person_id") == {Role.EQUI_JOIN, Role.COUNT_DISTINCT}
    assert _roles(lineage, "clinic_visits", "cost") == {Role.AGGREGATE_ARG, Role.PREDICATE}
    assert _roles(lineage, "clinic_visits", "visit_date") == {Role.EQUI_JOIN}
    assert _roles(lineage, "residents", "district") == {Role.GROUP_OUTPUT, Role.EQUI_JOIN}
    assert _roles(lineage, "weather", "rain_mm") == {Role.GROUP_OUTPUT}
    assert len(lineage.equi_joins) == 3
