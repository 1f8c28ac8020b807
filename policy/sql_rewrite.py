"""The release rewrite: add, per entity instance, the entity sets and dominance statistics of every released cell.

The user's aggregation runs unchanged, wrapped as a subquery with hidden copies of its group keys, outputs and
ORDER BY values. For each entity instance, a statistics subquery reads the same rows (the same FROM / JOIN / WHERE),
pre-aggregates them to one row per (group keys, entity index) with one `bool_or(<contributing condition>)` per
condition and one `sum(<base column>) FILTER (WHERE <contributing>)` per dominance statistic, then aggregates per
group: the entity count and the list of entity indexes of the group and of each condition, whether any row meets the
condition, and each statistic's two largest absolute contributions and their absolute total. It is LEFT JOINed to
the user's groups on the keys with IS NOT DISTINCT FROM (grouping's equality, NULL keys included); the outer query
re-applies the ORDER BY and names the columns as before, helpers last (policy/sql_release.py names them).

Entity indexes come from the hidden column ``__sluice_eidx`` of every prepared entity input, carried up through
row-level CTEs and derived tables by passthrough columns (sql_passthrough.py); the components, conditions and
statistics come from sql_components.py.

When the top-level clauses only reference the FROM aliases' columns, the FROM / JOIN / WHERE rows are computed once
into a `MATERIALIZED` CTE with one struct column per source alias (so `"alias"."column"` still resolves, as a struct
field), and both the user's aggregation and the statistics read it. Otherwise (a column inside a subquery
expression of the top-level clauses, which could be correlated; an output alias equal to a source alias) both read
a copy of the original FROM / JOIN / WHERE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sqlglot import exp

from policy import sql_release as R
from policy.sql_components import Components
from policy.sql_lineage import Lineage
from policy.sql_model import ScopeFacts
from policy.sql_passthrough import entity_reference
from policy.sql_release import ReleasePlan
from policy.sql_shell import ShellLayout, hidden_values, layout, partition_values, within_having
from policy.sql_threshold import ThresholdPlan

ROWS_NAME = "__sluice_rows"
QUERY_ALIAS, KEY_PREFIX = "__sluice_q", "__sluice_k"
_QUERY, _STATS, _PARTIAL = QUERY_ALIAS, "__sluice_c", "__sluice_p"
_KEY, _VALUE, _ORDER, _ENTITY = KEY_PREFIX, "__sluice_v", "__sluice_o", "__sluice_entity"
_HAVING = "__sluice_h"
_GROUPING = "__sluice_g"


class UnsupportedShape(Exception):
    """The rewrite cannot enforce the threshold on this query; it is refused."""


def rewrite_threshold(lineage: Lineage, plan: ThresholdPlan) -> ReleasePlan | None:
    """Add the release helper columns to the top-level aggregation (in place); return the release plan."""
    if not plan.instances:
        return None
    select = lineage.root.scope.expression
    assert isinstance(select, exp.Select)
    shape = Shape.of(lineage)
    passthrough: dict[tuple[int, exp.Expr], str] = {}
    entities = [entity_reference(lineage, i.path, i.table, passthrough, i.branches) for i in plan.instances]
    builder = Components(lineage, passthrough)
    release = builder.build([i.population for i in plan.instances], shape.shell)
    if select.args.get("distinct") is not None:  # an aggregate of aggregates: rows merged after the audit
        release = dataclasses.replace(release, distinct=True)
    shape.apply(select, entities, builder.conditions, builder.stat_values, release)
    return release


# --- the SQL ----------------------------------------------------------------------------------------------------
@dataclass
class Shape:
    """The top-level aggregation's keys and order, and whether its rows can be materialized once."""

    keys: list[exp.Expr]
    order: list[exp.Ordered]
    order_all: bool
    fields: dict[str, dict[str, str]] | None  # source alias -> column names (materialized form), else None
    shell: ShellLayout | None = None  # HAVING / LIMIT / OFFSET applied after the audit (sql_shell.py)
    sets: list[list[int]] | None = None  # ROLLUP / CUBE / GROUPING SETS: each set's key indexes

    @classmethod
    def of(cls, lineage: Lineage, root: ScopeFacts | None = None, *, materialize: bool = True,
           select: exp.Select | None = None) -> Shape:
        """The shape of the top-level SELECT (or `root`, or a `select` derived from it, such as a decorrelated
        subquery); raises UnsupportedShape when keys or order cannot be resolved. Without `materialize`, the
        statistics read a copy of the FROM / JOIN / WHERE (no CTE added)."""
        root = root if root is not None else lineage.root
        if select is None:
            expression = root.scope.expression
            assert isinstance(expression, exp.Select)
            select = expression
        if not all(isinstance(p, exp.Alias) for p in select.expressions):
            raise UnsupportedShape("every output column of an aggregation over entity data needs a name")
        outputs: dict[str, list[exp.Expr]] = {}
        for projection in select.expressions:
            outputs.setdefault(projection.alias.lower(), []).append(projection.unalias())
        keys = _group_keys(select, outputs)
        node = select.args.get("order")
        items: list[exp.Ordered] = node.expressions if node is not None else []
        order_all = any(isinstance(o.this, exp.Var) and o.this.name.upper() == "ALL" for o in items)
        if order_all and len(items) != 1:
            raise UnsupportedShape("ORDER BY ALL cannot be combined with other ORDER BY items here")
        order = [] if order_all else [_with_this(o, _expanded(o.this, select, outputs)) for o in items]
        fields = _fields(root, outputs) if materialize else None
        return cls(keys, order, order_all, fields, layout(select, items, order_all),
                   _grouping_sets(select, keys, outputs))

    def apply(self, select: exp.Select, entities: list[exp.Column], conditions: list[exp.Expr],
              stats: list[tuple[exp.Expr, int]], release: ReleasePlan) -> None:
        """Turn `select` (in place) into the wrapped form with the plan's helper columns."""
        with_ = select.args.get("with_") or exp.With(expressions=[])
        if self.fields is not None:
            fields = {alias: dict(columns) for alias, columns in self.fields.items()}
            for reference in [*entities, *(value for value, _ in stats)]:
                for column in reference.find_all(exp.Column):
                    fields.setdefault(column.table, {})[column.name.lower()] = column.name
            rows = exp.Select(expressions=[
                exp.alias_(exp.Struct(expressions=[exp.PropertyEQ(this=_name(f), expression=_col(f, alias))
                                                   for f in columns.values()]), _name(alias))
                for alias, columns in fields.items()])
            for arg in ("from_", "joins", "where"):
                value = select.args.get(arg)
                rows.set(arg, [v.copy() for v in value] if isinstance(value, list) else value and value.copy())
            with_.append("expressions", exp.CTE(this=rows, alias=exp.TableAlias(this=_name(ROWS_NAME)),
                                                materialized=True))
            source: dict[str, exp.Expr | list[exp.Expr] | None] = {
                "from_": exp.From(this=exp.Table(this=_name(ROWS_NAME))), "joins": None, "where": None}
        else:
            source = {arg: _copied(select.args.get(arg)) for arg in ("from_", "joins", "where")}
        query = select.copy()
        query.set("with_", None)
        query.set("distinct", None)  # every group is evaluated; a DISTINCT (partition_distinct) applies after the audit
        for arg, value in source.items():
            query.set(arg, _copied(value))
        projections = select.expressions
        hidden = [(f"{_KEY}{j}", key) for j, key in enumerate(self.keys)]
        if self.sets is not None:  # which grouping set a row belongs to (its NULL keys are not values)
            hidden.append((_GROUPING, exp.Grouping(expressions=[k.copy() for k in self.keys])))
        hidden += [(f"{_VALUE}{i}", p.unalias()) for i, p in enumerate(projections)]
        hidden += [(f"{_ORDER}{i}", ordered.this) for i, ordered in enumerate(self.order)]
        if self.shell is not None:
            for arg in ("having", "limit", "offset"):
                query.set(arg, None)
            having = self.shell.having
            if having is not None:
                if self.shell.windows:  # windows see only the groups HAVING keeps, as in the raw query
                    hidden = [(name, within_having(value, having)) for name, value in hidden]
                    query.set("expressions", [within_having(e, having) for e in query.expressions])
                hidden.append((_HAVING, having))
            hidden += partition_values(self.shell)
        for name, expression in hidden:
            query.append("expressions", exp.alias_(expression.copy(), _name(name)))
        expressions = [exp.alias_(_col(f"{_VALUE}{i}", _QUERY), _name(p.alias)) for i, p in enumerate(projections)]
        if self.shell is not None:
            having = _col(_HAVING, _QUERY) if self.shell.having is not None else None
            if self.order_all:
                desc = bool(select.args["order"].expressions[0].args.get("desc"))
                ranked = [exp.Ordered(this=_col(f"{_VALUE}{i}", _QUERY), desc=desc) for i in range(len(projections))]
            else:
                ranked = [_with_this(o, _col(f"{_ORDER}{i}", _QUERY)) for i, o in enumerate(self.order)]
            expressions += [exp.alias_(value, _name(name)) for name, value in hidden_values(self.shell, having, ranked)]
        joins = []
        for i, entity in enumerate(entities):
            alias = f"{_STATS}{i}"
            joins.append(self._stats(alias, entity, conditions, stats, source))
            expressions.append(exp.alias_(_col("n", alias), _name(R.group_count(i))))
            expressions.append(exp.alias_(_col("s", alias), _name(R.group_set(i))))
            for c in range(len(conditions)):
                expressions.append(exp.alias_(_col(f"n{c}", alias), _name(R.condition_count(i, c))))
                expressions.append(exp.alias_(_col(f"r{c}", alias), _name(R.condition_rows(i, c))))
                expressions.append(exp.alias_(_col(f"s{c}", alias), _name(R.condition_set(i, c))))
            for j in range(len(stats)):
                expressions.append(exp.alias_(_col(f"t{j}", alias), _name(R.stat_top(i, j))))
                expressions.append(exp.alias_(_col(f"a{j}", alias), _name(R.stat_total(i, j))))
        order = select.args["order"].copy() if self.order_all else None
        if self.order:
            order = exp.Order(expressions=[_with_this(o, _col(f"{_ORDER}{i}", _QUERY))
                                           for i, o in enumerate(self.order)])
        for arg in list(select.args):
            select.set(arg, None)
        if with_.expressions:
            select.set("with_", with_)
        select.set("expressions", expressions)
        select.set("from_", exp.From(this=exp.Subquery(this=query, alias=exp.TableAlias(this=_name(_QUERY)))))
        select.set("joins", joins)
        select.set("order", order)

    def _stats(self, alias: str, entity: exp.Column, conditions: list[exp.Expr], stats: list[tuple[exp.Expr, int]],
               source: dict[str, exp.Expr | list[exp.Expr] | None]) -> exp.Join:
        """LEFT JOIN (per-group entity counts, sets and dominance statistics of one instance) ON the group keys."""
        keys = [f"k{j}" for j in range(len(self.keys))]
        flags = [exp.alias_(exp.Anonymous(this="bool_or", expressions=[c.copy()]), _name(f"f{m}"))
                 for m, c in enumerate(conditions)]
        values = [exp.alias_(_filtered(exp.Sum(this=value.copy()), conditions, c), _name(f"v{j}"))
                  for j, (value, c) in enumerate(stats)]
        partial = exp.Select(
            expressions=[*(exp.alias_(k.copy(), _name(n)) for k, n in zip(self.keys, keys, strict=True)),
                         exp.alias_(entity.copy(), _name(_ENTITY)), *flags, *values],
            group=exp.Group(expressions=[*(k.copy() for k in self.keys), entity.copy()]))
        if self.sets is not None:
            partial.append("expressions", exp.alias_(exp.Grouping(expressions=[k.copy() for k in self.keys]),
                                                     _name("g")))
            partial.set("group", exp.Group(expressions=[exp.GroupingSets(expressions=[
                exp.Tuple(expressions=[*(self.keys[j].copy() for j in members), entity.copy()])
                for members in self.sets])]))
            keys = [*keys, "g"]
        for arg, value in source.items():
            partial.set(arg, _copied(value))
        entity_ref = _col(_ENTITY)
        known = exp.NEQ(this=entity_ref.copy(), expression=exp.Literal.number(0))
        counted: list[exp.Expr] = [
            exp.alias_(_where(exp.Count(this=entity_ref.copy(), big_int=True), known), _name("n")),
            exp.alias_(exp.Anonymous(this="list", expressions=[entity_ref.copy()]), _name("s"))]
        for m in range(len(conditions)):
            flag = _col(f"f{m}")
            counted += [
                exp.alias_(_where(exp.Count(this=entity_ref.copy(), big_int=True), exp.and_(flag.copy(), known.copy())),
                           _name(f"n{m}")),
                exp.alias_(exp.Anonymous(this="bool_or", expressions=[flag.copy()]), _name(f"r{m}")),
                exp.alias_(_where(exp.Anonymous(this="list", expressions=[entity_ref.copy()]), flag.copy()),
                           _name(f"s{m}"))]
        for j in range(len(stats)):
            magnitude = exp.Abs(this=_col(f"v{j}"))
            counted += [exp.alias_(exp.Max(this=magnitude.copy(), expressions=[exp.Literal.number(2)]),
                                   _name(f"t{j}")),
                        exp.alias_(exp.Sum(this=magnitude.copy()), _name(f"a{j}"))]
        counts = exp.Select(expressions=[*(_col(n) for n in keys), *counted],
                            from_=exp.From(this=exp.Subquery(this=partial,
                                                             alias=exp.TableAlias(this=_name(_PARTIAL)))))
        if keys:
            counts.set("group", exp.Group(expressions=[_col(n) for n in keys]))
        on = exp.and_(*(exp.NullSafeEQ(this=_col(f"{_KEY}{j}" if n != "g" else _GROUPING, _QUERY),
                                       expression=_col(n, alias))
                        for j, n in enumerate(keys))) if keys else exp.true()
        return exp.Join(this=exp.Subquery(this=counts, alias=exp.TableAlias(this=_name(alias))), kind="LEFT", on=on)


