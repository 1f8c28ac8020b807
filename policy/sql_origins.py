"""Origins of expressions: which base columns a value carries, whether it is simple arithmetic or a bare column, and
its polynomial degree in protected columns, resolved through CTEs, derived tables, subqueries and set operations.

`Origins` is the base class of `sql_lineage.Lineage`, which walks the scopes and fills the per-scope facts these
queries read; every answer is memoised per (node, scope) and paid for from the lineage's work budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from policy.constraints import Constraint
from policy.sql_model import Derived, Origin, ScopeFacts
from policy.sql_resolve import Catalog

if TYPE_CHECKING:
    from policy.sql_lineage import WorkBudget

MAX_PROTECTED_DEGREE = 2  # price * (1 - discount): a product of two protected values at most (like a variance)
_SIMPLE_NODES = (exp.Column, exp.Identifier, exp.Literal, exp.Null, exp.Boolean, exp.Paren, exp.Neg, exp.Add,
                 exp.Sub, exp.Mul, exp.Div, exp.Cast, exp.TryCast, exp.DataType, exp.DataTypeParam,
                 exp.Coalesce, exp.Placeholder, exp.Star, exp.Distinct)


class Origins:
    """Origin queries over a lineage's scopes (the attributes are set by `sql_lineage.Lineage`)."""

    catalog: Catalog
    budget: WorkBudget
    _by_expression: dict[int, Scope]
    _origins: dict[tuple[int, int], tuple[frozenset[Origin], bool]]
    _degrees: dict[tuple[int, int], int]

    def facts(self, scope: Scope) -> ScopeFacts:
        """The facts of a scope (computed by the lineage walk)."""
        raise NotImplementedError

    # --- resolution --------------------------------------------------------------------------------
    def resolve(self, scope: Scope, alias: str, name: str) -> frozenset[Origin] | None:
        """The base columns `alias.name` carries, looking outwards for correlated references."""
        current: Scope | None = scope
        while current is not None:
            source = current.sources.get(alias)
            if isinstance(source, exp.Table):
                table = source.name.lower()
                column = self.catalog.column(table, name) if table in self.catalog.tables else None
                return frozenset({Origin(table, column.name.lower(), True)}) if column else None
            if isinstance(source, Scope):
                derived = self.facts(source).output(name)
                return derived.origins if derived else None
            current = current.parent
        return None

    def expression_origins(self, node: exp.Expr, facts: ScopeFacts) -> tuple[frozenset[Origin], bool, bool]:
        """(base columns, simple, bare) of an expression evaluated in `facts`' scope.

        Computed bottom-up and memoised per (node, scope), so the cost is linear in the tree (a product of many
        factors once took exponential time).
        """
        origins, simple = self._origins_of(node, facts)
        bare = isinstance(node, exp.Column) and len(origins) == 1 and next(iter(origins)).bare
        return origins, simple, bare

    def _origins_of(self, node: exp.Expr, facts: ScopeFacts) -> tuple[frozenset[Origin], bool]:
        key = (id(node), id(facts.scope))
        known = self._origins.get(key)
        if known is not None:
            return known
        self.budget.spend()
        result: tuple[frozenset[Origin], bool]
        if isinstance(node, exp.Query):
            scope = self._by_expression.get(id(node)) or self._by_expression.get(id(node.unnest()))
            carried = frozenset(o for d in self.facts(scope).outputs for o in d.origins) if scope else frozenset()
            result = (carried, False)
        elif isinstance(node, exp.Column) and node.table:
            resolved = self._derived(facts.scope, node.table, node.name)
            result = (resolved.origins, resolved.simple) if resolved is not None else (frozenset(), True)
        else:
            origins: set[Origin] = set()
            simple = isinstance(node, _SIMPLE_NODES) and not (
                isinstance(node, exp.Div) and _has_column(node.expression))
            for child in node.iter_expressions():
                child_origins, child_simple = self._origins_of(child, facts)
                origins.update(child_origins)
                simple = simple and child_simple
            if simple and isinstance(node, exp.Mul) and self._weights_protected(node, facts):
                simple = False
            result = (frozenset(origins), simple)
        self._origins[key] = result
        return result

    def is_pure(self, node: exp.Expr, facts: ScopeFacts) -> bool:
        """Whether every value of `node` is a base column's value unchanged (a bare column, carried bare)."""
        if not (isinstance(node, exp.Column) and node.table):
            return False
        resolved = self._derived(facts.scope, node.table, node.name)
        return resolved is not None and resolved.pure and len(resolved.origins) == 1

    def _pure_subquery(self, query: exp.Expr) -> bool:
        scope = self._by_expression.get(id(query))
        outputs = self.facts(scope).outputs if scope is not None else []
        return len(outputs) == 1 and outputs[0].pure and len(outputs[0].origins) == 1

    def _weights_protected(self, product: exp.Mul, facts: ScopeFacts) -> bool:
        """Whether a product multiplies a protected (non-open) value by another column (a row weight).

        A product of `aggregate` columns only (`price * (1 - discount)` with both protected) is no weight: each
        monomial is a protected value of its own, released and audited as a measure of its own."""
        left, right = product.this, product.expression
        if not (_has_column(left) and _has_column(right)):
            return False
        constraints = {self.constraint_of(o) for side in (left, right) for o in self.expression_origins(side, facts)[0]}
        if constraints == {Constraint.AGGREGATE}:
            return self.protected_degree(product, facts) > MAX_PROTECTED_DEGREE
        return any(c != Constraint.OPEN for c in constraints)

    def protected_degree(self, node: exp.Expr, facts: ScopeFacts) -> int:
        """The polynomial degree of `node` in protected (non-open) base columns, traced through row-level scopes."""
        key = (id(node), -id(facts.scope))
        known = self._degrees.get(key)
        if known is not None:
            return known
        self.budget.spend()
        degree = 0
        if isinstance(node, exp.Column) and node.table:
            degree = self._column_degree(facts.scope, node.table, node.name)
        elif isinstance(node, exp.Mul):
            degree = self.protected_degree(node.this, facts) + self.protected_degree(node.expression, facts)
        elif isinstance(node, exp.Div):
            degree = self.protected_degree(node.this, facts)
        elif not isinstance(node, exp.Query):
            degree = max((self.protected_degree(c, facts) for c in node.iter_expressions()), default=0)
        self._degrees[key] = degree
        return degree

    def _column_degree(self, scope: Scope, alias: str, name: str) -> int:
        current: Scope | None = scope
        while current is not None:
            source = current.sources.get(alias)
            if isinstance(source, exp.Table):
                column = self.catalog.column(source.name.lower(), name)
                return 1 if column is not None and self.catalog.constraint(
                    source.name.lower(), column.name.lower()) != Constraint.OPEN else 0
            if isinstance(source, Scope):
                return self._scope_degree(source, name)
            current = current.parent
        return 0

    def _scope_degree(self, scope: Scope, name: str) -> int:
        expression = scope.expression
        if not isinstance(expression, exp.Select):
            return max((self._scope_degree(b, name) for b in scope.set_operation_scopes), default=0)
        child = self.facts(scope)
        if child.is_aggregate:
            return 0  # an aggregate's outputs are released figures, not row values
        for projection in expression.expressions:
            if projection.alias_or_name.lower() == name.lower():
                return self.protected_degree(projection.unalias(), child)
        return 0

    def _derived(self, scope: Scope, alias: str, name: str) -> Derived | None:
        current: Scope | None = scope
        while current is not None:
            source = current.sources.get(alias)
            if isinstance(source, exp.Table):
                origins = self.resolve(current, alias, name)
                return Derived(name, origins, True, True) if origins is not None else None
            if isinstance(source, Scope):
                return self.facts(source).output(name)
            current = current.parent
        return None

    def constraint_of(self, origin: Origin) -> Constraint:
        """The effective constraint of an origin's base column."""
        return self.catalog.constraint(origin.table, origin.column)


def _has_column(node: exp.Expr) -> bool:
    return any(isinstance(n, exp.Column | exp.Query) for n in node.walk())
