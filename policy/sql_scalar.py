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

A correlated scalar subquery (`WHERE c.cost > (SELECT avg(c2.cost) FROM clinic_visits c2 WHERE c2.clinic =
c.clinic)`, "compared with the average of its own clinic") is decorrelated: planning accepts it when every outer
reference is in an AND-ed equality `inner = outer` of its WHERE with open or group inner columns; here the outer side
must be a group key of the top-level aggregation (no grouping sets). The copy drops those equalities, groups by their
inner sides and is LEFT JOINed on them to the rewritten query's group keys (IS NOT DISTINCT FROM), so each group's
cells are made of the components of exactly the inner group its raw value compared with, and every inner group that
is evaluated is audited with the cells that read it. An outer group with no inner group gets no entities: it is
dropped for k.
"""

from __future__ import annotations

from sqlglot import exp

from policy import sql_release as R
from policy.sql_components import Components
from policy.sql_lineage import Lineage
from policy.sql_passthrough import entity_reference
from policy.sql_release import Cell, ReleasePlan
from policy.sql_rewrite import KEY_PREFIX, QUERY_ALIAS, Shape, UnsupportedShape
from policy.sql_setop import compose, helper_columns
from policy.sql_threshold import Branch, ThresholdPlan, conjuncts

_SCALAR = "__sluice_s"
_CORRELATED = "__sluice_x"


def rewrite_with_scalars(lineage: Lineage, plan: ThresholdPlan) -> ReleasePlan:
    """Rewrite the top-level aggregation and each scalar subquery (see the module doc); return the whole plan."""
    select = lineage.root.scope.expression
    assert isinstance(select, exp.Select)
    subqueries = [s.facts.scope.expression for s in plan.scalars]
    copies = [s.copy() for s in subqueries]
    assert all(isinstance(c, exp.Select) for c in copies)
    where = [s for s in subqueries if s.find_ancestor(exp.Where, exp.Join) is not None and
             s.find_ancestor(exp.Select) is not None]
    if select.args.get("distinct") is not None:
        raise UnsupportedShape("SELECT DISTINCT cannot be combined with a scalar subquery over entity data; compare "
                               "in a query of its own")
    if not plan.instances:
        raise UnsupportedShape("a scalar subquery over entity data needs an aggregation over entity data around it; "
                               "release the subquery's aggregate as a query of its own")
    shape = Shape.of(lineage)
    hidden = shape.shell.hidden if shape.shell is not None else []
    nodes: list[exp.Expr | None] = [*select.expressions, *(n for _, n in hidden)]
    names = [*(p.alias_or_name for p in select.expressions), *(n for n, _ in hidden)]
    columns = len(select.expressions)
    passthrough: dict[tuple[int, exp.Expr], str] = {}
    entities = [entity_reference(lineage, i.path, i.table, passthrough, i.branches) for i in plan.instances]
    builder = Components(lineage, passthrough)
    top = builder.build([i.population for i in plan.instances], shape.shell)
    shape.apply(select, entities, builder.conditions, builder.stat_values, top)
    local: list[ReleasePlan | None] = [top]
    for scalar, copy in zip(plan.scalars, copies, strict=True):
        inner = [entity_reference(lineage, i.path, i.table, passthrough) for i in scalar.instances]
        sub = Components(lineage, passthrough, scalar.facts)
        part = sub.build([i.population for i in scalar.instances], None)
        assert isinstance(copy, exp.Select)
        decorrelated = _decorrelate(copy, scalar) if scalar.correlation else None
        Shape.of(lineage, scalar.facts, materialize=False, select=decorrelated).apply(
            copy, inner, sub.conditions, sub.stat_values, part)
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
        source = exp.Subquery(this=copy, alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)))
        correlation = plan.scalars[b - 1].correlation
        if not correlation:
            joins.append(exp.Join(this=source, kind="CROSS"))
            continue
        if shape.sets is not None:
            raise UnsupportedShape("a correlated scalar subquery over entity data cannot be combined with ROLLUP, "
                                   "CUBE or GROUPING SETS (a subtotal compares with no single group); use "
                                   "plain GROUP BY")
        on = []
        for j, pair in enumerate(correlation):
            key = _key_index(shape.keys, pair.outer)
            if key is None:
                raise UnsupportedShape(
                    f"a correlated scalar subquery over entity data must be correlated on a group key of the "
                    f"aggregation around it: add {pair.outer.sql(dialect='duckdb')} to GROUP BY, or compare in a "
                    "window over the aggregation (`avg(...) OVER (PARTITION BY key)`)")
            on.append(exp.NullSafeEQ(this=exp.column(f"{_CORRELATED}{j}", table=alias, quoted=True),
                                     expression=exp.column(f"{KEY_PREFIX}{key}", table=QUERY_ALIAS, quoted=True)))
        joins.append(exp.Join(this=source, kind="LEFT", on=exp.and_(*on)))
    select.set("expressions", [*kept, *helpers])
    select.set("joins", joins)
    return ReleasePlan(instances=whole.instances, conditions=whole.conditions, components=whole.components,
                       cells=tuple(Cell(i, names[i], tuple(sorted(c))) for i, c in sorted(cells.items())),
                       stats=whole.stats, columns=columns, hidden=top.hidden, shell=top.shell,
                       branches=whole.branches)


def _decorrelate(copy: exp.Select, scalar: Branch) -> exp.Select:
    """The copy of a correlated scalar subquery (in place): its correlating equalities dropped, grouped by their inner
    sides, which it outputs as `__sluice_x<j>` after the aggregate."""
    where = copy.args.get("where")
    assert where is not None
    drop = {pair.conjunct for pair in scalar.correlation}
    kept = [c.copy() for i, c in enumerate(conjuncts(where.this)) if i not in drop]
    copy.set("where", exp.Where(this=exp.and_(*kept)) if kept else None)
    inner = [pair.inner.copy() for pair in scalar.correlation]
    for j, expression in enumerate(inner):
        copy.append("expressions", exp.alias_(expression.copy(), exp.to_identifier(f"{_CORRELATED}{j}", quoted=True)))
    copy.set("group", exp.Group(expressions=inner))
    return copy


def _key_index(keys: list[exp.Expr], outer: exp.Expr) -> int | None:
    """The index of the top-level group key that is the outer side of a correlation, or None."""
    wanted = outer.sql(dialect="duckdb").lower()
    for index, key in enumerate(keys):
        if key.sql(dialect="duckdb").lower() == wanted:
            return index
    return None
