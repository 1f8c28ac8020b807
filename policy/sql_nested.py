"""Normalization of aggregates of aggregates into windows over one aggregation (called by sql_normalize.py).

    SELECT avg(n) AS avg_visits FROM (SELECT clinic, count(*) AS n FROM clinic_visits GROUP BY clinic) AS t

evaluates every clinic's count, so each is a released cell; the outer value is a figure derived from them. It is the
same query as

    SELECT DISTINCT avg(count(*)) OVER () AS avg_visits FROM clinic_visits GROUP BY clinic

one aggregation whose windows see every group, and whose rows, all equal within a window partition, are made one by
DISTINCT. The release rewrite evaluates every group (each row's window cell is audited with that group's components),
suppresses a window's cells in its whole partition when any group of it is dropped or suppressed (sql_shell.py), and
`policy.output.finish` applies the DISTINCT after the audit (`ReleasePlan.distinct`): one row per outer group, its
value released only when every inner group it is computed from was.

Applied when the outer SELECT reads exactly one aggregated CTE or derived table, groups by some of its group keys
(or not at all), and outputs those keys and expressions whose every column is inside an outer aggregate (sum, avg,
count, min, max, stddev, variance; no DISTINCT, FILTER or ORDER BY inside), with no HAVING, DISTINCT, QUALIFY, LIMIT,
OFFSET, window or subquery of its own; its WHERE joins the inner HAVING; its ORDER BY may name output columns.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp

_OUTER_AGGREGATES: tuple[type[exp.Expr], ...] = (
    exp.Sum, exp.Avg, exp.Count, exp.Min, exp.Max, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance,
    exp.VariancePop,
)


class _NotNested(Exception):
    pass


def is_aggregating_shell(shell: exp.Select) -> bool:
    """Whether the outer SELECT aggregates (GROUP BY or an aggregate outside a window in its SELECT list)."""
    return shell.args.get("group") is not None or any(
        a.find_ancestor(exp.Window) is None for p in shell.expressions for a in p.find_all(exp.AggFunc))


def window_form(shell: exp.Select, alias: str, inner: exp.Select, outputs: dict[str, exp.Expr]) -> exp.Select | None:
    """The aggregation with windows and DISTINCT that computes the same rows (see the module doc), or None."""
    if any(shell.args.get(arg) is not None for arg in ("having", "distinct", "qualify", "limit", "offset", "joins")):
        return None
    if any(n.find(exp.Window, exp.Subquery, exp.Select, exp.Exists) is not None
           for n in [*shell.expressions, *(shell.args[a] for a in ("where", "order") if shell.args.get(a))]):
        return None
    keys = {id(k): k for k in inner.expressions if k.find(exp.AggFunc) is None}
    inner_keys = {k.alias_or_name.lower() for k in keys.values()}
    group = shell.args.get("group")
    outer_keys: list[str] = []
    if group is not None:
        if any(v for arg, v in group.args.items() if arg != "expressions"):
            return None
        for key in group.expressions:
            if not isinstance(key, exp.Column) or key.table != alias or key.name.lower() not in inner_keys:
                return None
            outer_keys.append(key.name.lower())

    def value(column: exp.Column) -> exp.Expr:
        if column.table != alias or column.name.lower() not in outputs:
            raise _NotNested
        found = outputs[column.name.lower()]
        return exp.paren(found.copy(), copy=False) if not isinstance(found, exp.Column) else found.copy()

    partition = [value(exp.column(k, table=alias)) for k in outer_keys]
    projections: list[exp.Expr] = []
    try:
        for projection in shell.expressions:
            body = projection.unalias()
            if isinstance(body, exp.Column) and body.name.lower() in outer_keys:
                projections.append(exp.alias_(value(body), projection.alias_or_name))
                continue
            projections.append(exp.alias_(_windowed(body, value, partition), projection.alias_or_name))
        where = shell.args.get("where")
        condition = where.this.copy().transform(
            lambda n: value(n) if isinstance(n, exp.Column) else n) if where is not None else None
    except _NotNested:
        return None
    order = shell.args.get("order")
    names = {p.alias_or_name.lower() for p in shell.expressions}
    if order is not None and not all(
            (isinstance(o.this, exp.Column) and not o.this.table and o.this.name.lower() in names) or
            (isinstance(o.this, exp.Literal) and o.this.is_number) for o in order.expressions):
        return None
    result = inner.copy()
    result.set("expressions", projections)
    result.set("distinct", exp.Distinct())
    if condition is not None:
        having = inner.args.get("having")
        merged = exp.and_(exp.paren(having.this.copy(), copy=False), exp.paren(condition, copy=False)) \
            if having is not None else condition
        result.set("having", exp.Having(this=merged))
    result.set("order", order.copy() if order is not None else None)
    return result


def _windowed(body: exp.Expr, value: Callable[[exp.Column], exp.Expr], partition: list[exp.Expr]) -> exp.Expr:
    """An outer expression with each outer aggregate a window over the inner groups, partitioned by the outer keys."""
    aggregates = list(body.find_all(exp.AggFunc))
    if not aggregates or body.find(exp.Filter) is not None:
        raise _NotNested  # an outer value outside any aggregate
    for aggregate in aggregates:
        if not isinstance(aggregate, _OUTER_AGGREGATES) or aggregate.find_ancestor(exp.AggFunc) is not None or \
                aggregate.find(exp.Distinct, exp.Filter, exp.Order) is not None:
            raise _NotNested
    for column in body.find_all(exp.Column):
        if column.find_ancestor(exp.AggFunc) is None:
            raise _NotNested  # a column outside the outer aggregates
    def replace(node: exp.Expr) -> exp.Expr:
        return value(node) if isinstance(node, exp.Column) else node

    def window(node: exp.Expr) -> exp.Expr:
        if isinstance(node, _OUTER_AGGREGATES) and node.find_ancestor(exp.Window) is None:
            inner = node.copy().transform(replace)
            return exp.Window(this=inner, partition_by=[p.copy() for p in partition] or None)
        return node

    return body.copy().transform(window)
