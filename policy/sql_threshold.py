"""The group threshold: which query shapes it can be enforced on, and the rewrite that enforces it.

When a query reads a dataset with an entity column, every output row must cover at least k distinct entities
of each such dataset. The rewrite adds, to the top-level aggregation, one ``__sluice_entities_<i>`` column per
(entity dataset instance, contributing row set): ``count(DISTINCT entity)`` for the whole group, and for every
aggregate whose contributing rows can be narrower than the group (a FILTER clause, or an argument that can be
NULL) ``coalesce(nullif(count(DISTINCT entity) FILTER (WHERE <contributing>), 0), count(DISTINCT entity))``:
the number of entities behind that aggregate's value, or the group's count when no row contributes (the
aggregate is then empty or NULL and says nothing about anyone). Output control (policy/output.py) drops every
row where any of these counts is below k.

Supported shape: the top-level SELECT aggregates; entity datasets reach it through FROM / JOIN, directly or via
row-level CTEs and derived tables (not DISTINCT, not set operations, not aggregates), which get a passthrough
column carrying the entity value. Entity datasets anywhere else (subquery expressions, lower aggregates, set
operations) are refused, as are row-level queries over entity data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from policy import sql_allowlist as A
from policy import sql_findings as F
from policy.output import ENTITY_COUNT_PREFIX
from policy.sql_findings import Finding, Positions
from policy.sql_lineage import Lineage
from policy.sql_model import ScopeFacts, aggregate_arguments
from policy.sql_types import NUMERIC_TYPES

PASSTHROUGH_PREFIX = "__sluice_e"
# Aggregates over values, where a row whose value is 0 adds nothing but still dilutes nothing: a sum, mean or
# spread over one non-zero row among zeros is that row's value, so zero rows do not count as contributors.
_VALUE_AGGREGATES = (exp.Sum, exp.Avg, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance, exp.VariancePop,
                     exp.Corr, exp.CovarPop, exp.CovarSamp, exp.Kurtosis, exp.Skewness)


@dataclass(frozen=True)
class EntityInstance:
    """One occurrence of an entity dataset read by the aggregation: the (scope, alias) hops down to it."""

    table: str
    path: tuple[tuple[Scope, str], ...]


@dataclass
class ThresholdPlan:
    """Entity instances the top-level aggregation must count, and the findings that refuse the shape."""

    instances: list[EntityInstance] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


class _Planner:
    def __init__(self, lineage: Lineage, positions: Positions) -> None:
        self.lineage = lineage
        self.catalog = lineage.catalog
        self.positions = positions
        self.plan = ThresholdPlan()
        self._seen: set[tuple[str, int | None, int | None]] = set()

    def refuse(self, code: str, message: str, node: exp.Expr) -> None:
        finding = self.positions.finding(code, message, node)
        key = (message, finding.line, finding.column)
        if key not in self._seen:
            self._seen.add(key)
            self.plan.findings.append(finding)

    def reach(self, facts: ScopeFacts, path: tuple[tuple[Scope, str], ...], why_not: str | None) -> None:
        """Walk the sources of a scope; entity datasets are fine only where `why_not` is None."""
        scope = facts.scope
        if not facts.is_select:
            for branch in scope.set_operation_scopes:
                self.reach(self.lineage.facts(branch), path, why_not or "inside a set operation")
            return
        for alias, (node, source) in scope.selected_sources.items():
            if isinstance(source, exp.Table):
                table = source.name.lower()
                if self.catalog.entity_column(table) is None:
                    continue
                if why_not is None:
                    self.plan.instances.append(EntityInstance(table, (*path, (scope, alias))))
                else:
                    self.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD,
                                f"{self.catalog.name(table)} has an entity column and is read {why_not}; the group "
                                "threshold is enforced only when entity datasets reach the top-level aggregation "
                                "through joins, row-level CTEs and derived tables", node)
                continue
            child = self.lineage.facts(source)
            self.reach(child, (*path, (scope, alias)), why_not or _feeding_problem(child))
        for subquery in scope.subquery_scopes:
            self.reach(self.lineage.facts(subquery), path, why_not or "inside a subquery expression")


def _feeding_problem(child: ScopeFacts) -> str | None:
    """Why a FROM-clause child cannot carry entity values up to the aggregation, or None."""
    if not child.is_select:
        return "inside a set operation"
    if child.is_aggregate:
        return "inside an aggregate below the top level (aggregates of aggregates are not supported)"
    if child.scope.expression.args.get("distinct") is not None:
        return "inside a SELECT DISTINCT subquery"
    return None


def plan_threshold(lineage: Lineage, positions: Positions) -> ThresholdPlan:
    """Decide whether the group threshold can be enforced on this query, and where the entity values are."""
    planner = _Planner(lineage, positions)
    root = lineage.root
    if not root.is_select:
        planner.reach(root, (), "inside a set operation")
        return planner.plan
    if not root.is_aggregate:
        return planner.plan  # row-level queries are refused outright when they touch entity data
    planner.reach(root, (), None)
    if planner.plan.instances:
        _check_aggregation(root, planner)
    return planner.plan


def _check_aggregation(root: ScopeFacts, planner: _Planner) -> None:
    """The top-level aggregation over entity data: safe, simple aggregates only; no DISTINCT, no windows."""
    select = root.scope.expression
    if select.args.get("distinct") is not None:
        planner.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD,
                       "SELECT DISTINCT over an aggregation of entity data is not supported", select)
    for window in root.windows:
        planner.refuse(F.WINDOW_IN_AGGREGATE_QUERY,
                       "window functions over an aggregation of entity data see groups that output control "
                       "later suppresses; compute them outside Sluice", window)
    feeding = {id(scope): scope for instance in planner.plan.instances for scope, _ in instance.path[1:]}
    for scope in feeding.values():
        for window in planner.lineage.facts(scope).windows:
            planner.refuse(F.WINDOW_IN_AGGREGATE_QUERY,
                           "window functions in a subquery feeding an aggregation of entity data compute across "
                           "groups, including groups that output control later suppresses", window)
    for aggregate in root.aggregates:
        if not A.is_safe_aggregate(aggregate):
            planner.refuse(F.UNSAFE_AGGREGATE_OVER_ENTITY_DATA,
                           f"{A.function_name(aggregate)}() returns one row's value; over entity data only count, "
                           "sum, avg, stddev and variance are allowed", aggregate)
        elif aggregate in root.complex_aggregates:
            planner.refuse(F.COMPLEX_AGGREGATE_OVER_ENTITY_DATA,
                           f"the argument of {A.function_name(aggregate)}() over entity data must be plain "
                           "arithmetic (+, -, *, / by constants, CAST, COALESCE) in which protected columns are "
                           "only scaled by constants: conditions, CASE, functions and per-row weights inside an "
                           "aggregate can single out rows; use FILTER (WHERE ...) instead", aggregate)


def rewrite_threshold(lineage: Lineage, plan: ThresholdPlan) -> list[str]:
    """Add the entity-count columns to the top-level aggregation (in place); return their names."""
    if not plan.instances:
        return []
    select = lineage.root.scope.expression
    assert isinstance(select, exp.Select)
    passthrough: dict[tuple[int, exp.Expr], str] = {}
    helpers: dict[exp.Expr, exp.Expr] = {}  # sqlglot expressions hash and compare structurally
    for instance in plan.instances:
        entity = _reference(lineage, instance.path, instance.table, passthrough)
        total = exp.Count(this=exp.Distinct(expressions=[entity.copy()]), big_int=True)
        helpers.setdefault(total, total)
        for aggregate in lineage.root.aggregates:
            conditions = _contributing_conditions(aggregate, entity)
            if not conditions:
                continue
            narrowed = exp.Filter(this=exp.Count(this=exp.Distinct(expressions=[entity.copy()]), big_int=True),
                                  expression=exp.Where(this=exp.and_(*conditions)))
            helper: exp.Expr = exp.Coalesce(this=exp.Nullif(this=narrowed, expression=exp.Literal.number(0)),
                                            expressions=[total.copy()])
            helpers.setdefault(helper, helper)
    names = []
    for i, helper in enumerate(helpers.values()):
        name = f"{ENTITY_COUNT_PREFIX}{i}"
        select.append("expressions", exp.alias_(helper, exp.to_identifier(name, quoted=True)))
        names.append(name)
    return names


def _contributing_conditions(aggregate: exp.Expr, entity: exp.Column) -> list[exp.Expr]:
    """Conditions a row must meet to contribute to an aggregate's value (its FILTER, non-NULL arguments).

    A NULL test on the entity column itself is left out: count(DISTINCT entity) ignores NULLs anyway.
    """
    conditions: list[exp.Expr] = []
    parent = aggregate.parent
    while isinstance(parent, exp.IgnoreNulls | exp.RespectNulls):
        parent = parent.parent
    if isinstance(parent, exp.Filter):
        conditions.append(exp.paren(parent.expression.this.copy(), copy=False))
    weighs = isinstance(aggregate, _VALUE_AGGREGATES)
    for argument in aggregate_arguments(aggregate):
        if argument.unnest() == entity:
            continue
        value = exp.paren(argument.copy(), copy=False)
        conditions.append(exp.not_(exp.Is(this=value, expression=exp.Null())))
        if weighs and argument.type is not None and argument.type.this in NUMERIC_TYPES:
            conditions.append(exp.NEQ(this=value.copy(), expression=exp.Literal.number(0)))
    return conditions


def _reference(lineage: Lineage, path: tuple[tuple[Scope, str], ...], table: str,
               passthrough: dict[tuple[int, exp.Expr], str]) -> exp.Column:
    """A column, valid in the first scope of `path`, carrying the entity value of the instance at its end."""
    scope, alias = path[0]
    if len(path) == 1:
        entity = lineage.catalog.entity_column(table)
        assert entity is not None
        return exp.column(entity, table=alias, quoted=True)
    child = scope.sources[alias]
    assert isinstance(child, Scope) and isinstance(child.expression, exp.Select)
    inner = _reference(lineage, path[1:], table, passthrough)
    key = (id(child), inner)
    name = passthrough.get(key)
    if name is None:
        name = f"{PASSTHROUGH_PREFIX}{len(passthrough)}"
        passthrough[key] = name
        child.expression.append("expressions", exp.alias_(inner, exp.to_identifier(name, quoted=True)))
    return exp.column(name, table=alias, quoted=True)
