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
entity data; a WHERE on group keys or on aggregated values (the latter, like HAVING, selects rows after the audit:
its value is a hidden cell, and a row is kept when it holds and was released); a HAVING inside a source (moved out as
an output of its own, `__sluice_having`, and joined to that filter); ORDER BY. Refused with
`unsupported_query_shape_for_threshold` (what to write instead in the message): RIGHT and FULL joins, a join
condition on aggregated values, windows, DISTINCT, ORDER BY ALL, aggregates at the top, and row-level entity data.

A LEFT JOINed aggregation over entity data is optional (`ReleasePlan.optional`): a row is dropped only for the
groups of the other sources; where its group is missing or covers fewer than k entities, every cell reading it is
suppressed (k), so "no group" looks like "fewer than k". Its group keys may appear only in its own ON condition (a
NULL key would tell the two apart). ORDER BY, LIMIT and
OFFSET are applied after the audit to released values, like over one aggregation: every ORDER BY value that is not
an output column is a hidden column (a hidden cell when it reads an aggregated value), the released rows are sorted
by the released values (a suppressed one as NULL) and OFFSET / LIMIT cut that order (`output.finish`).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, walk_in_scope

from policy import sql_findings as F
from policy import sql_release as R
from policy.sql_components import Components
from policy.sql_findings import Positions
from policy.sql_lineage import Lineage
from policy.sql_passthrough import entity_reference
from policy.sql_release import Cell, ReleasePlan
from policy.sql_rewrite import Shape, UnsupportedShape
from policy.sql_setop import compose, helper_columns
from policy.sql_threshold import Branch, ThresholdPlan, _check_aggregation, _Planner, _reads_entity_scope

_WHY = "aggregations joined at the top"
_HAVING = "__sluice_having"


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
    plan.optional = tuple(a for a in _outer_joined(select) if a in aggregated and
                          _reads_entity_scope(planner, aggregated[a]))
    for alias in plan.optional:
        _optional_values_only(select, alias, aggregated[alias], planner)
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
    for key, what in (("limit", "LIMIT"), ("offset", "OFFSET"), ("qualify", "QUALIFY"), ("distinct", "DISTINCT")):
        if select.args.get(key) is not None:
            return (f"{what} inside an aggregation joined to another is not supported over entity data (rows are "
                    "selected after the release audit, for the joined rows only); use LIMIT in the outer query")
    if windows:
        return "window functions inside an aggregation joined to another are not supported over entity data"
    return None


def _check_top(select: exp.Select, aggregated: dict[str, Scope], planner: _Planner) -> None:
    """The top SELECT only combines the sources' rows: inner joins on group keys (its WHERE is a hidden cell)."""
    def refuse(message: str, node: exp.Expr) -> None:
        planner.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD, message, node)

    for key in ("qualify", "distinct"):
        if select.args.get(key) is not None:
            refuse(f"{key.upper()} over {_WHY} is not supported over entity data (it selects rows by their "
                   "values); use WHERE, or ORDER BY and LIMIT", select.args[key])
    order = select.args.get("order")
    if order is not None and any(isinstance(o.this, exp.Var) for o in order.expressions):
        refuse(f"ORDER BY ALL over {_WHY} is not supported over entity data; name the columns", order)
    if any(isinstance(n, exp.Window) for p in select.expressions for n in walk_in_scope(p)):
        refuse(f"window functions over {_WHY} are not supported over entity data", select)
    for join in select.args.get("joins") or []:
        if join.side == "LEFT" and join.kind in ("", "OUTER") and join.args.get("on") is not None:
            pass  # outer-joined: its entity instances are optional (see the module doc)
        elif join.side or join.kind not in ("", "INNER", "CROSS"):
            refuse("RIGHT and FULL outer joins of aggregations over entity data are not supported (a row that exists "
                   "only for a group of the outer-joined side would show that group exists); list the aggregation "
                   "whose groups every row keeps first and LEFT JOIN the others to it", join)
        on = join.args.get("on")
        if on is not None:
            _keys_only(on, aggregated, refuse)


