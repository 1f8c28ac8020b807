"""The group threshold: which query shapes it can be enforced on (planning; the rewrite is in sql_rewrite.py).

When a query reads a dataset with an entity column, every released cell must cover at least k distinct entities
of each such dataset, and it is audited against every earlier release (policy/release_audit.py). The planner
finds the entity instances the top-level aggregation reads and refuses shapes the rewrite cannot enforce this
on.

Supported shape: the top-level SELECT aggregates; entity datasets reach it through FROM / JOIN, directly or via
row-level CTEs and derived tables (not DISTINCT, not set operations, not aggregates, and without LIMIT, OFFSET,
QUALIFY or DISTINCT ON, which would pick exact members), which get a passthrough column carrying the entity index
up. Entity datasets anywhere else (subquery expressions, lower aggregates, set operations) are refused, as are
row-level queries over entity data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from policy import sql_allowlist as A
from policy import sql_findings as F
from policy.constraints import Constraint
from policy.sql_entity_scope import (
    anchor_aliases,
    entity_equalities,
    is_per_entity,
    per_entity_problem,
    per_entity_value,
)
from policy.sql_findings import Finding, Positions
from policy.sql_lineage import Lineage
from policy.sql_model import ScopeFacts

# Aggregates that are not sums of per-entity values (so the release audit cannot account for them): products
# of two arguments (Σxy: a weighted sum in disguise), higher moments, and approximate distinct counts.
NON_LINEAR_AGGREGATES: tuple[type[exp.Expr], ...] = (
    exp.Corr, exp.CovarPop, exp.CovarSamp, exp.Kurtosis, exp.Skewness, exp.ApproxDistinct,
)
# Value aggregates that DISTINCT would turn into a sum over distinct values (not a sum over entities).
_VALUE_AGGREGATES: tuple[type[exp.Expr], ...] = (
    exp.Sum, exp.Avg, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance, exp.VariancePop,
)


@dataclass(frozen=True)
class EntityInstance:
    """One occurrence of an entity dataset read by the aggregation: the (scope, alias) hops down to it."""

    table: str
    path: tuple[tuple[Scope, str], ...]
    population: str = ""
    branches: tuple[tuple[Scope, str | None], ...] = ()
    """When the path ends at a UNION ALL of row-level branches: each branch and the alias of its entity dataset
    (None for a branch without entity data, whose rows have no entity)."""


@dataclass
class Branch:
    """One aggregation of a set operation (sql_setop.py) and the entity instances it reads."""

    facts: ScopeFacts
    instances: list[EntityInstance]
    alias: str | None = None  # aggregations joined at the top (sql_joined.py): the alias it is read through
    correlation: list[Correlation] = field(default_factory=list)
    """A correlated scalar subquery (sql_scalar.py): its equalities with the outer query, decorrelated into a
    GROUP BY of the inner sides."""


@dataclass(frozen=True)
class Correlation:
    """One conjunct `inner = outer` of a correlated scalar subquery's WHERE: its position among the WHERE's
    conjuncts, the inner side (columns of the subquery) and the outer side (a group key of the top level)."""

    conjunct: int
    inner: exp.Expr
    outer: exp.Expr


@dataclass
class ThresholdPlan:
    """Entity instances the top-level aggregation must count, and the findings that refuse the shape."""

    instances: list[EntityInstance] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    set_kind: str | None = None
    """A set operation of aggregations (sql_setop.py): its kind, and each branch with its instances."""
    branches: list[Branch] = field(default_factory=list)
    scalars: list[Branch] = field(default_factory=list)
    """Scalar subqueries of global aggregations over entity data in the top level (sql_scalar.py)."""
    joined: bool = False
    """Aggregations joined at the top (sql_joined.py): `branches` are the aggregated sources, one per alias."""
    optional: tuple[str, ...] = ()
    """Aggregations joined at the top: the aliases of sources on the right of a LEFT JOIN (outer-joined)."""
    rewritten: exp.Query | None = None
    """The query that replaces the tree's root after the rewrite (a set operation becomes one UNION ALL)."""

    @property
    def populations(self) -> tuple[str, ...]:
        """The populations the aggregation reads, sorted."""
        return tuple(sorted({i.population for i in self.instances}))


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

    def reach(self, facts: ScopeFacts, path: tuple[tuple[Scope, str], ...], why_not: str | None,
              selected: exp.Expr | None = None) -> None:
        """Walk the sources of a scope; entity datasets are fine only where `why_not` and `selected` are None."""
        scope = facts.scope
        if not facts.is_select:
            for branch in scope.set_operation_scopes:
                self.reach(self.lineage.facts(branch), path, why_not or "inside a set operation", selected)
            return
        anchors = anchor_aliases(self.lineage, facts) if is_per_entity(self.lineage, facts) else None
        for alias, (node, source) in scope.selected_sources.items():
            if isinstance(source, exp.Table):
                table = source.name.lower()
                if self.catalog.entity_column(table) is None:
                    continue
                if anchors is not None and alias not in anchors:
                    continue  # the same entity as an anchor (a per-entity aggregation joins them on the entity)
                if why_not is not None:
                    self.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD,
                                f"{self.catalog.name(table)} has an entity column and is read {why_not}; the group "
                                "threshold is enforced only when entity datasets reach the top-level aggregation "
                                "through joins, row-level CTEs and derived tables", node)
                elif selected is not None:
                    self.refuse(F.ROW_SELECTION_BELOW_AGGREGATION,
                                f"{selected.key.upper()} below the aggregation picks exact rows of "
                                f"{self.catalog.name(table)}, which has an entity column: LIMIT, OFFSET, QUALIFY, "
                                "sampling and DISTINCT ON may only shape the final output", selected)
                else:
                    population = self.catalog.tables[table].entity_population or table
                    self.plan.instances.append(EntityInstance(table, (*path, (scope, alias)), population))
                continue
            child = self.lineage.facts(source)
            if not child.is_select and why_not is None and selected is None and self._union(child, (*path, (scope,
                                                                                                          alias))):
                continue
            self.reach(child, (*path, (scope, alias)), why_not or self._feeding_problem(child),
                       selected or _row_selection(child))
        for subquery in scope.subquery_scopes:
            if not path and why_not is None and facts is self.lineage.root and self._scalar(subquery):
                continue  # a global aggregate compared with or combined into the top level's (sql_scalar.py)
            if why_not is None and _in_clause(subquery.expression, scope.expression) in ("where", "joins"):
                problem = self._selector_problem(subquery)
                if problem is None:
                    continue  # EXISTS / IN selecting rows by what their entities did: a predicate like any other
                why = f"inside a subquery expression that {problem}"
            else:
                why = ("inside a subquery expression (only EXISTS / IN in WHERE or ON, or an uncorrelated scalar "
                       "subquery of one global aggregation over datasets it reads directly, may read entity data)")
            self.reach(self.lineage.facts(subquery), path, why_not or why, selected)

    def _scalar(self, subquery: Scope) -> bool:
        """Whether a subquery of the top level is an uncorrelated scalar subquery of a global aggregation over entity
        datasets read directly (`HAVING sum(x) > (SELECT avg(x) ...)`); if so it is planned as a source of its own."""
        select = subquery.expression
        parent = select.parent
        if not isinstance(select, exp.Select) or not isinstance(parent, exp.Subquery) or \
                isinstance(parent.parent, exp.In | exp.Any | exp.All | exp.Exists):
            return False
        facts = self.lineage.facts(subquery)
        if not facts.is_aggregate or len(select.expressions) != 1 or facts.windows or any(
                select.args.get(k) is not None for k in ("group", "having", "limit", "offset", "qualify", "distinct",
                                                         "with_", "order")):
            return False
        correlation: list[Correlation] = []
        if subquery.external_columns:
            found = self._correlation(subquery, facts)
            if isinstance(found, str):
                if _reads_entity_scope(self, subquery):
                    self.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD, found, select)
                    return True
                return False
            correlation = found
        planner = _Planner(self.lineage, self.positions)
        planner.reach(facts, (), None)
        if not planner.plan.instances or any(len(i.path) != 1 or i.branches for i in planner.plan.instances):
            return False  # only entity datasets read directly (FROM / JOIN) by the subquery
        _check_aggregation(facts, planner)
        for finding in planner.plan.findings:
            self.refuse(finding.code, finding.message, select)
        self.plan.scalars.append(Branch(facts, planner.plan.instances, correlation=correlation))
        return True

    def _correlation(self, subquery: Scope, facts: ScopeFacts) -> list[Correlation] | str:
        """The equalities `inner = outer` that correlate a scalar subquery of a global aggregation with the top
        level, or why it cannot be decorrelated into an aggregation grouped by the inner sides (a message saying
        what to write instead)."""
        instead = ("a correlated scalar subquery over entity data may only be correlated by equalities "
                   "`inner column = outer group key` in its WHERE (AND-ed), on open or group columns; otherwise "
                   "join an aggregation grouped by the key (`JOIN (SELECT key, avg(x) AS a FROM ... GROUP BY key) "
                   "AS g ON g.key = t.key`) inside one aggregation, or compare in a window "
                   "(`avg(x) OVER (PARTITION BY key)` over an aggregation)")
        select = subquery.expression
        assert isinstance(select, exp.Select)
        external = {id(c) for c in subquery.external_columns}
        where = select.args.get("where")
        terms = conjuncts(where.this) if where is not None else []
        found: list[Correlation] = []
        covered = 0
        for position, conjunct in enumerate(terms):
            outside = [c for c in conjunct.find_all(exp.Column) if id(c) in external]
            if not outside:
                continue
            if not isinstance(conjunct, exp.EQ):
                return instead
            sides = []
            for side in (conjunct.this, conjunct.expression):
                columns = list(side.find_all(exp.Column))
                sides.append(bool(columns) and all(id(c) in external for c in columns))
                if not sides[-1] and any(id(c) in external for c in columns):
                    return instead
            if sides.count(True) != 1:
                return instead
            outer, inner = (conjunct.this, conjunct.expression) if sides[0] else (conjunct.expression, conjunct.this)
            if not list(inner.find_all(exp.Column)) or inner.find(exp.Subquery, exp.AggFunc, exp.Window):
                return instead
            origins, _, _ = self.lineage.expression_origins(inner, facts)
            for origin in origins:
                if origin.table not in self.catalog.tables:
                    continue
                if self.catalog.is_entity(origin.table, origin.column) or \
                        self.catalog.constraint(origin.table, origin.column) not in (Constraint.OPEN,
                                                                                    Constraint.GROUP):
                    return instead
            covered += len(outside)
            found.append(Correlation(position, inner, outer))
        if covered != len(external):
            return instead
        return found

    def _union(self, child: ScopeFacts, path: tuple[tuple[Scope, str], ...]) -> bool:
        """A UNION ALL of row-level branches (several sales channels) aggregated above: one entity instance whose
        index each branch carries. True when handled (or there is no entity data in it)."""
        branches = _union_branches(child.scope)
        if branches is None:
            return False
        entries: list[tuple[Scope, str | None]] = []
        tables: dict[str, str] = {}
        for branch in branches:
            facts = self.lineage.facts(branch)
            if facts.is_aggregate or facts.windows or _row_selection(facts) is not None or \
                    branch.expression.args.get("distinct") is not None:
                return False
            if any(_reads_entity_scope(self, s) for s in [*branch.subquery_scopes,
                                                          *(src for _, src in branch.selected_sources.values()
                                                            if isinstance(src, Scope))]):
                return False
            aliases = [a for a, (_, src) in branch.selected_sources.items()
                       if isinstance(src, exp.Table) and self.catalog.entity_column(src.name.lower()) is not None]
            if len(aliases) > 1 and not self._same_entity(branch, aliases):
                return False
            if aliases:
                _, table_node = branch.selected_sources[aliases[0]]
                assert isinstance(table_node, exp.Table)
                table = table_node.name.lower()
                tables[aliases[0]] = table
            entries.append((branch, aliases[0] if aliases else None))
        populations = {self.catalog.tables[t].entity_population or t for t in tables.values()}
        if not populations:
            return True  # no entity data in the union
        if len(populations) != 1:
            return False
        self.plan.instances.append(EntityInstance(next(iter(tables.values())), path, populations.pop(),
                                                  tuple(entries)))
        return True

    def _same_entity(self, branch: Scope, aliases: list[str]) -> bool:
        """Whether every entity dataset of a branch is joined on its entity column to the first one (same
        population): then the branch's rows have one entity, the first dataset's."""
        select = branch.expression
        assert isinstance(select, exp.Select)
        equal = entity_equalities(select)
        first = aliases[0]
        populations = set()
        for alias in aliases:
            _, table = branch.selected_sources[alias]
            assert isinstance(table, exp.Table)
            name = table.name.lower()
            populations.add(self.catalog.tables[name].entity_population or name)
            column = (self.catalog.entity_column(name) or "").lower()
            if alias != first and first not in equal.get((alias, column), set()):
                return False
        return len(populations) == 1

    def _selector_problem(self, scope: Scope) -> str | None:
        """Why a subquery in WHERE / ON that reads entity data cannot select rows, or None when it can: no
        aggregate over entity data is evaluated in it (except per entity, grouped by the entity column), and
        nothing picks exact rows (LIMIT, OFFSET, QUALIFY, DISTINCT ON, windows)."""
        facts = self.lineage.facts(scope)
        if not facts.is_select:
            for branch in scope.set_operation_scopes:
                problem = self._selector_problem(branch)
                if problem is not None:
                    return problem
            return None
        if _row_selection(facts) is not None or facts.windows:
            return "picks exact rows (LIMIT, OFFSET, QUALIFY, DISTINCT ON or a window)"
        if facts.is_aggregate and _reads_entity_table(self, scope) and \
                per_entity_problem(self.lineage, facts) is not None:
            return ("evaluates an aggregate over entity data (only per-entity aggregates, grouped by the entity "
                    "column, may select rows; release other aggregates as cells of their own)")
        for _, source in scope.selected_sources.values():
            if isinstance(source, Scope):
                problem = self._selector_problem(source)
                if problem is not None:
                    return problem
        for child in scope.subquery_scopes:
            problem = self._selector_problem(child)
            if problem is not None:
                return problem
        return None


    def _feeding_problem(self, child: ScopeFacts) -> str | None:
        """Why a FROM-clause child cannot carry entity values up to the aggregation, or None."""
        if child.is_aggregate and child.is_select:
            if per_entity_problem(self.lineage, child) is None:
                return None
            return ("inside an aggregate below the top level that is not a per-entity aggregation (aggregate per "
                    "entity, grouped by the entity column, then count entities per value). An aggregate of "
                    "aggregates is answered when the outer query reads only that aggregation, groups by some of its "
                    "group keys (or not at all) and outputs sum, avg, count, min, max, stddev or variance of its "
                    "columns; otherwise write a window over the aggregation, `avg(count(*)) OVER (PARTITION BY "
                    "key)`")
        return _feeding_problem(child)


