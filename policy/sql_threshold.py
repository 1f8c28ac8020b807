"""The group threshold: which query shapes it can be enforced on, and the rewrite that enforces it.

When a query reads a dataset with an entity column, every output row must cover at least k distinct entities
of each such dataset. The rewrite adds, to the top-level aggregation, one ``__sluice_entities_<i>`` column per
(entity dataset instance, contributing row set): ``count(DISTINCT entity)`` for the whole group, and for every
aggregate whose contributing rows can be narrower than the group (a FILTER clause, or an argument that can be
NULL) ``coalesce(nullif(count(DISTINCT entity) FILTER (WHERE <contributing>), 0), count(DISTINCT entity))``:
the number of entities behind that aggregate's value, or the group's count when no row contributes (the
aggregate is then empty or NULL and says nothing about anyone). Output control (policy/output.py) drops every
row where any of these counts is below k.

Those are the values; usually they are computed in two passes (`_Split`: one pre-aggregation per entity to
(group keys, entity) rows, joined back on the keys), which DuckDB runs much faster than several
count(DISTINCT) FILTERs. The single-pass expressions above are the fallback for shapes the two-pass form does
not handle. docs/governed-queries.md describes both.

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
# Names used by the two-pass form (all under the reserved __sluice prefix, which queries cannot use).
ROWS_NAME = "__sluice_rows"
_QUERY, _COUNTS, _PARTIAL = "__sluice_q", "__sluice_c", "__sluice_p"
_KEY, _VALUE, _ORDER, _ENTITY = "__sluice_k", "__sluice_v", "__sluice_o", "__sluice_entity"
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
    # helper expression (single-pass form) -> (entity, contributing condition or None for the whole group);
    # sqlglot expressions hash and compare structurally
    helpers: dict[exp.Expr, tuple[exp.Column, exp.Expr | None]] = {}
    for instance in plan.instances:
        entity = _reference(lineage, instance.path, instance.table, passthrough)
        total = exp.Count(this=exp.Distinct(expressions=[entity.copy()]), big_int=True)
        helpers.setdefault(total, (entity, None))
        for aggregate in lineage.root.aggregates:
            conditions = _contributing_conditions(aggregate, entity)
            if not conditions:
                continue
            condition = exp.and_(*conditions)
            narrowed = exp.Filter(this=exp.Count(this=exp.Distinct(expressions=[entity.copy()]), big_int=True),
                                  expression=exp.Where(this=condition.copy()))
            helper: exp.Expr = exp.Coalesce(this=exp.Nullif(this=narrowed, expression=exp.Literal.number(0)),
                                            expressions=[total.copy()])
            helpers.setdefault(helper, (entity, condition))
    names = [f"{ENTITY_COUNT_PREFIX}{i}" for i in range(len(helpers))]
    split = _Split.of(lineage)
    if split is None:
        for name, helper in zip(names, helpers, strict=True):
            select.append("expressions", exp.alias_(helper, exp.to_identifier(name, quoted=True)))
    else:
        split.apply(select, list(helpers.values()), names)
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



@dataclass
class _Split:
    """The two-pass form of the rewrite, used whenever the top-level SELECT allows it.

    The FROM / JOIN / WHERE rows are computed once, into a materialized CTE with one struct column per source
    alias, so that every ``"alias"."column"`` of the top-level clauses still resolves (as a struct field). The
    user's aggregation runs over those rows unchanged; each entity's counts come from a pre-aggregation over the
    same rows to one row per (group keys, entity), where `count(entity)` is count(DISTINCT entity) and
    `count(entity) FILTER (WHERE bool_or(<contributing>))` its FILTERed form. They are joined back to the
    user's groups on the keys with IS NOT DISTINCT FROM (the same equality as grouping, NULL keys included),
    after HAVING, ORDER BY and LIMIT; the outer query restores the ORDER BY. One hash aggregation per entity
    replaces one count(DISTINCT) hash table per helper column.
    """

    keys: list[exp.Expr]  # the grouping expressions
    fields: dict[str, dict[str, str]]  # source alias -> lower-case column name -> column name
    order: list[exp.Ordered]  # ORDER BY items, output-alias references expanded
    order_all: bool  # ORDER BY ALL

    @classmethod
    def of(cls, lineage: Lineage) -> _Split | None:
        """The two-pass plan, or None when the query is left on the single-pass form (odd or unproven shapes)."""
        select = lineage.root.scope.expression
        if not isinstance(select, exp.Select) or select.args.get("distinct") is not None:
            return None
        sources = {alias.lower(): alias for alias in lineage.root.scope.selected_sources}
        if not sources or not all(isinstance(p, exp.Alias) for p in select.expressions):
            return None
        outputs: dict[str, list[exp.Expr]] = {}
        for projection in select.expressions:
            outputs.setdefault(projection.alias.lower(), []).append(projection.unalias())
        fields: dict[str, dict[str, str]] = {}
        for column in _clause_columns(select):
            table, name = column.table.lower(), column.name.lower()
            if column.find_ancestor(exp.Select) is not select:
                return None  # a column of a subquery expression: possibly correlated
            if not table:  # an output-alias reference: it must not meet a struct column of the rows CTE
                if name in sources or name not in outputs:
                    return None
            elif table in sources and not column.args.get("db"):
                fields.setdefault(sources[table], {})[name] = column.name
            else:
                return None
        keys = _group_keys(select)
        if keys is None:
            return None
        order: list[exp.Ordered] = []
        node = select.args.get("order")
        items: list[exp.Ordered] = node.expressions if node is not None else []
        order_all = any(isinstance(o.this, exp.Var) and o.this.name.upper() == "ALL" for o in items)
        if order_all:
            return cls(keys, fields, [], True) if len(items) == 1 else None
        for ordered in items:
            if isinstance(ordered.this, exp.Literal):
                return None  # positional
            expanded = exp.paren(ordered.this.copy(), copy=False)
            for column in list(expanded.find_all(exp.Column)):
                if not column.table:
                    target = outputs[column.name.lower()]
                    if len(target) != 1:
                        return None
                    column.replace(exp.paren(target[0].copy(), copy=False))
            order.append(_with_this(ordered, expanded.unnest()))
        return cls(keys, fields, order, False)

    def apply(self, select: exp.Select, helpers: list[tuple[exp.Column, exp.Expr | None]],
              names: list[str]) -> None:
        """Turn `select` (in place) into the two-pass form, with the helper columns `names`."""
        for entity, _ in helpers:
            self.fields.setdefault(entity.table, {})[entity.name.lower()] = entity.name
        rows = exp.Select(expressions=[
            exp.alias_(exp.Struct(expressions=[exp.PropertyEQ(this=_name(f), expression=_col(f, alias))
                                               for f in fields.values()]), _name(alias))
            for alias, fields in self.fields.items()])
        for arg in ("from_", "joins", "where"):
            value = select.args.get(arg)
            rows.set(arg, [v.copy() for v in value] if isinstance(value, list) else value and value.copy())
        # the user's aggregation over the rows, plus hidden keys, output values and ORDER BY values
        query = select.copy()
        for arg in ("with_", "joins", "where"):
            query.set(arg, None)
        query.set("from_", exp.From(this=exp.Table(this=_name(ROWS_NAME))))
        projections = select.expressions
        hidden = [(f"{_KEY}{j}", key) for j, key in enumerate(self.keys)]
        hidden += [(f"{_VALUE}{i}", p.unalias()) for i, p in enumerate(projections)]
        hidden += [(f"{_ORDER}{i}", ordered.this) for i, ordered in enumerate(self.order)]
        for name, expression in hidden:
            query.append("expressions", exp.alias_(expression.copy(), _name(name)))
        by_entity: dict[exp.Column, list[exp.Expr]] = {}
        for entity, condition in helpers:
            conditions = by_entity.setdefault(entity, [])
            if condition is not None and condition not in conditions:
                conditions.append(condition)
        joins = [self._counts(f"{_COUNTS}{c}", entity, conditions)
                 for c, (entity, conditions) in enumerate(by_entity.items())]
        counts = {entity: f"{_COUNTS}{c}" for c, entity in enumerate(by_entity)}
        expressions = [exp.alias_(_col(f"{_VALUE}{i}", _QUERY), _name(p.alias)) for i, p in enumerate(projections)]
        for name, (entity, condition) in zip(names, helpers, strict=True):
            total: exp.Expr = _col("n", counts[entity])
            if condition is not None:
                narrowed = _col(f"n{by_entity[entity].index(condition)}", counts[entity])
                total = exp.Coalesce(this=exp.Nullif(this=narrowed, expression=exp.Literal.number(0)),
                                     expressions=[total])
            expressions.append(exp.alias_(total, _name(name)))
        order = select.args["order"].copy() if self.order_all else None
        if self.order:
            order = exp.Order(expressions=[_with_this(o, _col(f"{_ORDER}{i}", _QUERY))
                                           for i, o in enumerate(self.order)])
        with_ = select.args.get("with_") or exp.With(expressions=[])
        with_.append("expressions", exp.CTE(this=rows, alias=exp.TableAlias(this=_name(ROWS_NAME)),
                                            materialized=True))
        for arg in list(select.args):
            select.set(arg, None)
        select.set("with_", with_)
        select.set("expressions", expressions)
        select.set("from_", exp.From(this=exp.Subquery(this=query, alias=exp.TableAlias(this=_name(_QUERY)))))
        select.set("joins", joins)
        select.set("order", order)

    def _counts(self, alias: str, entity: exp.Column, conditions: list[exp.Expr]) -> exp.Join:
        """LEFT JOIN (per-group entity counts: `n`, and `n<m>` for the m-th condition) ON the group keys."""
        keys = [f"k{j}" for j in range(len(self.keys))]
        partial = exp.Select(
            expressions=[*(exp.alias_(k.copy(), _name(n)) for k, n in zip(self.keys, keys, strict=True)),
                         exp.alias_(entity.copy(), _name(_ENTITY)),
                         *(exp.alias_(exp.Anonymous(this="bool_or", expressions=[c.copy()]), _name(f"f{m}"))
                           for m, c in enumerate(conditions))],
            from_=exp.From(this=exp.Table(this=_name(ROWS_NAME))),
            group=exp.Group(expressions=[*(k.copy() for k in self.keys), entity.copy()]))
        counted = [exp.alias_(exp.Count(this=_col(_ENTITY), big_int=True), _name("n"))]
        counted += [exp.alias_(exp.Filter(this=exp.Count(this=_col(_ENTITY), big_int=True),
                                          expression=exp.Where(this=_col(f"f{m}"))), _name(f"n{m}"))
                    for m in range(len(conditions))]
        counts = exp.Select(expressions=[*(_col(n) for n in keys), *counted],
                            from_=exp.From(this=exp.Subquery(this=partial,
                                                             alias=exp.TableAlias(this=_name(_PARTIAL)))))
        if keys:
            counts.set("group", exp.Group(expressions=[_col(n) for n in keys]))
        on = exp.and_(*(exp.NullSafeEQ(this=_col(f"{_KEY}{j}", _QUERY), expression=_col(n, alias))
                        for j, n in enumerate(keys))) if keys else exp.true()
        return exp.Join(this=exp.Subquery(this=counts, alias=exp.TableAlias(this=_name(alias))), kind="LEFT", on=on)


def _clause_columns(select: exp.Select) -> list[exp.Column]:
    """Every column reference in the clauses that stay with the aggregation (all but WITH, FROM, JOIN, WHERE)."""
    columns: list[exp.Column] = []
    for arg in ("expressions", "group", "having", "qualify", "order", "limit", "offset"):
        value = select.args.get(arg)
        for node in value if isinstance(value, list) else [value] if value is not None else []:
            columns.extend(node.find_all(exp.Column))
    return columns


def _group_keys(select: exp.Select) -> list[exp.Expr] | None:
    """The grouping expressions (GROUP BY ALL: the projections without aggregates), or None if unsupported."""
    group = select.args.get("group")
    if group is None:
        return []
    if any(value for arg, value in group.args.items() if arg not in ("expressions", "all")):
        return None  # ROLLUP, CUBE, GROUPING SETS
    if group.args.get("all"):
        keys = [p.unalias() for p in select.expressions if not p.find(exp.AggFunc)]
        if group.expressions:
            return None
    else:
        keys = list(group.expressions)
    if any(isinstance(k, exp.Literal) or any(not c.table for c in k.find_all(exp.Column)) for k in keys):
        return None  # positional, or an output-alias reference
    return keys


def _with_this(ordered: exp.Ordered, this: exp.Expr) -> exp.Ordered:
    item = ordered.copy()
    item.set("this", this)
    return item


def _name(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)
