"""The allowlist's building blocks, each pinned by its own answer (mutmut survivors of policy.sql_allowlist)."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from policy.sql_allowlist import allowed_function, classify_table_name, function_name


def _node(sql: str) -> exp.Expr:
    return sqlglot.parse_one(sql, read="duckdb")


def _table(sql: str) -> exp.Table:
    table = _node(sql).find(exp.Table)
    assert table is not None
    return table


@pytest.mark.parametrize(("sql", "name"), [("PREFIX(a, 'x')", "prefix"), ("COUNT(a)", "count"), ("a", "column")])
def test_a_function_is_named_in_lower_case_whatever_its_node(sql: str, name: str) -> None:
    assert function_name(_node(sql)) == name


@pytest.mark.parametrize(("sql", "allowed"), [("prefix(a, 'x')", True), ("no_such_fn(a)", False)])
def test_an_anonymous_function_is_allowed_only_when_listed(sql: str, allowed: bool) -> None:
    assert allowed_function(_node(sql)) is allowed


def test_a_table_in_a_catalogue_database_is_a_catalogue_relation_whatever_its_case() -> None:
    assert classify_table_name(_table('SELECT * FROM "SYSTEM".main.t')) == (
        "catalogue_access_not_allowed", '"SYSTEM".main.t is a catalogue relation')


@pytest.mark.parametrize("qualified", ["main.residents", "memory.main.residents"])
def test_a_table_qualified_with_a_schema_or_database_is_refused_with_what_to_write(qualified: str) -> None:
    assert classify_table_name(_table(f"SELECT * FROM {qualified}")) == (
        "unknown_table",
        f"{qualified} is qualified with a schema or database; refer to granted datasets by their bare name")


def test_a_bare_dataset_name_is_left_to_the_catalogue() -> None:
    assert classify_table_name(_table("SELECT * FROM residents")) is None
