"""Normalization before lineage: a row-level SELECT over one aggregated CTE or derived table becomes that aggregation.

    WITH t AS (SELECT district, count(*) AS n, sum(cost) AS c FROM visits GROUP BY district)
    SELECT district, c / n AS avg_cost FROM t WHERE n > 100 ORDER BY avg_cost DESC LIMIT 3

is the same query as

    SELECT district, sum(cost) / count(*) AS avg_cost FROM visits GROUP BY district
    HAVING count(*) > 100 ORDER BY avg_cost DESC LIMIT 3

and the second form is one aggregation whose every evaluated aggregate (outputs, HAVING, the order LIMIT cuts by) is
a cell the release plan covers (sql_shell.py). The outer query's columns are replaced by the aggregation's
expressions, its WHERE joins the HAVING, its ORDER BY, LIMIT and OFFSET are kept. Only applied when the outer SELECT
reads nothing else (no join, no other reference to the CTE), has no aggregate, DISTINCT or subquery, no window
except in its SELECT list over the aggregated rows (`n * 1.0 / lag(n) OVER (ORDER BY month)`, `sum(n) OVER ()`, which
stay windows over the aggregation's rows, evaluated after its HAVING as they were after the WHERE), and
the aggregation has plain GROUP BY keys and no LIMIT, OFFSET, QUALIFY, DISTINCT or window of its own. Either way the
analysis that follows is the same fail-closed analysis: this only changes which shape it sees.
"""

from __future__ import annotations

from sqlglot import exp

from policy.sql_nested import is_aggregating_shell, window_form


def inline_aggregated_source(tree: exp.Query, entity_columns: frozenset[str] = frozenset()) -> exp.Query:
    """The normalized query (see module doc), or `tree` unchanged. An aggregation grouped by a column named like an
    entity column (`entity_columns`, lower case) is per-entity and never turned into windows (sql_nested.py)."""
    if not isinstance(tree, exp.Select):
        return tree
    shell = tree
    source = _single_source(shell)
    if source is None:
        return tree
    alias, inner, cte = source
    if not _inlinable_aggregation(inner):
        return tree
    outputs = {p.alias_or_name.lower(): p.unalias() for p in inner.expressions}
    if len(outputs) != len(inner.expressions):
        return tree
    if is_aggregating_shell(shell):  # aggregates of aggregates (sql_nested.py)
        group = inner.args.get("group")
        if group is not None and any(isinstance(k, exp.Column) and k.name.lower() in entity_columns
                                     for k in group.expressions):
            return tree  # per-entity: its aggregates are attributes of one entity (sql_entity_scope.py)
        nested = window_form(shell, alias, inner, outputs)
        if nested is None:
            return tree
        nested.set("with_", _merged_with(shell, inner, cte))
        return nested
    if not _inlinable_shell(shell):
        return tree

    def substitute(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column) and node.table == alias:
            value = outputs.get(node.name.lower())
            if value is None:
                raise _NotInlinable
            return exp.paren(value.copy(), copy=False) if not isinstance(value, exp.Column) else value.copy()
        return node

    try:
        projections = [p.copy().transform(substitute) for p in shell.expressions]
        where = shell.args.get("where")
        condition = where.this.copy().transform(substitute) if where is not None else None
        order = shell.args.get("order")
        order = order.copy().transform(substitute) if order is not None else None
    except _NotInlinable:
        return tree
    if any(isinstance(c, exp.Column) and c.table == alias for p in projections for c in p.find_all(exp.Column)):
        return tree
    result = inner.copy()
    result.set("expressions", [p if isinstance(p, exp.Alias) else exp.alias_(p, p.alias_or_name) for p in projections])
    having = inner.args.get("having")
    if condition is not None:
        merged = exp.and_(exp.paren(having.this.copy(), copy=False), exp.paren(condition, copy=False)) \
            if having is not None else condition
        result.set("having", exp.Having(this=merged))
    result.set("order", order)
    for arg in ("limit", "offset"):
        value = shell.args.get(arg)
        result.set(arg, value.copy() if value is not None else None)
    if shell.args.get("with_") is not None:
        result.set("with_", _merged_with(shell, inner, cte))
    return result


def _merged_with(shell: exp.Select, inner: exp.Select, cte: exp.CTE | None) -> exp.With | None:
    """The shell's CTEs but the inlined one, then the aggregation's own (None when there are none)."""
    with_ = shell.args.get("with_")
    kept = [c.copy() for c in with_.expressions if c is not cte] if with_ is not None else []
    inner_with = inner.args.get("with_")
    if inner_with is not None:
        kept += [c.copy() for c in inner_with.expressions]
    return exp.With(expressions=kept) if kept else None


class _NotInlinable(Exception):
    pass


def _single_source(shell: exp.Select) -> tuple[str, exp.Select, exp.CTE | None] | None:
    """(alias, the aggregation, its CTE or None) when the shell reads exactly one derived table or CTE."""
    from_ = shell.args.get("from_")
    if from_ is None or shell.args.get("joins"):
        return None
    source = from_.this
    alias = source.alias_or_name
    if isinstance(source, exp.Subquery) and isinstance(source.this, exp.Select):
        return alias, source.this, None
    if isinstance(source, exp.Table) and not source.args.get("db"):
        with_ = shell.args.get("with_")
        if with_ is None or with_.args.get("recursive"):
            return None
        for cte in with_.expressions:
            if cte.alias_or_name == source.name and isinstance(cte.this, exp.Select):
                references = [t for t in shell.find_all(exp.Table) if t.name == source.name and not t.args.get("db")]
                if len(references) != 1:
                    return None
                return alias, cte.this, cte
    return None


def _inlinable_shell(shell: exp.Select) -> bool:
    if shell.args.get("group") is not None or shell.args.get("having") is not None:
        return False
    if shell.args.get("distinct") is not None or shell.args.get("qualify") is not None:
        return False
    for arg in ("expressions", "where", "order"):
        value = shell.args.get(arg)
        for node in value if isinstance(value, list) else [value] if value is not None else []:
            if node.find(exp.Subquery, exp.Select, exp.Exists) is not None:
                return False
            for found in node.find_all(exp.AggFunc, exp.Window):
                # a window over the aggregated rows (`lag(n) OVER (ORDER BY month)`, `sum(n) OVER ()`) stays a
                # window over the aggregation's rows; any other aggregate or window is not inlined
                window = found if isinstance(found, exp.Window) else found.parent
                if arg != "expressions" or not isinstance(window, exp.Window) or \
                        window.find_ancestor(exp.Window) is not None or (found is not window and
                                                                         window.this is not found):
                    return False
    return True


def _inlinable_aggregation(inner: exp.Select) -> bool:
    group = inner.args.get("group")
    if group is None or any(v for arg, v in group.args.items() if arg != "expressions") or not group.expressions:
        return False
    if any(inner.args.get(arg) is not None for arg in ("limit", "offset", "qualify", "distinct")):
        return False
    return inner.find(exp.Window) is None
