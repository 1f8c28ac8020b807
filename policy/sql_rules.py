"""Column rules: each use of a base column, in its role, is checked against the column's constraint.

| constraint | allowed roles |
|---|---|
| open | every role |
| group | group key, group output, predicate, equi-join, condition, filter, safe aggregate argument |
| aggregate | safe aggregate argument, predicate (WHERE / ON), equi-join |
| join | equi-join with another join column, count(DISTINCT col) |
| entity column | equi-join with a join column, count(DISTINCT col); never output, compared or grouped |

A row-level query (its result is not aggregated) may reference only `open` columns, and no entity dataset.
"""

from __future__ import annotations

from sqlglot import exp

from policy import sql_findings as F
from policy.constraints import Constraint
from policy.sql_entity_scope import is_per_entity
from policy.sql_findings import Finding, Positions
from policy.sql_lineage import Lineage
from policy.sql_model import ColumnUse, Origin, Role

_R = Role
ALLOWED_ROLES: dict[Constraint, frozenset[Role]] = {
    Constraint.OPEN: frozenset(Role),
    Constraint.GROUP: frozenset({_R.GROUP_OUTPUT, _R.GROUP_KEY, _R.AGGREGATE_ARG, _R.COUNT_DISTINCT,
                                 _R.PREDICATE, _R.EQUI_JOIN, _R.CASE_CONDITION, _R.AGGREGATE_CONDITION,
                                 _R.FILTER_CONDITION, _R.PASSTHROUGH}),
    Constraint.AGGREGATE: frozenset({_R.AGGREGATE_ARG, _R.COUNT_DISTINCT, _R.PREDICATE, _R.EQUI_JOIN,
                                     _R.AGGREGATE_CONDITION, _R.FILTER_CONDITION, _R.PASSTHROUGH}),
    Constraint.JOIN: frozenset({_R.EQUI_JOIN, _R.COUNT_DISTINCT, _R.PASSTHROUGH}),
    Constraint.HIDDEN: frozenset(),
}
ENTITY_ROLES = frozenset({_R.EQUI_JOIN, _R.COUNT_DISTINCT, _R.PASSTHROUGH})

ROLE_CODES: dict[Role, str] = {
    _R.OUTPUT: F.COLUMN_NOT_ALLOWED_IN_OUTPUT,
    _R.GROUP_OUTPUT: F.COLUMN_NOT_ALLOWED_IN_OUTPUT,
    _R.GROUP_KEY: F.COLUMN_NOT_ALLOWED_IN_GROUP_KEY,
    _R.AGGREGATE_ARG: F.COLUMN_NOT_ALLOWED_IN_AGGREGATE,
    _R.COUNT_DISTINCT: F.COLUMN_NOT_ALLOWED_IN_AGGREGATE,
    _R.UNSAFE_AGGREGATE_ARG: F.UNSAFE_AGGREGATE_ON_PROTECTED_COLUMN,
    _R.PREDICATE: F.COLUMN_NOT_ALLOWED_IN_PREDICATE,
    _R.EQUI_JOIN: F.COLUMN_NOT_ALLOWED_IN_PREDICATE,
    _R.CASE_CONDITION: F.COLUMN_NOT_ALLOWED_IN_CONDITION,
    _R.AGGREGATE_CONDITION: F.COLUMN_NOT_ALLOWED_IN_CONDITION,
    _R.FILTER_CONDITION: F.COLUMN_NOT_ALLOWED_IN_FILTER,
    _R.WINDOW: F.COLUMN_NOT_ALLOWED_IN_WINDOW,
    _R.ORDER_BY: F.COLUMN_NOT_ALLOWED_IN_ORDER_BY,
    _R.PASSTHROUGH: F.COLUMN_NOT_ALLOWED_IN_OUTPUT,
}

