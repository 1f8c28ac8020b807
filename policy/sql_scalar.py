"""Scalar subqueries of global aggregations over entity data in the top-level aggregation.

    SELECT clinic, sum(cost) AS cost FROM clinic_visits GROUP BY clinic
    HAVING sum(cost) > (SELECT sum(cost) * 0.1 FROM clinic_visits)

The subquery's aggregates are evaluated, so they count as released. It is planned as an entity source of its own
(sql_threshold.py `_Planner._scalar`: uncorrelated, one global aggregation over entity datasets read directly) and
rewritten like a top-level aggregation; a copy of it, with its helper columns, is CROSS JOINed to the rewritten
query (one row), while the user's expression keeps the subquery itself. Every cell whose expression reads the
subquery (an output, the HAVING value, an order value LIMIT cuts by) is made of the subquery's components as well as
its own, each counted over its own source's entities (`Component.branch`); when the subquery is in WHERE or a JOIN
condition, every cell depends on it. So when the global value is suppressed, so is everything computed from it, and
a HAVING that compares with it selects no row.
"""

from __future__ import annotations

from sqlglot import exp

from policy import sql_release as R
from policy.sql_lineage import Lineage
from policy.sql_release import Cell, ReleasePlan
from policy.sql_rewrite import UnsupportedShape, _Builder, _reference, _Shape
from policy.sql_setop import compose, helper_columns
from policy.sql_threshold import ThresholdPlan

_SCALAR = "__sluice_s"


def rewrite_with_scalars(lineage: Lineage, plan: ThresholdPlan) -> ReleasePlan:
    """Rewrite the top-level aggregation and each scalar subquery (see the module doc); return the whole plan."""
    select = lineage.root.scope.expression
    assert isinstance(select, exp.Select)
    subqueries = [s.facts.scope.expression for s in plan.scalars]
    copies = [s.copy() for s in subqueries]
    assert all(isinstance(c, exp.Select) for c in copies)
    where = [s for s in subqueries if s.find_ancestor(exp.Where, exp.Join) is not None and
             s.find_ancestor(exp.Select) is not None]
    if not plan.instances:
        raise UnsupportedShape("a scalar subquery over entity data needs an aggregation over entity data around it; "
                               "release the subquery's aggregate as a query of its own")
    shape = _Shape.of(lineage)
    hidden = shape.shell.hidden if shape.shell is not None else []
    nodes: list[exp.Expr | None] = [*select.expressions, *(n for _, n in hidden)]
    names = [*(p.alias_or_name for p in select.expressions), *(n for n, _ in hidden)]
    columns = len(select.expressions)
    passthrough: dict[tuple[int, exp.Expr], str] = {}
    entities = [_reference(lineage, i.path, i.table, passthrough, i.branches) for i in plan.instances]
    builder = _Builder(lineage, passthrough)
    top = builder.build([i.population for i in plan.instances], shape.shell)
    shape.apply(select, entities, builder.conditions, builder.stat_values, top)
    local: list[ReleasePlan | None] = [top]
    for scalar, copy in zip(plan.scalars, copies, strict=True):
        inner = [_reference(lineage, i.path, i.table, passthrough) for i in scalar.instances]
        sub = _Builder(lineage, passthrough, scalar.facts)
        part = sub.build([i.population for i in scalar.instances], None)
        assert isinstance(copy, exp.Select)
        _Shape.of(lineage, scalar.facts, materialize=False).apply(copy, inner, sub.conditions, sub.stat_values, part)
        local.append(part)
    whole = compose(local, columns, names, None)
    starts, total = [], 0
    for each in local:
        assert each is not None
        starts.append(total)
        total += len(each.components)
    cells = {c.index: set(c.components) for c in top.cells}
    for b, subquery in enumerate(subqueries, start=1):
        scalar_plan = local[b]
        assert scalar_plan is not None
        mine = {c + starts[b] for c in range(len(scalar_plan.components))}
        everywhere = any(subquery is w for w in where)
        for index, node in enumerate(nodes):
            if node is None:
                continue
            if everywhere or any(n is subquery for n in node.walk()):
                cells.setdefault(index, set()).update(mine)
    hidden_start = len(select.expressions) - len(R.helper_names(top))
    kept = select.expressions[:hidden_start]
    own = {e.alias: e.unalias() for e in select.expressions[hidden_start:]}
    helpers = helper_columns(0, local, whole, own)
    joins = list(select.args.get("joins") or [])
    for b, copy in enumerate(copies, start=1):
        scalar_plan = local[b]
        assert scalar_plan is not None
        alias = f"{_SCALAR}{b}"
        helpers += helper_columns(b, local, whole, {n: exp.column(n, table=alias, quoted=True)
                                                    for n in R.helper_names(scalar_plan)})
        joins.append(exp.Join(this=exp.Subquery(this=copy, alias=exp.TableAlias(this=exp.to_identifier(
            alias, quoted=True))), kind="CROSS"))
    select.set("expressions", [*kept, *helpers])
    select.set("joins", joins)
    return ReleasePlan(instances=whole.instances, conditions=whole.conditions, components=whole.components,
                       cells=tuple(Cell(i, names[i], tuple(sorted(c))) for i, c in sorted(cells.items())),
                       stats=whole.stats, columns=columns, hidden=top.hidden, shell=top.shell,
                       branches=whole.branches)
