"""Set operations of aggregations over entity data: `UNION [ALL]`, `INTERSECT`, `EXCEPT` of aggregated branches.

Each branch is an aggregation planned and rewritten like a top-level one (sql_threshold.py, sql_rewrite.py): its
own entity instances, components, conditions and dominance statistics, and its own statistics subqueries. The
governed SQL is a `UNION ALL` of the rewritten branches (whatever the operation), each row carrying a hidden branch
number and the helper columns of every branch's instances (NULL for another branch's), so every cell of every
branch is checked (k, dominance) against its own branch's entity sets and goes through the release audit, output
or not: the rows an INTERSECT or EXCEPT compares with are evaluated aggregates too. The operation itself is applied
to the released values after the audit (policy/output_sets.py), so it reveals nothing that was not released.

Supported: a chain of one operation (`A UNION B UNION C`, `A EXCEPT B EXCEPT C`: A without the rows of B or C)
whose branches are aggregations (GROUP BY, ROLLUP, global aggregates; branches without entity data are open data);
ORDER BY over the result. Refused with `unsupported_query_shape_for_threshold`: `INTERSECT ALL` / `EXCEPT ALL`,
mixed operations, LIMIT / OFFSET over the set operation, and HAVING, LIMIT, OFFSET, windows, DISTINCT or ORDER BY
inside a branch (each is row selection that must happen after the audit; run the branch as its own query).
"""

from __future__ import annotations

import dataclasses

from sqlglot import exp
from sqlglot.optimizer.scope import Scope

from policy import sql_findings as F
from policy import sql_release as R
from policy.sql_components import Components
from policy.sql_findings import Positions
from policy.sql_lineage import Lineage
from policy.sql_model import ScopeFacts
from policy.sql_passthrough import entity_reference
from policy.sql_release import Cell, Component, ReleasePlan, SetOp, Stat
from policy.sql_rewrite import Shape, UnsupportedShape
from policy.sql_threshold import Branch, ThresholdPlan, _check_aggregation, _Planner, _reads_entity_scope

_ALL_OPERATIONS = "INTERSECT ALL and EXCEPT ALL are not supported over entity data; use INTERSECT or EXCEPT"


def _kind(node: exp.Expr) -> str | None:
    if isinstance(node, exp.Union):
        return "union" if node.args.get("distinct") else "union_all"
    if isinstance(node, exp.Intersect | exp.Except) and node.args.get("distinct"):
        return "intersect" if isinstance(node, exp.Intersect) else "except"
    return None


def _flatten(scope: Scope, kind: str, top: bool) -> list[Scope] | None:
    """The SELECT branches of a chain of one set operation, or None for any other shape."""
    expression = scope.expression
    if isinstance(expression, exp.Select):
        return [scope]
    if _kind(expression) != kind or (not top and any(expression.args.get(a) is not None
                                                     for a in ("order", "limit", "offset", "with_"))):
        return None
    left, right = scope.set_operation_scopes
    if kind == "except" and not isinstance(right.expression, exp.Select):
        return None  # A EXCEPT (B EXCEPT C) is not A without B and C
    first, second = _flatten(left, kind, False), _flatten(right, kind, False)
    return first + second if first is not None and second is not None else None


def _branch_problem(select: exp.Expr, facts: ScopeFacts) -> str | None:
    for key, what in (("having", "HAVING"), ("limit", "LIMIT"), ("offset", "OFFSET"), ("qualify", "QUALIFY"),
                      ("order", "ORDER BY"), ("distinct", "DISTINCT"), ("with_", "WITH")):
        if select.args.get(key) is not None:
            return (f"{what} inside a branch of a set operation over entity data is not supported (rows are selected "
                    "after the release audit, for the whole result only); run that branch as its own query")
    if facts.windows:
        return ("window functions inside a branch of a set operation over entity data are not supported; run that "
                "branch as its own query")
    return None


def plan_set_operation(lineage: Lineage, positions: Positions) -> ThresholdPlan | None:
    """The plan of a top-level set operation of aggregations that reads entity data; None for any other query
    (sql_threshold.plan_threshold decides those, refusing set operations it cannot enforce the threshold on)."""
    root = lineage.root
    if root.is_select:
        return None
    planner = _Planner(lineage, positions)
    if not _reads_entity_scope(planner, root.scope):
        return None
    expression = root.scope.expression
    kind = _kind(expression)
    if kind is None:
        planner.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD, _ALL_OPERATIONS, expression)
        return planner.plan
    scopes = _flatten(root.scope, kind, True)
    if scopes is None:
        planner.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD,
                       "a set operation over entity data must be one chain of one operation (A UNION B UNION C, A "
                       "EXCEPT B EXCEPT C) over aggregations, without ORDER BY or LIMIT inside; run the parts as "
                       "separate queries", expression)
        return planner.plan
    if not all(lineage.facts(s).is_aggregate for s in scopes):
        return None  # row-level branches: refused by plan_threshold and the rules
    for key in ("limit", "offset"):
        if expression.args.get(key) is not None and (kind != "union_all" or _order_columns(expression) is None):
            planner.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD,
                           f"{key.upper()} over a set operation of aggregations over entity data is not supported "
                           "except over a UNION ALL ordered by output columns (after UNION, INTERSECT or EXCEPT the "
                           "rank depends on which rows the operation keeps); write UNION ALL and ORDER BY output "
                           "columns, drop LIMIT (ORDER BY stays), or rank within one aggregation (one query per "
                           "branch)",
                           expression.args[key])
    plan = planner.plan
    plan.set_kind = kind
    for scope in scopes:
        facts = lineage.facts(scope)
        branch = _Planner(lineage, positions)
        branch.reach(facts, (), None)
        if branch.plan.instances:
            _check_aggregation(facts, branch)
            problem = _branch_problem(scope.expression, facts)
            if problem is not None:
                branch.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD, problem, scope.expression)
        for finding in branch.plan.findings:
            if finding not in plan.findings:
                plan.findings.append(finding)
        plan.instances += branch.plan.instances
        plan.branches.append(Branch(facts, branch.plan.instances))
    return plan