def _in_clause(node: exp.Expr, select: exp.Expr) -> str | None:
    """The argument of `select` (where, joins, expressions, ...) that holds `node`."""
    while node.parent is not None and node.parent is not select:
        node = node.parent
    return node.arg_key if node.parent is select else None


def conjuncts(condition: exp.Expr) -> list[exp.Expr]:
    """The top-level AND-ed terms of a condition (parentheses unwrapped)."""
    condition = condition.unnest()
    if isinstance(condition, exp.And):
        return [*conjuncts(condition.this), *conjuncts(condition.expression)]
    return [condition]


def _union_branches(scope: Scope) -> list[Scope] | None:
    """The SELECT branches of a UNION ALL (nested ones flattened), or None for any other set operation."""
    expression = scope.expression
    if isinstance(expression, exp.Select):
        return [scope]
    if not isinstance(expression, exp.Union) or expression.args.get("distinct"):
        return None
    out: list[Scope] = []
    for branch in scope.set_operation_scopes:
        inner = _union_branches(branch)
        if inner is None:
            return None
        out += inner
    return out


def _reads_entity_scope(planner: _Planner, scope: Scope) -> bool:
    if _reads_entity_table(planner, scope):
        return True
    children = [*scope.subquery_scopes, *scope.set_operation_scopes,
                *(src for _, src in scope.selected_sources.values() if isinstance(src, Scope))]
    return any(_reads_entity_scope(planner, c) for c in children)