def _filtered(aggregate: exp.Expr, conditions: list[exp.Expr], index: int) -> exp.Expr:
    return aggregate if index < 0 else _where(aggregate, conditions[index].copy())


def _where(aggregate: exp.Expr, condition: exp.Expr) -> exp.Expr:
    return exp.Filter(this=aggregate, expression=exp.Where(this=condition))


def _copied(value: object) -> exp.Expr | list[exp.Expr] | None:
    if isinstance(value, list):
        return [v.copy() for v in value]
    return value.copy() if isinstance(value, exp.Expr) else None


def _fields(root: ScopeFacts, outputs: dict[str, list[exp.Expr]]) -> dict[str, dict[str, str]] | None:
    """Columns per source alias for the materialized form, or None when the top-level clauses need the FROM."""
    select = root.scope.expression
    assert isinstance(select, exp.Select)
    sources = {alias.lower(): alias for alias in root.scope.selected_sources}
    if not sources:
        return None
    fields: dict[str, dict[str, str]] = {}
    for column in _clause_columns(select):
        table, name = column.table.lower(), column.name.lower()
        if column.find_ancestor(exp.Select) is not select:
            return None  # a column of a subquery expression: possibly correlated
        if not table:  # an output-alias reference: it must not meet a struct column of the rows CTE
            if name in sources or name not in outputs:
                return None
        elif table in sources and not column.args.get("db"):
            fields.setdefault(sources[table], {})[name] = column.name
        else:
            return None
    return fields