def rewrite_set_operation(lineage: Lineage, plan: ThresholdPlan) -> ReleasePlan:
    """Rewrite every branch with its helper columns, join them as one UNION ALL (`plan.rewritten`), return the
    release plan of the whole (see the module doc)."""
    assert plan.set_kind is not None
    columns = len(lineage.root.outputs)
    names = [d.name for d in lineage.root.outputs]
    passthrough: dict[tuple[int, exp.Expr], str] = {}
    local: list[ReleasePlan | None] = []
    for branch in plan.branches:
        select = branch.facts.scope.expression
        assert isinstance(select, exp.Select)
        if not branch.instances:
            local.append(None)
            continue
        entities = [entity_reference(lineage, i.path, i.table, passthrough, i.branches) for i in branch.instances]
        builder = Components(lineage, passthrough, branch.facts)
        release = builder.build([i.population for i in branch.instances], None)
        shape = Shape.of(lineage, branch.facts, materialize=False)
        shape.apply(select, entities, builder.conditions, builder.stat_values, release)
        local.append(release)
    whole = compose(local, columns, names, plan.set_kind)
    selects = []
    for b, branch in enumerate(plan.branches):
        select = branch.facts.scope.expression
        assert isinstance(select, exp.Select)
        select.set("expressions", _branch_columns(select, columns, b, local, whole))
        selects.append(select)
    union: exp.Query = selects[0]
    for select in selects[1:]:
        union = exp.Union(this=union, expression=select, distinct=False)
    original = lineage.root.scope.expression
    if original.args.get("limit") is not None or original.args.get("offset") is not None:
        plan.rewritten, whole = _ranked(original, union, selects[0], columns, whole)
        return whole
    for key in ("with_", "order"):
        value = original.args.get(key)
        if value is not None:
            union.set(key, value)
    plan.rewritten = union
    return whole


def _order_columns(expression: exp.Expr) -> list[tuple[int | str, exp.Ordered]] | None:
    """The ORDER BY items of a set operation as output positions (1-based) or names, or None when one is anything
    else (or there is no ORDER BY)."""
    order = expression.args.get("order")
    if order is None:
        return None
    items: list[tuple[int | str, exp.Ordered]] = []
    for ordered in order.expressions:
        target = ordered.this
        if isinstance(target, exp.Literal) and target.is_number:
            items.append((int(target.name), ordered))
        elif isinstance(target, exp.Column) and not target.table:
            items.append((target.name.lower(), ordered))
        else:
            return None
    return items


def _ranked(original: exp.Expr, union: exp.Query, first: exp.Select, columns: int, whole: ReleasePlan
            ) -> tuple[exp.Query, ReleasePlan]:
    """LIMIT / OFFSET over a UNION ALL: every row of every branch evaluated (hidden `pos`, a constant kept for the
    plan's format, then the LIMIT / OFFSET values), selected after the audit (`output.finish`): the OFFSET / LIMIT
    slice of the released rows in the released order (`ReleasePlan.sort`), as for LIMIT over one aggregation."""
    names = [e.alias_or_name for e in first.expressions]
    outputs = {n.lower(): i for i, n in enumerate(names[:columns])}
    items = _order_columns(original)
    if items is None:
        raise UnsupportedShape("LIMIT over a set operation needs an ORDER BY of its output columns")
    order_cells = []
    for target, _ in items:
        index = target - 1 if isinstance(target, int) else outputs.get(target)
        if index is None or not 0 <= index < columns:
            raise UnsupportedShape("LIMIT over a set operation needs an ORDER BY of its output columns")
        order_cells.append(index)
    # the raw rank is not computed: rows are ranked after the audit, by released values only
    hidden = [exp.alias_(exp.Literal.number(1), exp.to_identifier(R.POS, quoted=True))]
    shell = {"pos": columns + 1, "order": tuple(order_cells)}
    for key, name in (("limit", R.LIMIT), ("offset", R.OFFSET)):
        clause = original.args.get(key)
        if clause is not None:
            shell[key] = columns + 1 + len(hidden)
            value = exp.cast(clause.expression.copy(), "BIGINT")
            hidden.append(exp.alias_(value, exp.to_identifier(name, quoted=True)))
    column = [exp.column(n, table="__sluice_u", quoted=True) for n in names]
    select = exp.Select(expressions=[*column[:columns + 1], *hidden, *column[columns + 1:]],
                        from_=exp.From(this=exp.Subquery(this=union, alias=exp.TableAlias(
                            this=exp.to_identifier("__sluice_u", quoted=True)))))
    with_ = original.args.get("with_")
    if with_ is not None:
        select.set("with_", with_)
    plan = dataclasses.replace(whole, hidden=(*whole.hidden, *(h.alias for h in hidden)),
                               shell=R.Shell(**shell))  # type: ignore[arg-type]
    return select, plan