_WHERE_ALLOWED: dict[Constraint, str] = {
    Constraint.GROUP: "only as a GROUP BY key of an aggregate query, in predicates and inside safe aggregates",
    Constraint.AGGREGATE: "only inside a safe aggregate (count, sum, avg, stddev, ...), in its CASE or FILTER "
                          "conditions, or in WHERE / ON predicates; never in a group key or an output",
    Constraint.JOIN: "only in an equi-join `a.col = b.col` with another join column, or in count(DISTINCT col)",
    Constraint.HIDDEN: "nowhere",
    Constraint.OPEN: "anywhere",
}
_ROLE_TEXT: dict[Role, str] = {
    _R.OUTPUT: "in the output", _R.GROUP_OUTPUT: "in the output", _R.GROUP_KEY: "as a group key",
    _R.AGGREGATE_ARG: "inside an aggregate", _R.COUNT_DISTINCT: "in count(DISTINCT ...)",
    _R.UNSAFE_AGGREGATE_ARG: "inside an aggregate that returns an individual value",
    _R.PREDICATE: "in a predicate", _R.EQUI_JOIN: "in an equi-join", _R.CASE_CONDITION: "in a condition",
    _R.AGGREGATE_CONDITION: "in a condition",
    _R.FILTER_CONDITION: "in a FILTER condition", _R.WINDOW: "in a window", _R.ORDER_BY: "in ORDER BY",
    _R.PASSTHROUGH: "in a subquery output",
}


