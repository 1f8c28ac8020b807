"""The release plan's components: which aggregates a query's cells are made of, and what each releases.

For the top-level aggregation (or one branch / source of a combined query), every aggregate is one component (one per
branch of a conditional aggregate, sql_conditional.py) with its contributing condition (FILTER, CASE branch, argument
not NULL), its ledger measures (the argument expanded into monomials of base columns, traced through CTEs and derived
tables) and its dominance statistics (each numeric base column, carried up unchanged). The rewrite (sql_rewrite.py)
turns the conditions and statistics into helper columns; sql_release.py holds the resulting plan.
"""

from __future__ import annotations

import dataclasses

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, walk_in_scope

from policy.constraints import Constraint
from policy.sql_conditional import branches
from policy.sql_lineage import Lineage, TooComplex
from policy.sql_model import ScopeFacts, aggregate_arguments
from policy.sql_passthrough import carry, projections, source_of
from policy.sql_release import Cell, Component, ReleasePlan, Stat, measures_of
from policy.sql_shell import ShellLayout
from policy.sql_types import NUMERIC_TYPES

MAX_MONOMIALS = 64
_STDDEV = (exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance, exp.VariancePop)
_NUMERIC_TYPE_NAMES = ("TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                       "UINTEGER", "UBIGINT", "FLOAT", "REAL", "DOUBLE", "DECIMAL", "NUMERIC")

Monomial = tuple[str, ...]

class Components:
    """Components, conditions, measures and dominance statistics of the top-level aggregation (or of one branch of a
    set operation of aggregations, `root`)."""

    def __init__(self, lineage: Lineage, passthrough: dict[tuple[int, exp.Expr], str],
                 root: ScopeFacts | None = None) -> None:
        self.lineage = lineage
        self.root = root if root is not None else lineage.root
        self.passthrough = passthrough
        self.conditions: list[exp.Expr] = []  # structural equality dedupes them
        self.stat_values: list[tuple[exp.Expr, int]] = []  # (base column reference, condition index)
        self._stats: list[Stat] = []
        self._monomials: dict[tuple[int, int], frozenset[Monomial]] = {}

    def build(self, populations: list[str], shell: ShellLayout | None) -> ReleasePlan:
        """The release plan of the aggregation's cells (helper-column layout of its own instances)."""
        root = self.root
        select = root.scope.expression
        components: list[Component] = []
        by_node: dict[int, list[int]] = {}
        for aggregate in root.aggregates:
            parts = self._components(aggregate, len(components))
            by_node[id(aggregate)] = list(range(len(components), len(components) + len(parts)))
            components += parts
        cells = []
        for index, projection in enumerate(select.expressions):
            used = sorted({c for n in walk_in_scope(projection) if id(n) in by_node for c in by_node[id(n)]})
            if used:
                cells.append(Cell(index, projection.alias_or_name, tuple(used)))
        columns = len(select.expressions)
        for j, (name, node) in enumerate(shell.hidden if shell is not None else []):
            used = sorted({c for n in walk_in_scope(node) if id(n) in by_node for c in by_node[id(n)]}) \
                if node is not None else []
            if used:
                cells.append(Cell(columns + j, name, tuple(used)))
        return ReleasePlan(instances=tuple(populations), conditions=len(self.conditions),
                           components=tuple(components), cells=tuple(cells), stats=tuple(self._stats),
                           columns=columns, hidden=tuple(n for n, _ in shell.hidden) if shell is not None else (),
                           shell=shell.shell(columns, {c.index for c in cells}) if shell is not None else None)

    def _components(self, aggregate: exp.Expr, start: int) -> list[Component]:
        """One component per branch of a conditional aggregate (sql_conditional.py), else one."""
        conditional = branches(aggregate)
        if conditional is None:
            return [self._component(aggregate, start)]
        out: list[Component] = []
        for condition, value in conditional:
            out.append(self._component(aggregate, start + len(out), branch=condition,
                                       arguments=[value] if value is not None else []))
        return out

    def _component(self, aggregate: exp.Expr, index: int, *, branch: exp.Expr | None = None,
                   arguments: list[exp.Expr] | None = None) -> Component:
        filter_ = _filter_of(aggregate)
        if arguments is None:
            arguments = aggregate_arguments(aggregate)
        distinct = isinstance(aggregate, exp.Count) and isinstance(aggregate.this, exp.Distinct)
        parts = [filter_] if filter_ is not None else []
        if branch is not None:
            parts.append(exp.paren(branch.copy(), copy=False))
        strict = self._compares_protected([filter_, branch])
        component = self._component_of(aggregate, index, parts, arguments, distinct)
        return dataclasses.replace(component, strict=True) if strict else component

    def _compares_protected(self, conditions: list[exp.Expr | None]) -> bool:
        """Whether a FILTER or CASE condition (as found in the aggregate: columns resolvable in the root scope)
        reads an `aggregate` column."""
        root = self.root
        for node in conditions:
            if node is None:
                continue
            origins, _, _ = self.lineage.expression_origins(node, root)
            if any(self.lineage.constraint_of(o) == Constraint.AGGREGATE for o in origins):
                return True
        return False

    def _component_of(self, aggregate: exp.Expr, index: int, parts: list[exp.Expr], arguments: list[exp.Expr],
                      distinct: bool) -> Component:
        if not distinct:
            parts += [exp.not_(exp.Is(this=exp.paren(a.copy(), copy=False), expression=exp.Null()))
                      for a in arguments]
        condition = self._condition(parts)
        if distinct:
            argument = arguments[0]
            origins, _, _ = self.lineage.expression_origins(argument, self.root)
            origin = next(iter(origins))
            if self.lineage.catalog.is_entity(origin.table, origin.column):
                return Component("entities", condition)
            return Component("rows", condition, measures_of("rows", ()))  # distinct identifiers: like rows
        if isinstance(aggregate, exp.Count | exp.CountIf):
            return Component("rows", condition, measures_of("rows", ()))
        scope = self.root.scope
        monomials = set().union(*(self._expand(a, scope) for a in arguments)) if arguments else set()
        squares: frozenset[Monomial] = frozenset()
        if isinstance(aggregate, _STDDEV):
            squares = _times(frozenset(monomials), frozenset(monomials))
        measures = measures_of("value", sorted(monomials), sorted(squares),
                               counts_rows=not isinstance(aggregate, exp.Sum))
        stats = []
        seen: set[str] = set()
        for argument in arguments:
            for label, reference in self._base_columns(argument, scope):
                if label in seen:
                    continue
                seen.add(label)
                stats.append(len(self._stats))
                self._stats.append(Stat(index, label))
                self.stat_values.append((reference, condition if condition is not None else -1))
        return Component("value", condition, measures, tuple(stats))

    def _condition(self, parts: list[exp.Expr]) -> int | None:
        if not parts:
            return None
        condition = exp.and_(*parts)
        if condition not in self.conditions:
            self.conditions.append(condition)
        return self.conditions.index(condition)

    # polynomial expansion (which monomials of base columns a value is made of) ---------------------------------
    def _expand(self, node: exp.Expr, scope: Scope) -> frozenset[Monomial]:
        self.lineage.budget.spend()
        if isinstance(node, exp.Column):
            return self._expand_column(node, scope)
        if isinstance(node, exp.Literal | exp.Placeholder | exp.Null | exp.Boolean):
            return frozenset({()})
        if isinstance(node, exp.Mul):
            return _times(self._expand(node.this, scope), self._expand(node.expression, scope))
        if isinstance(node, exp.Div):
            return self._expand(node.this, scope)  # divisors are constants (anything else is refused)
        out: set[Monomial] = set()
        for child in node.iter_expressions():
            if isinstance(child, exp.DataType):
                continue
            out |= self._expand(child, scope)
        return frozenset(out)

    def _expand_column(self, column: exp.Column, scope: Scope) -> frozenset[Monomial]:
        source = source_of(scope, column.table)
        if isinstance(source, exp.Table):
            return frozenset({(f"{self.lineage.catalog.name(source.name.lower())}.{column.name.lower()}",)})
        if isinstance(source, Scope):
            key = (id(source), hash(column.name))
            known = self._monomials.get(key)
            if known is None:
                known = frozenset().union(*(self._expand(value, child)
                                            for value, child in projections(source, column.name)))
                self._monomials[key] = known
            return known
        return frozenset({()})

    # dominance: base columns, carried up unchanged --------------------------------------------------------------
    def _base_columns(self, node: exp.Expr, scope: Scope) -> list[tuple[str, exp.Expr]]:
        out: list[tuple[str, exp.Expr]] = []
        for column in [n for n in walk_in_scope(node) if isinstance(n, exp.Column) and n.table]:
            out += self._trace(column, scope)
        return out

    def _trace(self, column: exp.Column, scope: Scope) -> list[tuple[str, exp.Expr]]:
        self.lineage.budget.spend()
        source = source_of(scope, column.table)
        if isinstance(source, exp.Table):
            table = source.name.lower()
            policy = self.lineage.catalog.column(table, column.name)
            if policy is None or not policy.type.upper().startswith(_NUMERIC_TYPE_NAMES):
                return []
            return [(f"{self.lineage.catalog.name(table)}.{policy.name.lower()}", column.copy())]
        if not (isinstance(source, Scope) and isinstance(source.expression, exp.Select)) or (
                self.lineage.facts(source).is_aggregate):
            # a column of a set operation or an aggregate (of data without entities): no raw base value of the
            # entity's rows to carry up; the value itself is what each entity's rows contribute
            if column.type is not None and column.type.this in NUMERIC_TYPES:
                return [(f"{column.table}.{column.name}", column.copy())]
            return []
        out: list[tuple[str, exp.Expr]] = []
        for value, child in projections(source, column.name):
            for inner in [n for n in walk_in_scope(value) if isinstance(n, exp.Column) and n.table]:
                for label, reference in self._trace(inner, child):
                    out.append((label, carry(source, column.table, reference, self.passthrough)))
        return out


def _filter_of(aggregate: exp.Expr) -> exp.Expr | None:
    parent = aggregate.parent
    while isinstance(parent, exp.IgnoreNulls | exp.RespectNulls):
        parent = parent.parent
    if isinstance(parent, exp.Filter):
        return exp.paren(parent.expression.this.copy(), copy=False)
    return None


def _times(left: frozenset[Monomial], right: frozenset[Monomial]) -> frozenset[Monomial]:
    out = frozenset(tuple(sorted(a + b)) for a in left for b in right)
    if len(out) > MAX_MONOMIALS:
        raise TooComplex(f"an aggregate expands into more than {MAX_MONOMIALS} products of columns")
    return out
