"""Column lineage over sqlglot scopes: for every column reference, which base columns it derives from and how
it is used (output, group key, aggregate argument, predicate, equi-join, condition, filter, window, ...).

`sqlglot.lineage` only traces output columns, so this walks every clause of every scope itself. Each scope's
output columns are summarised as `Derived` values (the base columns they carry, whether they carry one of them
unchanged, and whether they are "simple" arithmetic). A reference to a derived column in an outer scope is
checked against the base columns it carries, in the role of the outer reference. Which base columns an expression
carries, and its degree in protected columns, are answered by sql_origins.py (the `Origins` base class).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, traverse_scope, walk_in_scope

from policy import sql_allowlist as A
from policy import sql_findings as F
from policy.sql_conditional import branches
from policy.sql_findings import Finding, Positions
from policy.sql_model import ColumnUse, Derived, EquiJoin, Origin, Role, ScopeFacts, aggregate_arguments
from policy.sql_origins import Origins
from policy.sql_resolve import Catalog
from policy.sql_types import cast_can_fail, implicitly_cast_text

DEFAULT_WORK_BUDGET = 200_000


class TooComplex(Exception):
    """The analysis spent its work budget: the query is refused as too complex (never a hang)."""


class WorkBudget:
    """A count of analysis steps; spending past the limit raises TooComplex."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0

    def spend(self, units: int = 1) -> None:
        """Count `units` steps; raise TooComplex past the limit."""
        self.spent += units
        if self.spent > self.limit:
            raise TooComplex(f"analysis took more than {self.limit} steps")


class Clause(StrEnum):
    """The clause of a SELECT an expression sits in."""

    SELECT = "select"
    WHERE = "where"
    JOIN_ON = "join_on"
    GROUP = "group"
    HAVING = "having"
    QUALIFY = "qualify"
    ORDER = "order"


@dataclass(frozen=True)
class _Ctx:
    clause: Clause
    agg: str | None = None  # "safe" | "unsafe"
    in_condition: bool = False
    in_filter: bool = False
    in_window: bool = False
    distinct_bare: bool = False
    equi: bool = False


_COMPARISONS = (exp.EQ, exp.NEQ, exp.NullSafeEQ, exp.NullSafeNEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In,
                exp.Between)


