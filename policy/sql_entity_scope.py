"""Per-entity aggregations: an aggregate over one entity's own rows, used as an attribute of that entity.

"Customers by their number of orders" (TPC-H Q13) first aggregates per customer, then counts customers per value:

    SELECT c_count, count(*) FROM (SELECT c_custkey, count(o_orderkey) AS c_count FROM customer LEFT JOIN orders
    ON c_custkey = o_custkey GROUP BY c_custkey) AS c_orders GROUP BY c_count

The inner aggregation groups by the entity column, so each of its rows is one entity; its aggregates are per-entity
attributes, like a `group` column, and are never output themselves. The outer cells are what is released and audited:
their entity sets are the entities of the inner rows they cover (the entity index is carried up as `min(index)`,
constant within an inner group).

A scope is per-entity when it is a derived table or CTE that aggregates with plain GROUP BY keys, reads entity
datasets only directly in its FROM / JOIN (each through a group key that is that dataset's entity column, unchanged),
has no window, DISTINCT or row selection, and its aggregates read only `open` and `group` columns (a per-entity sum of
an `aggregate` column as a group key would group entities by their exact protected value). The outer aggregation may
use a per-entity aggregate as a group key, in predicates, or in `count(...)`, never inside another value aggregate.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from policy.constraints import Constraint
from policy.sql_lineage import Lineage
from policy.sql_model import ScopeFacts, aggregate_arguments


def is_per_entity(lineage: Lineage, facts: ScopeFacts) -> bool:
    """Whether a scope is a per-entity aggregation (see the module doc)."""
    return per_entity_problem(lineage, facts) is None and _reads_entity_directly(lineage, facts)


def per_entity_problem(lineage: Lineage, facts: ScopeFacts) -> str | None:
    """Why an aggregate scope grouped by an entity column is not a per-entity aggregation, or None when it is."""
    scope, select = facts.scope, facts.scope.expression
    if not (facts.is_select and facts.is_aggregate) or scope is lineage.root.scope or facts.is_output:
        return "not an aggregation below the top level"
    if not (scope.is_derived_table or scope.is_cte or scope.is_subquery):
        return "not a derived table, CTE or subquery"
    group = select.args.get("group")
    if group is None or any(v for arg, v in group.args.items() if arg != "expressions"):
        return "not grouped by plain keys"
    if facts.windows or select.args.get("distinct") is not None or any(
            select.args.get(key) is not None for key in ("limit", "offset", "qualify")):
        return "windows, DISTINCT, LIMIT, OFFSET and QUALIFY are not allowed in a per-entity aggregation"
    anchors = anchor_aliases(lineage, facts)
    assert isinstance(select, exp.Select)
    equal = entity_equalities(select)
    for alias, (_, source) in scope.selected_sources.items():
        if isinstance(source, Scope):
            if _reads_entity(lineage, source):
                return "entity data reaches it through a subquery; join the entity dataset directly"
            continue
        column = lineage.catalog.entity_column(source.name.lower())
        if column is None or alias in anchors:
            continue
        population = _population(lineage, source)
        if not any(other in anchors and _population(lineage, scope.sources[other]) == population
                   for other in equal.get((alias, column.lower()), set())):
            return f"it is not grouped by the entity column {alias}.{column}"
    if scope.is_subquery:
        # selecting rows (EXISTS / IN): its aggregates are only compared in HAVING, never output
        if any(p.find(exp.AggFunc) is not None for p in select.expressions):
            return "a per-entity subquery that selects rows may not output its aggregates"
        return None
    for aggregate in facts.aggregates:
        for argument in aggregate_arguments(aggregate):
            origins, _, _ = lineage.expression_origins(argument, facts)
            if any(lineage.constraint_of(o) == Constraint.AGGREGATE for o in origins):
                return ("a per-entity aggregate of an aggregate-only column would group entities by their exact "
                        "protected value")
    return None


def anchor_aliases(lineage: Lineage, facts: ScopeFacts) -> set[str]:
    """The FROM aliases of entity datasets whose entity column is a GROUP BY key of the scope."""
    group = facts.scope.expression.args.get("group")
    keys = {(k.table, k.name.lower()) for k in (group.expressions if group is not None else [])
            if isinstance(k, exp.Column)}
    out = set()
    for alias, (_, source) in facts.scope.selected_sources.items():
        if isinstance(source, exp.Table):
            column = lineage.catalog.entity_column(source.name.lower())
            if column is not None and (alias, column.lower()) in keys:
                out.add(alias)
    return out


def _population(lineage: Lineage, table: exp.Table | Scope) -> str:
    if not isinstance(table, exp.Table):
        return ""
    name = table.name.lower()
    return lineage.catalog.tables[name].entity_population or name


def entity_equalities(select: exp.Select) -> dict[tuple[str, str], set[str]]:
    """(alias, column) -> aliases it is equated with by a top-level conjunct `a.x = b.y` of an ON or WHERE."""
    out: dict[tuple[str, str], set[str]] = {}
    conditions = [j.args.get("on") for j in select.args.get("joins") or []]
    where = select.args.get("where")
    conditions.append(where.this if where is not None else None)
    for condition in conditions:
        for conjunct in condition.flatten() if isinstance(condition, exp.And) else [condition]:
            if isinstance(conjunct, exp.EQ):
                left, right = conjunct.this.unnest(), conjunct.expression.unnest()
                if isinstance(left, exp.Column) and isinstance(right, exp.Column):
                    out.setdefault((left.table, left.name.lower()), set()).add(right.table)
                    out.setdefault((right.table, right.name.lower()), set()).add(left.table)
    return out


def _reads_entity_directly(lineage: Lineage, facts: ScopeFacts) -> bool:
    return any(isinstance(source, exp.Table) and lineage.catalog.entity_column(source.name.lower()) is not None
               for _, source in facts.scope.selected_sources.values())


def _reads_entity(lineage: Lineage, scope: Scope) -> bool:
    for _, source in scope.selected_sources.values():
        if isinstance(source, exp.Table):
            if lineage.catalog.entity_column(source.name.lower()) is not None:
                return True
        elif _reads_entity(lineage, source):
            return True
    return any(_reads_entity(lineage, child) for child in [*scope.subquery_scopes, *scope.set_operation_scopes])


def per_entity_value(lineage: Lineage, scope: Scope, column: exp.Column) -> bool:
    """Whether `column` (evaluated in `scope`) is an aggregate output of a per-entity source scope."""
    source = scope.sources.get(column.table)
    if not isinstance(source, Scope) or not isinstance(source.expression, exp.Select):
        return False
    facts = lineage.facts(source)
    if not is_per_entity(lineage, facts):
        return False
    for projection in source.expression.expressions:
        if projection.alias_or_name.lower() == column.name.lower():
            return projection.find(exp.AggFunc) is not None
    return False