def _clause_columns(select: exp.Select) -> list[exp.Column]:
    """Every column reference in the clauses that stay with the aggregation (all but WITH, FROM, JOIN, WHERE)."""
    columns: list[exp.Column] = []
    for arg in ("expressions", "group", "having", "qualify", "order", "limit", "offset"):
        value = select.args.get(arg)
        for node in value if isinstance(value, list) else [value] if value is not None else []:
            columns.extend(node.find_all(exp.Column))
    return columns


def _group_keys(select: exp.Select, outputs: dict[str, list[exp.Expr]]) -> list[exp.Expr]:
    """The grouping expressions, positions and output-alias references replaced by the projections they name."""
    group = select.args.get("group")
    if group is None:
        return []
    if any(value for arg, value in group.args.items() if arg not in ("expressions", "all")):
        raise UnsupportedShape("this GROUP BY form is not supported over entity data; spell the grouping sets out")
    if group.args.get("all"):
        if group.expressions:
            raise UnsupportedShape("GROUP BY ALL cannot be combined with other keys")
        return [p.unalias() for p in select.expressions if not p.find(exp.AggFunc)]
    keys: list[exp.Expr] = []
    for key in group.expressions:
        for expression in (key.expressions if isinstance(key, _GROUPINGS) else [key]):
            for item in (expression.expressions if isinstance(expression, exp.Tuple) else [expression.unnest()]):
                expanded = _expanded(item, select, outputs)
                if expanded not in keys:
                    keys.append(expanded)
    return keys