def _outer_joined(select: exp.Select) -> list[str]:
    """The aliases of the sources on the right of a LEFT JOIN."""
    return [join.this.alias_or_name for join in select.args.get("joins") or [] if join.side == "LEFT"]


def _optional_values_only(select: exp.Select, alias: str, source: Scope, planner: _Planner) -> None:
    """An outer-joined aggregation over entity data: its group keys may appear only in its own ON condition. Whether
    its group exists (a NULL key) would otherwise show a group of fewer than k entities; its aggregated values are
    cells, suppressed whenever its group is missing or below k."""
    own_on = next((j.args.get("on") for j in select.args.get("joins") or [] if j.this.alias_or_name == alias), None)
    for column in walk_in_scope(select):
        if not isinstance(column, exp.Column) or column.table != alias or not _is_key(source.expression,
                                                                                     column.name):
            continue
        if own_on is not None and column.find_ancestor(exp.Join) is not None and \
                any(n is column for n in own_on.walk()):
            continue
        planner.refuse(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD,
                       f"{column.sql()} is a group key of an outer-joined aggregation over entity data: whether it is "
                       "NULL would show whether a group of fewer than k entities exists; use the key of the "
                       "aggregation on the left of the LEFT JOIN, or an inner join", column)
        return


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
    filters: set[int] = set()  # sources with a HAVING, moved to the joined rows' filter
    local: list[ReleasePlan | None] = []
    for branch in plan.branches:
        scope = branch.facts.scope
        if not branch.instances:
            local.append(None)
            continue
        if id(scope) not in rewritten:
            inner = scope.expression
            assert isinstance(inner, exp.Select)
            having = inner.args.get("having")
            if having is not None:  # an output of its own, a filter of the joined rows (after the audit)
                inner.set("having", None)
                value = exp.Coalesce(this=having.this, expressions=[exp.false()])  # the same aggregate nodes
                inner.append("expressions", exp.Alias(this=value, alias=exp.to_identifier(_HAVING, quoted=True)))
                filters.add(id(scope))
            entities = [entity_reference(lineage, i.path, i.table, passthrough, i.branches) for i in branch.instances]
            builder = Components(lineage, passthrough, branch.facts)
            release = builder.build([i.population for i in branch.instances], None)
            Shape.of(lineage, branch.facts, materialize=False).apply(
                inner, entities, builder.conditions, builder.stat_values, release)
            if having is not None and not any(c.name == _HAVING for c in release.cells):
                # fail closed: a filter of the joined rows that would not be audited as a cell
                raise UnsupportedShape("a HAVING without an aggregate over entity data inside an aggregation joined "
                                       "to another is not supported; filter on the group keys in WHERE")
            rewritten[id(scope)] = release
        local.append(rewritten[id(scope)])
    kept = [exp.column(_HAVING, table=b.alias, quoted=True) for b in plan.branches
            if id(b.facts.scope) in filters and b.alias is not None]
    if kept:
        where = select.args.get("where")
        select.set("where", exp.Where(this=exp.and_(*([where.this] if where is not None else []), *kept)))
    names = [p.alias_or_name for p in select.expressions]
    columns = len(names)
    whole = compose(local, columns, None, None)
    starts = _component_starts(local)

    def read(node: exp.Expr) -> set[int]:
        """The components of every aggregated value `node` reads."""
        used: set[int] = set()
        for column in [n for n in walk_in_scope(node) if isinstance(n, exp.Column)]:
            for b, branch in enumerate(plan.branches):
                part = local[b]
                if part is None or column.table != branch.alias:
                    continue
                for cell in part.cells:
                    if cell.name.lower() == column.name.lower():
                        used |= {c + starts[b] for c in cell.components}
        return used

    cells = [Cell(i, names[i], tuple(sorted(read(p)))) for i, p in enumerate(select.expressions) if read(p)]
    hidden, shell = _selection(select, columns, read, cells)
    whole = ReleasePlan(instances=whole.instances, conditions=whole.conditions, components=whole.components,
                        cells=tuple(cells), stats=whole.stats, columns=columns, branches=whole.branches,
                        hidden=tuple(e.alias for e in hidden), shell=shell,
                        optional=tuple(i for i, b in enumerate(whole.branches) if plan.branches[b].alias in
                                       plan.optional))
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
    select.set("expressions", [*select.expressions, *hidden, *(by_name[n] for n in R.helper_names(whole))])
    return whole


