"""Entity indexes and base columns carried up from the datasets to the aggregation that releases them.

Every prepared entity input has the hidden column ``__sluice_eidx`` (a dense index over the population's raw ids, 0
for rows without an entity; sandbox/populations.py). The release rewrite needs it, and the base columns dominance is
checked on, in the scope of the aggregation: they are carried up through row-level CTEs and derived tables as hidden
passthrough columns (``__sluice_e<n>``), through per-entity aggregations as ``min(...)`` (constant per entity), and
through a UNION ALL of row-level branches as the last column of every branch.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from policy.sql_lineage import Lineage

EIDX = "__sluice_eidx"
PASSTHROUGH_PREFIX = "__sluice_e"


def source_of(scope: Scope, alias: str) -> exp.Table | Scope | None:
    current: Scope | None = scope
    while current is not None:
        source = current.sources.get(alias)
        if source is not None:
            return source
        current = current.parent
    return None


def projections(source: Scope, name: str) -> list[tuple[exp.Expr, Scope]]:
    """The expression(s) behind output `name` of a scope: one per set-operation branch."""
    expression = source.expression
    if isinstance(expression, exp.Select):
        for projection in expression.expressions:
            if projection.alias_or_name.lower() == name.lower():
                return [(projection.unalias(), source)]
        return []
    out = []
    for branch in source.set_operation_scopes:
        out += projections(branch, name)
    return out


def carry(child: Scope, alias: str, inner: exp.Expr, passthrough: dict[tuple[int, exp.Expr], str]) -> exp.Column:
    """`inner` (valid in `child`) carried up as a hidden output of `child`, referenced through `alias`."""
    key = (id(child), inner)
    name = passthrough.get(key)
    if name is None:
        name = f"{PASSTHROUGH_PREFIX}{len(passthrough)}"
        passthrough[key] = name
        value = inner.copy()
        if child.expression.args.get("group") is not None:
            value = exp.Min(this=value)  # a per-entity aggregation: constant within each group
        child.expression.append("expressions", exp.alias_(value, exp.to_identifier(name, quoted=True)))
    return exp.column(name, table=alias, quoted=True)


def entity_reference(lineage: Lineage, path: tuple[tuple[Scope, str], ...], table: str,
               passthrough: dict[tuple[int, exp.Expr], str],
               branches: tuple[tuple[Scope, str | None], ...] = ()) -> exp.Column:
    """A column, valid in the first scope of `path`, carrying the entity index of the instance at its end."""
    scope, alias = path[0]
    if len(path) == 1:
        if branches:
            return carry_union(alias, branches, passthrough)
        return exp.column(EIDX, table=alias, quoted=True)
    child = scope.sources[alias]
    assert isinstance(child, Scope) and isinstance(child.expression, exp.Select)
    return carry(child, alias, entity_reference(lineage, path[1:], table, passthrough, branches), passthrough)


def carry_union(alias: str, branches: tuple[tuple[Scope, str | None], ...],
                 passthrough: dict[tuple[int, exp.Expr], str]) -> exp.Column:
    """The entity index carried up as the last output of every branch of a UNION ALL (0 where a branch has none)."""
    name = f"{PASSTHROUGH_PREFIX}{len(passthrough)}"
    passthrough[(id(branches), exp.to_identifier(name))] = name
    for branch, table_alias in branches:
        value = exp.column(EIDX, table=table_alias, quoted=True) if table_alias is not None \
            else exp.cast(exp.Literal.number(0), "UINTEGER")
        branch.expression.append("expressions", exp.alias_(value, exp.to_identifier(name, quoted=True)))
    return exp.column(name, table=alias, quoted=True)