_GROUPINGS = (exp.Rollup, exp.Cube, exp.GroupingSets)


def _grouping_sets(select: exp.Select, keys: list[exp.Expr], outputs: dict[str, list[exp.Expr]]
                   ) -> list[list[int]] | None:
    """The grouping sets of a GROUP BY with ROLLUP / CUBE / GROUPING SETS, as indexes into `keys`; None without."""
    group = select.args.get("group")
    if group is None or not any(isinstance(k, _GROUPINGS) for k in group.expressions):
        return None
    sets: list[list[int]] = [[]]
    for key in group.expressions:
        if isinstance(key, exp.Rollup):
            items = [keys.index(_expanded(e.unnest(), select, outputs)) for e in key.expressions]
            options = [items[:n] for n in range(len(items), -1, -1)]
        elif isinstance(key, exp.Cube):
            items = [keys.index(_expanded(e.unnest(), select, outputs)) for e in key.expressions]
            options = [[items[i] for i in range(len(items)) if mask >> i & 1] for mask in range(2 ** len(items))]
        elif isinstance(key, exp.GroupingSets):
            options = []
            for expression in key.expressions:
                members = expression.expressions if isinstance(expression, exp.Tuple) else [expression.unnest()]
                options.append([keys.index(_expanded(e, select, outputs)) for e in members])
        else:
            options = [[keys.index(_expanded(key, select, outputs))]]
        sets = [[*s, *o] for s in sets for o in options]
    if len(sets) > 64:
        raise UnsupportedShape("more than 64 grouping sets")
    return sets


def _expanded(node: exp.Expr, select: exp.Select, outputs: dict[str, list[exp.Expr]]) -> exp.Expr:
    """`node` with a position (`1`) or output-alias references replaced by the projections they name."""
    if isinstance(node, exp.Literal) and not node.is_string:
        position = int(node.name)
        if not 1 <= position <= len(select.expressions):
            raise UnsupportedShape(f"position {position} does not name an output column")
        return select.expressions[position - 1].unalias().copy()
    if isinstance(node, exp.Literal):
        return node.copy()
    expanded = exp.paren(node.copy(), copy=False)
    for column in list(expanded.find_all(exp.Column)):
        if not column.table:
            target = outputs.get(column.name.lower(), [])
            if len(target) != 1:
                raise UnsupportedShape(f"{column.name} does not name exactly one output column")
            column.replace(exp.paren(target[0].copy(), copy=False))
    return expanded.unnest()


def _with_this(ordered: exp.Ordered, this: exp.Expr) -> exp.Ordered:
    item = ordered.copy()
    item.set("this", this)
    return item


def _name(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table, quoted=True)