def _reads_entity_table(planner: _Planner, scope: Scope) -> bool:
    return any(isinstance(source, exp.Table) and planner.catalog.entity_column(source.name.lower()) is not None
               for _, source in scope.selected_sources.values())


def _feeding_problem(child: ScopeFacts) -> str | None:
    """Why a FROM-clause child cannot carry entity values up to the aggregation, or None."""
    if not child.is_select:
        return "inside a set operation"
    if child.is_aggregate:
        return "inside an aggregate below the top level (aggregates of aggregates are not supported)"
    distinct = child.scope.expression.args.get("distinct")
    if isinstance(distinct, exp.Distinct) and distinct.args.get("on") is None:
        return "inside a SELECT DISTINCT subquery"
    return None


def _row_selection(child: ScopeFacts) -> exp.Expr | None:
    """The clause of a feeding scope that picks exact rows (LIMIT, OFFSET, QUALIFY, DISTINCT ON), if any."""
    expression = child.scope.expression
    for key in ("limit", "offset", "qualify"):
        node = expression.args.get(key)
        if node is not None:
            return node
    distinct = expression.args.get("distinct")
    if isinstance(distinct, exp.Distinct) and distinct.args.get("on") is not None:
        return distinct
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
    """The top-level aggregation over entity data: safe, simple, linear aggregates only; no DISTINCT, no windows."""
    select = root.scope.expression
    if select.args.get("distinct") is not None and not partition_distinct(select):
        planner.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD,
                       "SELECT DISTINCT over an aggregation of entity data is supported only when every output "
                       "column is a key or a window partitioned by exactly those keys (an aggregate of aggregates, "
                       "`SELECT DISTINCT region, avg(count(*)) OVER (PARTITION BY region) ... GROUP BY region, "
                       "district`); otherwise GROUP BY the columns", select)
    for window in root.windows:
        if select.args.get("qualify") is not None:
            planner.refuse(F.WINDOW_IN_AGGREGATE_QUERY,
                           "window functions over an aggregation of entity data cannot be combined with QUALIFY "
                           "(it selects groups by a value computed across groups); use HAVING, or ORDER BY and LIMIT",
                           window)
        elif window.find_ancestor(exp.Select) is not select or window.find_ancestor(exp.Window) is not None or \
                window.find_ancestor(exp.Order) is not None:
            planner.refuse(F.WINDOW_IN_AGGREGATE_QUERY,
                           "a window function over an aggregation of entity data may only stand in its SELECT list "
                           "(ORDER BY its output name), not nested in another window, a subquery or ORDER BY",
                           window)
    feeding = {id(scope): scope for instance in planner.plan.instances for scope, _ in instance.path[1:]}
    for scope in feeding.values():
        for window in planner.lineage.facts(scope).windows:
            planner.refuse(F.WINDOW_IN_AGGREGATE_QUERY,
                           "window functions in a subquery feeding an aggregation of entity data compute across "
                           "groups, including groups that output control later suppresses", window)
    for aggregate in root.aggregates:
        if not isinstance(aggregate, exp.Count) and any(
                per_entity_value(planner.lineage, root.scope, column)
                for column in aggregate.find_all(exp.Column)):
            planner.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD,
                           "a per-entity aggregate may be used by the outer query only as a group key, in predicates "
                           "or in count(...); aggregate the base column directly in one aggregation instead",
                           aggregate)
            continue
        problem = _aggregate_problem(aggregate, root, planner)
        if problem is not None:
            planner.refuse(problem[0], problem[1], aggregate)