class Rules:
    """Checks a query's lineage against the grant's column constraints."""

    def __init__(self, lineage: Lineage, positions: Positions) -> None:
        self.lineage = lineage
        self.catalog = lineage.catalog
        self.positions = positions
        self.findings: list[Finding] = []
        self._seen: set[tuple[str, str, int | None, int | None]] = set()
        self._refused_columns: set[tuple[str, str]] = set()

    def check(self, *, row_level: bool) -> list[Finding]:
        """All rule findings, in query order of discovery."""
        for use in self.lineage.uses:
            self._check_use(use)
        self._check_equi_joins()
        self._check_error_channels()
        if row_level:
            self._check_row_level()
        return self.findings

    def _label(self, table: str, column: str) -> str:
        return f"{self.catalog.name(table)}.{column}"

    def _add(self, code: str, message: str, node: exp.Expr, key: str) -> None:
        finding = self.positions.finding(code, message, node)
        dedupe = (code, key, finding.line, finding.column)
        if dedupe not in self._seen:
            self._seen.add(dedupe)
            self.findings.append(finding)

    def _check_use(self, use: ColumnUse) -> None:
        label = self._label(use.table, use.column)
        if self.catalog.is_entity(use.table, use.column):
            self._check_entity_use(use, label)
            return
        constraint = self.catalog.constraint(use.table, use.column)
        if use.role in ALLOWED_ROLES[constraint]:
            return
        self._refused_columns.add((use.table, use.column))
        self._add(ROLE_CODES[use.role],
                  f"{label} has constraint {constraint.value} and may not be used {_ROLE_TEXT[use.role]}; "
                  f"it may appear {_WHERE_ALLOWED[constraint]}", use.node, label)

    def _check_entity_use(self, use: ColumnUse, label: str) -> None:
        if use.role in ENTITY_ROLES:
            return
        if use.role in (Role.GROUP_KEY, Role.GROUP_OUTPUT) and isinstance(use.node, exp.Column) and use.node.table:
            enclosing = self.lineage.enclosing(use.node)
            if enclosing is not None and is_per_entity(self.lineage, enclosing):
                return  # a per-entity aggregation (sql_entity_scope.py): checked where its outputs are used
        self._refused_columns.add((use.table, use.column))
        if use.role in (Role.OUTPUT, Role.GROUP_OUTPUT):
            code, why = F.ENTITY_COLUMN_IN_OUTPUT, "is never output"
        elif use.role == Role.GROUP_KEY:
            code, why = F.ENTITY_COLUMN_IN_GROUP_KEY, "is never a group key (every group would be one entity)"
        elif use.role in (Role.PREDICATE, Role.CASE_CONDITION, Role.AGGREGATE_CONDITION, Role.FILTER_CONDITION):
            code = F.ENTITY_COLUMN_COMPARED
            why = ("is never compared with a literal or a parameter (that singles out one entity)"
                   if use.compared_with_value else "may only be compared with another join column in an equi-join")
        else:
            code, why = ROLE_CODES[use.role], f"may not be used {_ROLE_TEXT[use.role]}"
        self._add(code, f"{label} is the entity column of {self.catalog.name(use.table)} and {why}; it may appear "
                        "only in equi-joins with join columns and in count(DISTINCT ...)", use.node, label)

    def _is_join_side(self, origins: frozenset[Origin]) -> bool:
        return any(self.catalog.constraint(o.table, o.column) == Constraint.JOIN
                   or self.catalog.is_entity(o.table, o.column) for o in origins)

    def _check_equi_joins(self) -> None:
        """A join or entity column may be equated only with a join column of a granted dataset, carried bare.

        Never with a literal, a parameter, an expression, or a column derived from one (through any depth of
        CTE, subquery or set operation): such a side picks exactly who forms each group.
        """
        for join in self.lineage.equi_joins:
            sides = ((join.left, join.left_pure), (join.right, join.right_pure))
            flags = [self._is_join_side(side) for side, _ in sides]
            if not any(flags):
                continue
            if all(pure and side and all(o.bare and self._is_join_side(frozenset({o})) for o in side)
                   for side, pure in sides):
                continue
            columns = ", ".join(sorted({self._label(o.table, o.column) for side, _ in sides for o in side}))
            entity = [self._label(o.table, o.column) for side, _ in sides for o in side
                      if self.catalog.is_entity(o.table, o.column)]
            readable = all(pure and side and all(o.bare for o in side) for side, pure in sides)
            if entity and not readable:
                self._add(F.ENTITY_COLUMN_COMPARED,
                          f"{', '.join(sorted(set(entity)))} is an entity column: it may only be equated with a join "
                          "column of a granted dataset, carried unchanged; equating it with literals, parameters, "
                          "expressions or values derived from them picks exactly who forms each group",
                          join.node, columns)
            else:
                self._add(F.JOIN_COLUMN_JOINED_WITH_NON_JOIN_COLUMN,
                          f"join columns may only be equated with other join columns, carried unchanged ({columns}): "
                          "matching one against readable, literal or computed values would reveal it", join.node,
                          columns)

    def _check_error_channels(self) -> None:
        for node, origins, reason in self.lineage.error_prone:
            protected = sorted(self._label(o.table, o.column) for o in origins
                               if self.catalog.constraint(o.table, o.column) != Constraint.OPEN)
            if protected:
                self._add(F.ERROR_PRONE_EXPRESSION_ON_PROTECTED_COLUMN,
                          f"{reason} on {', '.join(protected)}: a failing conversion reports the offending value "
                          "in its error; use TRY_CAST or compare values of the same type", node, reason)

    def _check_row_level(self) -> None:
        for use in self.lineage.uses:
            key = (use.table, use.column)
            if key in self._refused_columns:
                continue
            constraint = self.catalog.constraint(use.table, use.column)
            enclosing = self.lineage.enclosing(use.node)
            if enclosing is not None and enclosing.is_aggregate and enclosing.scope is not self.lineage.root.scope:
                continue  # inside an aggregation below the row-level output: checked by role like any aggregate
            if constraint != Constraint.OPEN:
                label = self._label(use.table, use.column)
                self._refused_columns.add(key)
                self._add(F.NON_OPEN_COLUMN_IN_ROW_LEVEL_QUERY,
                          f"{label} has constraint {constraint.value}; a row-level (non-aggregate) query may only "
                          "reference open columns", use.node, label)
