"""The vocabulary of lineage: roles, the base columns a value carries, column uses and per-scope facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sqlglot import exp
from sqlglot.optimizer.scope import Scope


class Role(StrEnum):
    """How a column reference is used where it appears."""

    OUTPUT = "output"  # a row-level value of the final result
    GROUP_OUTPUT = "group_output"  # a non-aggregated value of an aggregate query (a group key)
    GROUP_KEY = "group_key"  # in GROUP BY
    AGGREGATE_ARG = "aggregate_arg"  # a value inside a safe aggregate
    COUNT_DISTINCT = "count_distinct"  # the bare argument of count(DISTINCT col)
    UNSAFE_AGGREGATE_ARG = "unsafe_aggregate_arg"  # inside min/max/any_value/median/...
    PREDICATE = "predicate"  # WHERE / JOIN ON / HAVING / QUALIFY outside aggregates
    EQUI_JOIN = "equi_join"  # a bare side of a conjunctive `a.col = b.col` (or `col IN (SELECT col ...)`)
    CASE_CONDITION = "case_condition"  # a CASE/IF condition, or a comparison, outside WHERE
    AGGREGATE_CONDITION = "aggregate_condition"  # a CASE/IF condition or comparison inside a safe aggregate
    FILTER_CONDITION = "filter_condition"  # an aggregate's FILTER (WHERE ...)
    WINDOW = "window"  # inside OVER (...) or a window function
    ORDER_BY = "order_by"  # ORDER BY / DISTINCT ON of a row-level scope
    PASSTHROUGH = "passthrough"  # projected by an inner row-level scope; checked where it is used


@dataclass(frozen=True)
class Origin:
    """A base column a value derives from; `bare` when the value is that column unchanged."""

    table: str
    column: str
    bare: bool


@dataclass(frozen=True)
class Derived:
    """One output column of a scope, summarised for the scopes that read it."""

    name: str
    origins: frozenset[Origin]
    simple: bool
    pure: bool = False  # every value is a base column's value, unchanged (no literal, parameter or expression)


@dataclass(frozen=True)
class ColumnUse:
    """A base column used in a role at a place in the query."""

    table: str
    column: str
    role: Role
    node: exp.Expr
    compared_with_value: bool = False


@dataclass(frozen=True)
class EquiJoin:
    """Two sides of an equi-join condition, as the base columns each side carries."""

    left: frozenset[Origin]
    right: frozenset[Origin]
    node: exp.Expr
    left_pure: bool = True
    right_pure: bool = True


@dataclass
class ScopeFacts:
    """What lineage learnt about one scope."""

    scope: Scope
    is_select: bool
    is_aggregate: bool
    is_output: bool
    outputs: list[Derived] = field(default_factory=list)
    aggregates: list[exp.Expr] = field(default_factory=list)
    complex_aggregates: list[exp.Expr] = field(default_factory=list)
    windows: list[exp.Window] = field(default_factory=list)

    def output(self, name: str) -> Derived | None:
        """The output column called `name`."""
        for derived in self.outputs:
            if derived.name == name:
                return derived
        return None


def aggregate_arguments(node: exp.Expr) -> list[exp.Expr]:
    """The value arguments of an aggregate call, DISTINCT unwrapped (count(*) has none)."""
    if isinstance(node, exp.CountIf):
        return [node.this]
    arguments: list[exp.Expr] = []
    for argument in node.iter_expressions():
        if isinstance(argument, exp.Distinct):
            arguments.extend(argument.expressions)
        elif not isinstance(argument, exp.Literal | exp.Star):
            arguments.append(argument)
    return arguments