def partition_distinct(select: exp.Expr) -> bool:
    """Whether a SELECT DISTINCT over an aggregation only merges rows that are equal by construction: every output
    is a key without aggregates, or made of windows (no ORDER BY, no frame) partitioned by exactly those keys, with
    every column inside a window; no DISTINCT ON, LIMIT, OFFSET or grouping sets (sql_nested.py's form)."""
    distinct = select.args.get("distinct")
    group = select.args.get("group")
    if not isinstance(select, exp.Select) or not isinstance(distinct, exp.Distinct) or distinct.args.get("on") or \
            select.args.get("limit") is not None or select.args.get("offset") is not None or \
            (group is not None and any(v for arg, v in group.args.items() if arg != "expressions")):
        return False
    keys = {p.unalias().sql().lower() for p in select.expressions if p.find(exp.Window) is None}
    for projection in select.expressions:
        body = projection.unalias()
        if body.find(exp.Window) is None:
            if body.find(exp.AggFunc) is not None:
                return False
            continue
        if any(c.find_ancestor(exp.Window) is None for c in body.find_all(exp.Column)) or \
                any(a.find_ancestor(exp.Window) is None for a in body.find_all(exp.AggFunc)):
            return False
        for window in body.find_all(exp.Window):
            partition = {p.sql().lower() for p in window.args.get("partition_by") or []}
            if window.args.get("order") is not None or window.args.get("spec") is not None or partition != keys:
                return False
    return True


