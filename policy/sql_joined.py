"""Aggregations over entity data joined to each other on their group keys, combined row by row at the top.

    WITH v AS (SELECT r.district, sum(c.cost) AS cost FROM residents r JOIN clinic_visits c ON ... GROUP BY 1),
         p AS (SELECT district, count(*) AS n FROM residents GROUP BY district)
    SELECT v.district, v.cost / p.n AS cost_per_head FROM v JOIN p ON v.district = p.district

Each aggregated source (a CTE or derived table; a CTE read twice is one source per alias) is planned and rewritten
like a top-level aggregation (sql_threshold.py, sql_rewrite.py): its own entity instances, components, conditions
and statistics subqueries; its helper columns are carried up through its alias. A result row joins one group of
each source, so it is dropped when any source's group covers fewer than k entities; a result column is a cell made
of the components of every aggregated value it reads (`cost / n` depends on both), each checked against its own
source's entity sets (`Component.branch` numbers the source, `ReleasePlan.branches` each instance's source). So a
ratio or growth rate of two aggregations releases both, and the audit sees both.

Supported: INNER (or CROSS) joins whose conditions read only group keys of the sources; sources that are aggregations
over entity data without HAVING, LIMIT, OFFSET, QUALIFY, DISTINCT or windows, or datasets / aggregations without
entity data; a WHERE on group keys; ORDER BY. Refused with `unsupported_query_shape_for_threshold` (what to write
instead in the message): outer joins, a join or WHERE on aggregated values (row selection by a value: filter in
HAVING of one aggregation), LIMIT / OFFSET, windows, DISTINCT, aggregates at the top, and row-level entity data.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, walk_in_scope

from policy import sql_findings as F
from policy import sql_release as R
from policy.sql_findings import Positions
from policy.sql_lineage import Lineage
from policy.sql_release import Cell, ReleasePlan
from policy.sql_rewrite import _Builder, _reference, _Shape
from policy.sql_setop import compose, helper_columns
from policy.sql_threshold import Branch, ThresholdPlan, _check_aggregation, _Planner, _reads_entity_scope

_WHY = "aggregations joined at the top"


def _is_key(select: exp.Expr, name: str) -> bool:
    """Whether output `name` of an aggregation is a group key (no aggregate in it)."""
    for projection in select.expressions:
        if projection.alias_or_name.lower() == name.lower():
            return projection.find(exp.AggFunc) is None
    return False


def plan_joined(lineage: Lineage, positions: Positions) -> ThresholdPlan | None:
    """The plan of a row-level SELECT joining aggregations over entity data; None for any other query."""
    root = lineage.root
    select = root.scope.expression
    if not root.is_select or root.is_aggregate or not isinstance(select, exp.Select):
        return None
    sources = root.scope.selected_sources
    aggregated = {alias: source for alias, (_, source) in sources.items()
                  if isinstance(source, Scope) and lineage.facts(source).is_aggregate}
    planner = _Planner(lineage, positions)
    if len(sources) < 2 or not any(_reads_entity_scope(planner, s) for s in aggregated.values()):
        return None
    for alias, (_, source) in sources.items():
        if alias in aggregated:
            continue
        reads_entities = (_reads_entity_scope(planner, source) if isinstance(source, Scope) else
                          planner.catalog.entity_column(source.name.lower()) is not None)
        if reads_entities:
            return None  # row-level entity data beside the aggregations: refused as a row-level query
    plan = planner.plan
    plan.joined = True
    _check_top(select, aggregated, planner)
    for alias, source in aggregated.items():
        facts = lineage.facts(source)
        branch = _Planner(lineage, positions)
        branch.reach(facts, (), None)
        if branch.plan.instances:
            _check_aggregation(facts, branch)
            problem = _source_problem(source.expression, facts.windows)
            if problem is not None:
                branch.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD, problem, source.expression)
        for finding in branch.plan.findings:
            if finding not in plan.findings:
                plan.findings.append(finding)
        plan.instances += branch.plan.instances
        plan.branches.append(Branch(facts, branch.plan.instances, alias))
    return plan


def _source_problem(select: exp.Expr, windows: list[exp.Window]) -> str | None:
    for key, what in (("having", "HAVING"), ("limit", "LIMIT"), ("offset", "OFFSET"), ("qualify", "QUALIFY"),
                      ("distinct", "DISTINCT")):
        if select.args.get(key) is not None:
            return (f"{what} inside an aggregation joined to another is not supported over entity data (rows are "
                    "selected after the release audit, for one aggregation only); filter in the outer query's "
                    "HAVING of a single aggregation, or run it as its own query")
    if windows:
        return "window functions inside an aggregation joined to another are not supported over entity data"
    return None


def _check_top(select: exp.Select, aggregated: dict[str, Scope], planner: _Planner) -> None:
    """The top SELECT only combines the sources' rows: inner joins on group keys, a WHERE on group keys."""
    def refuse(message: str, node: exp.Expr) -> None:
        planner.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD, message, node)

    for key in ("limit", "offset", "qualify", "distinct"):
        if select.args.get(key) is not None:
            refuse(f"{key.upper()} over {_WHY} is not supported over entity data (it selects rows by their "
                   "values); ORDER BY without it, or LIMIT one aggregation", select.args[key])
    if any(isinstance(n, exp.Window) for p in select.expressions for n in walk_in_scope(p)):
        refuse(f"window functions over {_WHY} are not supported over entity data", select)
    for join in select.args.get("joins") or []:
        if join.side or join.kind not in ("", "INNER", "CROSS"):
            refuse("outer joins of aggregations over entity data are not supported (a missing group's row would "
                   "have no entities to count); use an inner join", join)
        on = join.args.get("on")
        if on is not None:
            _keys_only(on, aggregated, refuse)
    where = select.args.get("where")
    if where is not None:
        _keys_only(where.this, aggregated, refuse)