def _selection(select: exp.Select, columns: int, read: Callable[[exp.Expr], set[int]], cells: list[Cell]
               ) -> tuple[list[exp.Expr], R.Shell | None]:
    """Row selection and order after the audit (sql_shell.py's Shell): a WHERE on aggregated values is a hidden cell
    (`keep`); every ORDER BY value that is not an output column is a hidden column (a hidden cell when it reads an
    aggregated value, audited like the outputs; a hidden key otherwise), so that `output.finish` sorts the released
    rows by released values, and OFFSET / LIMIT cut that order (the clauses are taken out of the SQL). Appends the
    hidden cells to `cells`; returns the hidden columns."""
    where, limit, offset = (select.args.get(k) for k in ("where", "limit", "offset"))
    filtered = where is not None and bool(read(where.this))
    outputs = {p.alias_or_name.lower(): i for i, p in enumerate(select.expressions)}
    order_node = select.args.get("order")
    items: list[exp.Ordered] = list(order_node.expressions) if order_node is not None else []
    targets = [_output(o.this, outputs) for o in items]
    unnamed = any(t is None for t in targets)
    if not filtered and limit is None and offset is None and not unnamed:
        return [], None
    names: list[tuple[str, exp.Expr]] = []
    keep = None
    if filtered:
        assert where is not None
        select.set("where", None)
        keep = exp.func("coalesce", exp.paren(where.this.copy(), copy=False), exp.false())
        cells.append(Cell(columns, R.KEEP, tuple(sorted(read(where.this)))))
        names.append((R.KEEP, keep))
    order_cells: list[int] = []
    for i, (ordered, index) in enumerate(zip(items, targets, strict=True)):
        target = ordered.this
        if index is not None:
            order_cells.append(index)
        elif read(target):
            order_cells.append(columns + len(names))
            cells.append(Cell(columns + len(names), f"{R.ORDER_CELL}{i}", tuple(sorted(read(target)))))
            names.append((f"{R.ORDER_CELL}{i}", target.copy()))
        else:
            names.append((f"{R.ORDER_KEY}{i}", target.copy()))
    names.append((R.POS, exp.Literal.number(1)))  # the raw rank is not used: rows are ranked after the audit
    shell = {"pos": columns + len(names) - 1, "keep": columns if keep is not None else None,
             "order": tuple(c for c in order_cells if any(cell.index == c for cell in cells))}
    for key, clause, name in (("limit", limit, R.LIMIT), ("offset", offset, R.OFFSET)):
        if clause is not None:
            shell[key] = columns + len(names)
            names.append((name, exp.cast(clause.expression.copy(), "BIGINT")))
            select.set(key, None)
    hidden = [exp.alias_(value, exp.to_identifier(name, quoted=True)) for name, value in names]
    return hidden, R.Shell(**shell)  # type: ignore[arg-type]


def _output(target: exp.Expr, outputs: dict[str, int]) -> int | None:
    """The output column an ORDER BY item names (a position or an output alias), or None."""
    if isinstance(target, exp.Literal) and target.is_number:
        return int(target.name) - 1
    if isinstance(target, exp.Column) and not target.table:
        return outputs.get(target.name.lower())
    return None


def _component_starts(local: list[ReleasePlan | None]) -> list[int]:
    starts, total = [], 0
    for release in local:
        starts.append(total)
        total += len(release.components) if release is not None else 0
    return starts