def _aggregate_problem(aggregate: exp.Expr, root: ScopeFacts, planner: _Planner) -> tuple[str, str] | None:
    """Why one aggregate of the top-level aggregation over entity data is refused, or None."""
    name = A.function_name(aggregate)
    if not A.is_safe_aggregate(aggregate):
        return (F.UNSAFE_AGGREGATE_OVER_ENTITY_DATA,
                f"{name}() returns one row's value; over entity data only count, sum, avg, stddev and variance are "
                "allowed")
    if isinstance(aggregate, NON_LINEAR_AGGREGATES):
        return (F.COMPLEX_AGGREGATE_OVER_ENTITY_DATA,
                f"{name}() over entity data is not a sum of per-entity values (covariances and correlations are "
                "sums of products, a weighted sum in disguise); release sum, count, avg or stddev of each column")
    if aggregate in root.complex_aggregates:
        return (F.COMPLEX_AGGREGATE_OVER_ENTITY_DATA,
                f"the argument of {name}() over entity data must be plain arithmetic (+, -, *, / by constants, "
                "CAST, COALESCE) in which protected columns are only scaled by constants: conditions, CASE, "
                "functions and per-row weights inside an aggregate can single out rows; use FILTER (WHERE ...) "
                "instead")
    distinct = aggregate.this if isinstance(aggregate, (exp.Count, *_VALUE_AGGREGATES)) else None
    if isinstance(distinct, exp.Distinct):
        if isinstance(aggregate, _VALUE_AGGREGATES):
            return (F.COMPLEX_AGGREGATE_OVER_ENTITY_DATA,
                    f"{name}(DISTINCT ...) over entity data sums distinct values, not entities' values; drop "
                    "DISTINCT")
        if not _counts_entities(distinct.expressions[0], root, planner):
            return (F.COMPLEX_AGGREGATE_OVER_ENTITY_DATA,
                    "count(DISTINCT ...) over entity data may only count identifiers (the entities of the one "
                    "population the query reads, or a join column): a count of distinct other values is not a sum "
                    "of per-entity values")
    return None


def _counts_entities(argument: exp.Expr, root: ScopeFacts, planner: _Planner) -> bool:
    """Whether `count(DISTINCT argument)` counts identifiers: the entities of the only population the aggregation
    reads (the size of the entity set), or a `join` column (identifiers: audited like a count of rows)."""
    origins, _, bare = planner.lineage.expression_origins(argument, root)
    if not bare:
        return False
    origin = next(iter(origins))
    policy = planner.catalog.tables.get(origin.table)
    if policy is None:
        return False
    if planner.catalog.is_entity(origin.table, origin.column):
        return len(planner.plan.populations) == 1 and policy.entity_population in planner.plan.populations
    return planner.catalog.constraint(origin.table, origin.column) == Constraint.JOIN