def _keys_only(condition: exp.Expr, aggregated: dict[str, Scope], refuse: Callable[[str, exp.Expr], None]) -> None:
    """Refuse a join condition or filter that reads an aggregated value (group keys are released values)."""
    for column in condition.find_all(exp.Column):
        source = aggregated.get(column.table)
        if source is not None and not _is_key(source.expression, column.name):
            refuse(f"{column.sql()} is an aggregated value: joining or filtering {_WHY} on one selects rows by it; "
                   "filter with HAVING inside a single aggregation instead", column)
            return


def rewrite_joined(lineage: Lineage, plan: ThresholdPlan) -> ReleasePlan:
    """Rewrite every aggregated source (once per scope) with its helper columns, carry them up through each alias,
    and return the release plan of the whole (see the module doc)."""
    select = lineage.root.scope.expression
    assert isinstance(select, exp.Select)
    passthrough: dict[tuple[int, exp.Expr], str] = {}
    rewritten: dict[int, ReleasePlan] = {}
    local: list[ReleasePlan | None] = []
    for branch in plan.branches:
        scope = branch.facts.scope
        if not branch.instances:
            local.append(None)
            continue
        if id(scope) not in rewritten:
            inner = scope.expression
            assert isinstance(inner, exp.Select)
            entities = [_reference(lineage, i.path, i.table, passthrough, i.branches) for i in branch.instances]
            builder = _Builder(lineage, passthrough, branch.facts)
            release = builder.build([i.population for i in branch.instances], None)
            _Shape.of(lineage, branch.facts, materialize=False).apply(
                inner, entities, builder.conditions, builder.stat_values, release)
            rewritten[id(scope)] = release
        local.append(rewritten[id(scope)])
    names = [p.alias_or_name for p in select.expressions]
    whole = compose(local, len(names), names, None)
    cells: list[Cell] = []
    starts = _component_starts(local)
    for index, projection in enumerate(select.expressions):
        used: set[int] = set()
        for column in [n for n in walk_in_scope(projection) if isinstance(n, exp.Column)]:
            for b, branch in enumerate(plan.branches):
                part = local[b]
                if part is None or column.table != branch.alias:
                    continue
                for cell in part.cells:
                    if cell.name.lower() == column.name.lower():
                        used |= {c + starts[b] for c in cell.components}
        if used:
            cells.append(Cell(index, names[index], tuple(sorted(used))))
    whole = ReleasePlan(instances=whole.instances, conditions=whole.conditions, components=whole.components,
                        cells=tuple(cells), stats=whole.stats, columns=whole.columns, branches=whole.branches)
    extra: list[exp.Expr] = []
    for b, branch in enumerate(plan.branches):
        source = local[b]
        if source is None:
            continue
        assert branch.alias is not None
        own: dict[str, exp.Expr] = {name: exp.column(name, table=branch.alias, quoted=True)
                                    for name in R.helper_names(source)}
        extra += helper_columns(b, local, whole, own)
    by_name = {e.alias: e for e in extra}
    select.set("expressions", [*select.expressions,
                               *(by_name[n] for n in R.helper_names(whole))])
    return whole


def _component_starts(local: list[ReleasePlan | None]) -> list[int]:
    starts, total = [], 0
    for release in local:
        starts.append(total)
        total += len(release.components) if release is not None else 0
    return starts