class Lineage(Origins):
    """Lineage of a qualified, allowlisted query: scopes, column uses, equi-joins and problems found."""

    def __init__(self, tree: exp.Query, catalog: Catalog, positions: Positions, *,
                 budget: WorkBudget | None = None) -> None:
        self.catalog = catalog
        self.positions = positions
        self.uses: list[ColumnUse] = []
        self.equi_joins: list[EquiJoin] = []
        self.problems: list[Finding] = []
        self.error_prone: list[tuple[exp.Expr, frozenset[Origin], str]] = []
        self._facts: dict[int, ScopeFacts] = {}
        self._origins: dict[tuple[int, int], tuple[frozenset[Origin], bool]] = {}
        self._degrees: dict[tuple[int, int], int] = {}
        self.budget = budget or WorkBudget(DEFAULT_WORK_BUDGET)
        scopes = traverse_scope(tree)
        self.root_scope = scopes[-1]
        self._by_expression = {id(s.expression): s for s in scopes}
        self._outputs = self._output_scope_ids(self.root_scope)
        for scope in scopes:
            self.facts(scope)
        self.scopes = [self._facts[id(s)] for s in scopes]
        self.root = self._facts[id(self.root_scope)]

    # --- scopes ------------------------------------------------------------------------------------
    def _output_scope_ids(self, scope: Scope) -> set[int]:
        ids = {id(scope)}
        for branch in scope.set_operation_scopes:
            ids |= self._output_scope_ids(branch)
        return ids

    def output_scopes(self) -> list[ScopeFacts]:
        """The SELECTs whose rows are the final result (the root, or every branch of a root set operation)."""
        return [f for f in self.scopes if id(f.scope) in self._outputs and f.is_select]

    def enclosing(self, node: exp.Expr) -> ScopeFacts | None:
        """The facts of the SELECT scope a node is evaluated in (None when not found)."""
        select = node.find_ancestor(exp.Select)
        scope = self._by_expression.get(id(select)) if select is not None else None
        return self.facts(scope) if scope is not None else None

    def facts(self, scope: Scope) -> ScopeFacts:
        """The facts of a scope, computed on first use."""
        known = self._facts.get(id(scope))
        if known is not None:
            return known
        expression = scope.expression
        if isinstance(expression, exp.Select):
            facts = ScopeFacts(scope, True, _is_aggregate_select(expression), id(scope) in self._outputs)
            self._facts[id(scope)] = facts
            self._walk_select(facts)
        else:
            facts = ScopeFacts(scope, False, False, id(scope) in self._outputs)
            self._facts[id(scope)] = facts
            self._walk_set_operation(facts)
        return facts

    def _walk_set_operation(self, facts: ScopeFacts) -> None:
        branches = [self.facts(s) for s in facts.scope.set_operation_scopes]
        if len(branches) != 2 or len(branches[0].outputs) != len(branches[1].outputs):
            self.problems.append(self.positions.finding(
                F.CONSTRUCT_NOT_ALLOWED, "set operation branches must have the same number of columns",
                facts.scope.expression))
            return
        left, right = branches
        facts.outputs = [Derived(a.name, a.origins | b.origins, a.simple and b.simple, a.pure and b.pure)
                         for a, b in zip(left.outputs, right.outputs, strict=True)]
        order = facts.scope.expression.args.get("order")
        for ordered in order.expressions if order else []:
            for column in ordered.find_all(exp.Column):
                derived = facts.output(column.name)
                for origin in derived.origins if derived else ():
                    self.uses.append(ColumnUse(origin.table, origin.column, Role.ORDER_BY, column))

    def _walk_select(self, facts: ScopeFacts) -> None:
        select = facts.scope.expression
        assert isinstance(select, exp.Select)
        for projection in select.expressions:
            self._visit(projection, _Ctx(Clause.SELECT), facts)
        for join in select.args.get("joins") or []:
            if join.args.get("on") is not None:
                self._visit_predicate(join.args["on"], Clause.JOIN_ON, facts)
            if join.args.get("using"):
                self.problems.append(self.positions.finding(
                    F.CONSTRUCT_NOT_ALLOWED, "JOIN ... USING could not be rewritten to ON", join))
        where = select.args.get("where")
        if where is not None:
            self._visit_predicate(where.this, Clause.WHERE, facts)
        group = select.args.get("group")
        for key in group.expressions if group else []:
            self._visit(key, _Ctx(Clause.GROUP), facts)
        for clause, key in ((Clause.HAVING, "having"), (Clause.QUALIFY, "qualify")):
            node = select.args.get(key)
            if node is not None:
                self._visit(node.this, _Ctx(clause), facts)
        order = select.args.get("order")
        for ordered in order.expressions if order else []:
            self._visit(ordered.this, _Ctx(Clause.ORDER), facts)
        distinct = select.args.get("distinct")
        if distinct is not None and distinct.args.get("on") is not None:
            self._visit(distinct.args["on"], _Ctx(Clause.ORDER), facts)
        for projection in select.expressions:
            value = projection.unalias()
            origins, simple, bare = self.expression_origins(value, facts)
            pure = bare and self.is_pure(value, facts)
            if facts.is_aggregate and not (bare and any(self.catalog.is_entity(o.table, o.column) for o in origins)):
                # an aggregate's outputs are released figures; an entity column output by a per-entity aggregation
                # (its group key) stays an entity column, checked where it is used
                origins, simple, pure = frozenset(), True, False
            elif not bare:
                origins = frozenset(Origin(o.table, o.column, False) for o in origins)
            facts.outputs.append(Derived(projection.alias_or_name, origins, simple, pure))

    # --- expressions -------------------------------------------------------------------------------
    def _visit_predicate(self, condition: exp.Expr, clause: Clause, facts: ScopeFacts) -> None:
        """Split a WHERE / ON condition into conjuncts and recognise equi-joins among them."""
        for conjunct in _conjuncts(condition):
            if isinstance(conjunct, exp.EQ):
                left, right = conjunct.this.unnest(), conjunct.expression.unnest()
                if isinstance(left, exp.Column) and isinstance(right, exp.Column) and left.table != right.table:
                    self._implicit_cast(conjunct, facts)
                    ctx = _Ctx(clause, equi=True)
                    self.equi_joins.append(EquiJoin(self._column(left, ctx, facts), self._column(right, ctx, facts),
                                                    conjunct, self.is_pure(left, facts), self.is_pure(right, facts)))
                    continue
            if isinstance(conjunct, exp.In) and conjunct.args.get("query") and not conjunct.expressions:
                probe = conjunct.this.unnest()
                if isinstance(probe, exp.Column):
                    self._implicit_cast(conjunct, facts)
                    ctx = _Ctx(clause, equi=True)
                    left = self._column(probe, ctx, facts)
                    query = conjunct.args["query"].unnest()
                    right = self._subquery(query, ctx, facts, conjunct)
                    self.equi_joins.append(EquiJoin(left, right, conjunct, self.is_pure(probe, facts),
                                                    self._pure_subquery(query)))
                    continue
            self._visit(conjunct, _Ctx(clause), facts)

    def _visit(self, node: exp.Expr, ctx: _Ctx, facts: ScopeFacts) -> None:
        self.budget.spend()
        if isinstance(node, exp.Column):
            self._column(node, ctx, facts)
            return
        if isinstance(node, exp.Subquery | exp.Select | exp.SetOperation):
            self._subquery(node.unnest(), ctx, facts, node)
            return
        if isinstance(node, exp.Exists):
            self._subquery(node.this.unnest(), ctx, facts, node, exists=True)
            return
        if isinstance(node, exp.Window):
            facts.windows.append(node)
            if facts.is_aggregate and not ctx.in_window and ctx.agg is None:
                # a window over aggregated rows: its arguments, partition and order are group keys and aggregates
                for child in [*node.this.iter_expressions(), *(node.args.get("partition_by") or []),
                              node.args.get("order")]:
                    if child is not None:
                        self._visit(child, ctx, facts)
                return
            self._children(node, replace(ctx, in_window=True), facts)
            return
        if isinstance(node, exp.Filter):
            self._visit(node.this, ctx, facts)
            self._visit(node.expression, replace(ctx, agg="safe", in_filter=True), facts)
            return
        if A.is_aggregate(node) and not ctx.in_window:
            self._aggregate(node, ctx, facts)
            return
        if isinstance(node, A.ERROR_PRONE_NODES):
            self._error_prone(node, facts)
        if isinstance(node, _COMPARISONS):
            self._implicit_cast(node, facts)
        if isinstance(node, exp.Case):
            condition = replace(ctx, in_condition=True)
            if node.this is not None:
                self._visit(node.this, condition, facts)
            for branch in node.args.get("ifs") or []:
                self._visit(branch.this, condition, facts)
                self._visit(branch.args["true"], ctx, facts)
            if node.args.get("default") is not None:
                self._visit(node.args["default"], ctx, facts)
            return
        if isinstance(node, exp.If):
            self._visit(node.this, replace(ctx, in_condition=True), facts)
            for key in ("true", "false"):
                if node.args.get(key) is not None:
                    self._visit(node.args[key], ctx, facts)
            return
        if isinstance(node, A.PREDICATE_NODES):
            ctx = replace(ctx, in_condition=True)
        self._children(node, ctx, facts)

    def _children(self, node: exp.Expr, ctx: _Ctx, facts: ScopeFacts) -> None:
        for child in node.iter_expressions():
            self._visit(child, ctx, facts)

    def _aggregate(self, node: exp.Expr, ctx: _Ctx, facts: ScopeFacts) -> None:
        facts.aggregates.append(node)
        for column in walk_in_scope(node):
            if isinstance(column, exp.Column) and column.table and column.table not in facts.scope.sources:
                self.problems.append(self.positions.finding(
                    F.CONSTRUCT_NOT_ALLOWED, f"{A.function_name(node)}() over {column.sql(dialect='duckdb')} "
                    "aggregates a column of an outer query from inside a subquery; aggregate it where it is "
                    "read", node))
                break
        inner = replace(ctx, agg="safe" if A.is_safe_aggregate(node) else "unsafe", in_condition=False)
        if isinstance(node, exp.CountIf):
            inner = replace(inner, in_condition=True)
        conditional = branches(node)
        values = [v for _, v in conditional if v is not None] if conditional is not None else \
            aggregate_arguments(node)
        if not all(self.expression_origins(v, facts)[1] for v in values):
            facts.complex_aggregates.append(node)
        distinct = node.this if isinstance(node, exp.Count) else None
        if isinstance(distinct, exp.Distinct):
            for argument in distinct.expressions:
                if isinstance(argument, exp.Column):
                    self._column(argument, replace(inner, distinct_bare=True), facts)
                else:
                    self._visit(argument, inner, facts)
            return
        self._children(node, inner, facts)

    def _role(self, ctx: _Ctx, facts: ScopeFacts) -> Role:
        if ctx.in_window:
            return Role.WINDOW
        if ctx.in_filter:
            return Role.FILTER_CONDITION
        if ctx.agg == "unsafe":
            return Role.UNSAFE_AGGREGATE_ARG
        if ctx.agg == "safe":
            if ctx.in_condition:
                return Role.AGGREGATE_CONDITION
            return Role.COUNT_DISTINCT if ctx.distinct_bare else Role.AGGREGATE_ARG
        if ctx.equi:
            return Role.EQUI_JOIN
        if ctx.clause in (Clause.WHERE, Clause.JOIN_ON, Clause.HAVING, Clause.QUALIFY):
            return Role.PREDICATE
        if ctx.clause == Clause.GROUP:
            return Role.GROUP_KEY
        if facts.is_aggregate:
            return Role.GROUP_OUTPUT
        if ctx.clause == Clause.ORDER:
            return Role.ORDER_BY
        if ctx.in_condition:
            return Role.CASE_CONDITION
        return Role.OUTPUT if facts.is_output else Role.PASSTHROUGH

    def _record(self, origins: frozenset[Origin], role: Role, node: exp.Expr) -> None:
        compared = role in (Role.PREDICATE, Role.CASE_CONDITION, Role.AGGREGATE_CONDITION,
                            Role.FILTER_CONDITION) and _compared_with_value(
            node)
        for origin in origins:
            actual = role
            if role == Role.COUNT_DISTINCT and not origin.bare:
                actual = Role.AGGREGATE_ARG
            elif role == Role.EQUI_JOIN and not origin.bare:
                actual = Role.PREDICATE
            self.uses.append(ColumnUse(origin.table, origin.column, actual, node, compared))

    def _column(self, column: exp.Column, ctx: _Ctx, facts: ScopeFacts) -> frozenset[Origin]:
        if not column.table:
            return self._alias_reference(column, ctx, facts)
        origins = self.resolve(facts.scope, column.table, column.name)
        if origins is None:
            self.problems.append(self.positions.finding(
                F.UNKNOWN_COLUMN, f"cannot resolve column {column.sql(dialect='duckdb')}", column))
            return frozenset()
        self._record(origins, self._role(ctx, facts), column)
        return origins

    def _alias_reference(self, column: exp.Column, ctx: _Ctx, facts: ScopeFacts) -> frozenset[Origin]:
        """An unqualified name: ORDER BY an output alias, or a whole-row reference (refused)."""
        select = facts.scope.expression
        if ctx.clause == Clause.ORDER and isinstance(select, exp.Select):
            for projection in select.expressions:
                if projection.alias_or_name == column.name:
                    if facts.is_aggregate:
                        return frozenset()  # the projection was checked where it stands
                    origins = self.expression_origins(projection.unalias(), facts)[0]
                    self._record(origins, self._role(ctx, facts), column)
                    return origins
        if self._is_source_name(facts.scope, column.name):
            self.problems.append(self.positions.finding(
                F.WHOLE_ROW_REFERENCE_NOT_ALLOWED,
                f"{column.name} refers to a whole row; name the columns instead", column))
        else:
            self.problems.append(self.positions.finding(
                F.UNKNOWN_COLUMN, f"cannot resolve column {column.name}", column))
        return frozenset()

    def _is_source_name(self, scope: Scope | None, name: str) -> bool:
        while scope is not None:
            if name in scope.sources:
                return True
            scope = scope.parent
        return False

    def _subquery(self, query: exp.Expr, ctx: _Ctx, facts: ScopeFacts, node: exp.Expr, *,
                  exists: bool = False) -> frozenset[Origin]:
        scope = self._by_expression.get(id(query))
        if scope is None:
            self.problems.append(self.positions.finding(F.CONSTRUCT_NOT_ALLOWED, "unrecognised subquery", node))
            return frozenset()
        child = self.facts(scope)
        if exists:
            return frozenset()
        origins = frozenset(o for derived in child.outputs for o in derived.origins)
        self._record(origins, self._role(ctx, facts), node)
        return origins

    # --- error channels ----------------------------------------------------------------------------
    def _error_prone(self, node: exp.Expr, facts: ScopeFacts) -> None:
        """CAST to a non-text type, `//` and `%` raise errors that can carry a protected value."""
        if isinstance(node, exp.TryCast) or (isinstance(node, exp.Cast) and not cast_can_fail(node)):
            return
        divisor = node.args.get("expression")
        if isinstance(node, exp.IntDiv | exp.Mod) and isinstance(divisor, exp.Literal) and not (
                divisor.is_string) and float(divisor.name or 0) != 0:
            return
        origins = self.expression_origins(node, facts)[0]
        if origins:
            self.error_prone.append((node, origins, f"{type(node).__name__.upper()} can fail"))

    def _implicit_cast(self, node: exp.Expr, facts: ScopeFacts) -> None:
        """Comparing a text value with a non-text one makes DuckDB cast the text, and a failed cast shows it."""
        for operand in implicitly_cast_text(node):
            origins = self.expression_origins(operand, facts)[0]
            if origins:
                self.error_prone.append((node, origins, "comparing text with a non-text value casts the text"))


def _is_aggregate_select(select: exp.Select) -> bool:
    if select.args.get("group") is not None or select.args.get("having") is not None:
        return True
    for node in walk_in_scope(select, prune=lambda n: isinstance(n, exp.Window)):
        if A.is_aggregate(node) and not isinstance(node.parent, exp.Window):
            return True
    return False


def _conjuncts(condition: exp.Expr) -> list[exp.Expr]:
    out: list[exp.Expr] = []
    stack = [condition]
    while stack:
        node = stack.pop()
        while isinstance(node, exp.Paren):
            node = node.this
        if isinstance(node, exp.And):
            stack.extend([node.expression, node.this])
        else:
            out.append(node)
    return out


def _compared_with_value(node: exp.Expr) -> bool:
    """Whether the nearest comparison above `node` involves a literal or a parameter."""
    current = node.parent
    while current is not None and not isinstance(current, exp.Query):
        if isinstance(current, A.PREDICATE_NODES):
            return any(isinstance(n, exp.Literal | exp.Placeholder) for n in current.walk())
        current = current.parent
    return False