def compose(local: list[ReleasePlan | None], columns: int, names: list[str] | None, kind: str | None) -> ReleasePlan:
    """One release plan over every branch (or joined source): instances, conditions, components and statistics
    numbered in branch order, each component marked with its branch; a column's cells depend on every branch's
    components for it (no cells without `names`: the caller makes them). With a set operation `kind`, a hidden
    branch column follows the user's columns."""
    instances: list[str] = []
    branches: list[int] = []
    components: list[Component] = []
    stats: list[Stat] = []
    conditions = 0
    cells: dict[int, list[int]] = {}
    for b, release in enumerate(local):
        if release is None:
            continue
        start, first_stat = len(components), len(stats)
        for population in release.instances:
            instances.append(population)
            branches.append(b)
        for component in release.components:
            condition = component.condition + conditions if component.condition is not None else None
            components.append(dataclasses.replace(component, condition=condition, branch=b,
                                                  stats=tuple(j + first_stat for j in component.stats)))
        stats += [Stat(s.component + start, s.column) for s in release.stats]
        conditions += release.conditions
        for cell in release.cells:
            cells.setdefault(cell.index, []).extend(c + start for c in cell.components)
    return ReleasePlan(instances=tuple(instances), conditions=conditions, components=tuple(components),
                       cells=tuple(Cell(j, names[j], tuple(sorted(c))) for j, c in sorted(cells.items()))
                       if names is not None else (),
                       stats=tuple(stats), columns=columns, hidden=(R.BRANCH,) if kind is not None else (),
                       setop=SetOp(kind, columns, len(local)) if kind is not None else None,
                       branches=tuple(branches))


def _branch_columns(select: exp.Select, columns: int, b: int, local: list[ReleasePlan | None],
                    whole: ReleasePlan) -> list[exp.Expr]:
    """A branch's output: the user's columns, its branch number, then every helper column of the whole plan."""
    own = {e.alias: e.unalias() for e in select.expressions[columns:]}
    return [*select.expressions[:columns],
            exp.alias_(exp.cast(exp.Literal.number(b), "INTEGER"), exp.to_identifier(R.BRANCH, quoted=True)),
            *helper_columns(b, local, whole, own, every_instance=True)]


def helper_columns(b: int, local: list[ReleasePlan | None], whole: ReleasePlan, own: dict[str, exp.Expr], *,
                   every_instance: bool = False) -> list[exp.Expr]:
    """The whole plan's helper columns for branch `b`'s instances (every instance's, NULL for other branches', with
    `every_instance`), each renamed from `own` (the branch's rewrite, by its local helper name); conditions and
    statistics of other branches are NULL."""
    release = local[b]
    first_instance = whole.branches.index(b) if b in whole.branches else 0
    first_condition = sum(r.conditions for r in local[:b] if r is not None)
    first_stat = sum(len(r.stats) for r in local[:b] if r is not None)
    out: list[exp.Expr] = []
    for i in range(len(whole.instances)):
        li = i - first_instance if whole.branches[i] == b else None
        if li is None and not every_instance:
            continue
        pairs = [(R.group_count(i), R.group_count(li) if li is not None else None),
                 (R.group_set(i), R.group_set(li) if li is not None else None)]
        for c in range(whole.conditions):
            lc = c - first_condition
            mine = li is not None and release is not None and 0 <= lc < release.conditions
            pairs += [(R.condition_count(i, c), R.condition_count(li, lc) if mine and li is not None else None),
                      (R.condition_rows(i, c), R.condition_rows(li, lc) if mine and li is not None else None),
                      (R.condition_set(i, c), R.condition_set(li, lc) if mine and li is not None else None)]
        for j in range(len(whole.stats)):
            lj = j - first_stat
            mine = li is not None and release is not None and 0 <= lj < len(release.stats)
            pairs += [(R.stat_top(i, j), R.stat_top(li, lj) if mine and li is not None else None),
                      (R.stat_total(i, j), R.stat_total(li, lj) if mine and li is not None else None)]
        for name, source in pairs:
            value = own[source].copy() if source is not None else exp.Null()
            out.append(exp.alias_(value, exp.to_identifier(name, quoted=True)))
    return out
