"""The release rewrite: add, per entity instance, the entity sets and dominance statistics of every released cell.

The user's aggregation runs unchanged, wrapped as a subquery with hidden copies of its group keys, outputs and
ORDER BY values. For each entity instance, a statistics subquery reads the same rows (the same FROM / JOIN / WHERE),
pre-aggregates them to one row per (group keys, entity index) with one `bool_or(<contributing condition>)` per
condition and one `sum(<base column>) FILTER (WHERE <contributing>)` per dominance statistic, then aggregates per
group: the entity count and the list of entity indexes of the group and of each condition, whether any row meets the
condition, and each statistic's two largest absolute contributions and their absolute total. It is LEFT JOINed to
the user's groups on the keys with IS NOT DISTINCT FROM (grouping's equality, NULL keys included); the outer query
re-applies the ORDER BY and names the columns as before, helpers last (policy/sql_release.py names them).

Entity indexes come from the hidden column ``__sluice_eidx`` of every prepared entity input (a dense index over the
population's raw ids, 0 for rows without an entity; sandbox/populations.py), carried up through row-level CTEs and
derived tables by passthrough columns.

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
from sqlglot.optimizer.scope import Scope, walk_in_scope

from policy import sql_release as R
from policy.constraints import Constraint
from policy.sql_conditional import branches
from policy.sql_lineage import Lineage, TooComplex
from policy.sql_model import ScopeFacts, aggregate_arguments
from policy.sql_release import Cell, Component, ReleasePlan, Stat, measures_of
from policy.sql_shell import ShellLayout, hidden_values, layout, partition_values, within_having
from policy.sql_threshold import ThresholdPlan
from policy.sql_types import NUMERIC_TYPES

EIDX = "__sluice_eidx"
PASSTHROUGH_PREFIX = "__sluice_e"
ROWS_NAME = "__sluice_rows"
_QUERY, _STATS, _PARTIAL = "__sluice_q", "__sluice_c", "__sluice_p"
_KEY, _VALUE, _ORDER, _ENTITY = "__sluice_k", "__sluice_v", "__sluice_o", "__sluice_entity"
_HAVING = "__sluice_h"
_GROUPING = "__sluice_g"
MAX_MONOMIALS = 64
_STDDEV = (exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance, exp.VariancePop)
_NUMERIC_TYPE_NAMES = ("TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
                       "UINTEGER", "UBIGINT", "FLOAT", "REAL", "DOUBLE", "DECIMAL", "NUMERIC")


class UnsupportedShape(Exception):
    """The rewrite cannot enforce the threshold on this query; it is refused."""


Monomial = tuple[str, ...]


def rewrite_threshold(lineage: Lineage, plan: ThresholdPlan) -> ReleasePlan | None:
    """Add the release helper columns to the top-level aggregation (in place); return the release plan."""
    if not plan.instances:
        return None
    select = lineage.root.scope.expression
    assert isinstance(select, exp.Select)
    shape = _Shape.of(lineage)
    passthrough: dict[tuple[int, exp.Expr], str] = {}
    entities = [_reference(lineage, i.path, i.table, passthrough, i.branches) for i in plan.instances]
    builder = _Builder(lineage, passthrough)
    release = builder.build([i.population for i in plan.instances], shape.shell)
    shape.apply(select, entities, builder.conditions, builder.stat_values, release)
    return release


# --- the release plan -------------------------------------------------------------------------------------------
class _Builder:
    """Components, conditions, measures and dominance statistics of the top-level aggregation (or of one branch of a
    set operation of aggregations, `root`)."""

    def __init__(self, lineage: Lineage, passthrough: dict[tuple[int, exp.Expr], str],
                 root: ScopeFacts | None = None) -> None:
        self.lineage = lineage
        self.root = root if root is not None else lineage.root
        self.passthrough = passthrough
        self.conditions: list[exp.Expr] = []  # structural equality dedupes them
        self.stat_values: list[tuple[exp.Expr, int]] = []  # (base column reference, condition index)
        self._stats: list[Stat] = []
        self._monomials: dict[tuple[int, int], frozenset[Monomial]] = {}

    def build(self, populations: list[str], shell: ShellLayout | None) -> ReleasePlan:
        """The release plan of the aggregation's cells (helper-column layout of its own instances)."""
        root = self.root
        select = root.scope.expression
        components: list[Component] = []
        by_node: dict[int, list[int]] = {}
        for aggregate in root.aggregates:
            parts = self._components(aggregate, len(components))
            by_node[id(aggregate)] = list(range(len(components), len(components) + len(parts)))
            components += parts
        cells = []
        for index, projection in enumerate(select.expressions):
            used = sorted({c for n in walk_in_scope(projection) if id(n) in by_node for c in by_node[id(n)]})
            if used:
                cells.append(Cell(index, projection.alias_or_name, tuple(used)))
        columns = len(select.expressions)
        for j, (name, node) in enumerate(shell.hidden if shell is not None else []):
            used = sorted({c for n in walk_in_scope(node) if id(n) in by_node for c in by_node[id(n)]}) \
                if node is not None else []
            if used:
                cells.append(Cell(columns + j, name, tuple(used)))
        return ReleasePlan(instances=tuple(populations), conditions=len(self.conditions),
                           components=tuple(components), cells=tuple(cells), stats=tuple(self._stats),
                           columns=columns, hidden=tuple(n for n, _ in shell.hidden) if shell is not None else (),
                           shell=shell.shell(columns, {c.index for c in cells}) if shell is not None else None)

    def _components(self, aggregate: exp.Expr, start: int) -> list[Component]:
        """One component per branch of a conditional aggregate (sql_conditional.py), else one."""
        conditional = branches(aggregate)
        if conditional is None:
            return [self._component(aggregate, start)]
        out: list[Component] = []
        for condition, value in conditional:
            out.append(self._component(aggregate, start + len(out), branch=condition,
                                       arguments=[value] if value is not None else []))
        return out

    def _component(self, aggregate: exp.Expr, index: int, *, branch: exp.Expr | None = None,
                   arguments: list[exp.Expr] | None = None) -> Component:
        filter_ = _filter_of(aggregate)
        if arguments is None:
            arguments = aggregate_arguments(aggregate)
        distinct = isinstance(aggregate, exp.Count) and isinstance(aggregate.this, exp.Distinct)
        parts = [filter_] if filter_ is not None else []
        if branch is not None:
            parts.append(exp.paren(branch.copy(), copy=False))
        strict = self._compares_protected([filter_, branch])
        component = self._component_of(aggregate, index, parts, arguments, distinct)
        return dataclasses.replace(component, strict=True) if strict else component

    def _compares_protected(self, conditions: list[exp.Expr | None]) -> bool:
        """Whether a FILTER or CASE condition (as found in the aggregate: columns resolvable in the root scope)
        reads an `aggregate` column."""
        root = self.root
        for node in conditions:
            if node is None:
                continue
            origins, _, _ = self.lineage.expression_origins(node, root)
            if any(self.lineage.constraint_of(o) == Constraint.AGGREGATE for o in origins):
                return True
        return False

    def _component_of(self, aggregate: exp.Expr, index: int, parts: list[exp.Expr], arguments: list[exp.Expr],
                      distinct: bool) -> Component:
        if not distinct:
            parts += [exp.not_(exp.Is(this=exp.paren(a.copy(), copy=False), expression=exp.Null()))
                      for a in arguments]
        condition = self._condition(parts)
        if distinct:
            argument = arguments[0]
            origins, _, _ = self.lineage.expression_origins(argument, self.root)
            origin = next(iter(origins))
            if self.lineage.catalog.is_entity(origin.table, origin.column):
                return Component("entities", condition)
            return Component("rows", condition, measures_of("rows", ()))  # distinct identifiers: like rows
        if isinstance(aggregate, exp.Count | exp.CountIf):
            return Component("rows", condition, measures_of("rows", ()))
        scope = self.root.scope
        monomials = set().union(*(self._expand(a, scope) for a in arguments)) if arguments else set()
        squares: frozenset[Monomial] = frozenset()
        if isinstance(aggregate, _STDDEV):
            squares = _times(frozenset(monomials), frozenset(monomials))
        measures = measures_of("value", sorted(monomials), sorted(squares),
                               counts_rows=not isinstance(aggregate, exp.Sum))
        stats = []
        seen: set[str] = set()
        for argument in arguments:
            for label, reference in self._base_columns(argument, scope):
                if label in seen:
                    continue
                seen.add(label)
                stats.append(len(self._stats))
                self._stats.append(Stat(index, label))
                self.stat_values.append((reference, condition if condition is not None else -1))
        return Component("value", condition, measures, tuple(stats))

    def _condition(self, parts: list[exp.Expr]) -> int | None:
        if not parts:
            return None
        condition = exp.and_(*parts)
        if condition not in self.conditions:
            self.conditions.append(condition)
        return self.conditions.index(condition)

    # polynomial expansion (which monomials of base columns a value is made of) ---------------------------------
    def _expand(self, node: exp.Expr, scope: Scope) -> frozenset[Monomial]:
        self.lineage.budget.spend()
        if isinstance(node, exp.Column):
            return self._expand_column(node, scope)
        if isinstance(node, exp.Literal | exp.Placeholder | exp.Null | exp.Boolean):
            return frozenset({()})
        if isinstance(node, exp.Mul):
            return _times(self._expand(node.this, scope), self._expand(node.expression, scope))
        if isinstance(node, exp.Div):
            return self._expand(node.this, scope)  # divisors are constants (anything else is refused)
        out: set[Monomial] = set()
        for child in node.iter_expressions():
            if isinstance(child, exp.DataType):
                continue
            out |= self._expand(child, scope)
        return frozenset(out)

    def _expand_column(self, column: exp.Column, scope: Scope) -> frozenset[Monomial]:
        source = _source(scope, column.table)
        if isinstance(source, exp.Table):
            return frozenset({(f"{self.lineage.catalog.name(source.name.lower())}.{column.name.lower()}",)})
        if isinstance(source, Scope):
            key = (id(source), hash(column.name))
            known = self._monomials.get(key)
            if known is None:
                known = frozenset().union(*(self._expand(value, child)
                                            for value, child in _projections(source, column.name)))
                self._monomials[key] = known
            return known
        return frozenset({()})

    # dominance: base columns, carried up unchanged --------------------------------------------------------------
    def _base_columns(self, node: exp.Expr, scope: Scope) -> list[tuple[str, exp.Expr]]:
        out: list[tuple[str, exp.Expr]] = []
        for column in [n for n in walk_in_scope(node) if isinstance(n, exp.Column) and n.table]:
            out += self._trace(column, scope)
        return out

    def _trace(self, column: exp.Column, scope: Scope) -> list[tuple[str, exp.Expr]]:
        self.lineage.budget.spend()
        source = _source(scope, column.table)
        if isinstance(source, exp.Table):
            table = source.name.lower()
            policy = self.lineage.catalog.column(table, column.name)
            if policy is None or not policy.type.upper().startswith(_NUMERIC_TYPE_NAMES):
                return []
            return [(f"{self.lineage.catalog.name(table)}.{policy.name.lower()}", column.copy())]
        if not (isinstance(source, Scope) and isinstance(source.expression, exp.Select)) or (
                self.lineage.facts(source).is_aggregate):
            # a column of a set operation or an aggregate (of data without entities): no raw base value of the
            # entity's rows to carry up; the value itself is what each entity's rows contribute
            if column.type is not None and column.type.this in NUMERIC_TYPES:
                return [(f"{column.table}.{column.name}", column.copy())]
            return []
        out: list[tuple[str, exp.Expr]] = []
        for value, child in _projections(source, column.name):
            for inner in [n for n in walk_in_scope(value) if isinstance(n, exp.Column) and n.table]:
                for label, reference in self._trace(inner, child):
                    out.append((label, _carry(source, column.table, reference, self.passthrough)))
        return out


def _filter_of(aggregate: exp.Expr) -> exp.Expr | None:
    parent = aggregate.parent
    while isinstance(parent, exp.IgnoreNulls | exp.RespectNulls):
        parent = parent.parent
    if isinstance(parent, exp.Filter):
        return exp.paren(parent.expression.this.copy(), copy=False)
    return None


def _times(left: frozenset[Monomial], right: frozenset[Monomial]) -> frozenset[Monomial]:
    out = frozenset(tuple(sorted(a + b)) for a in left for b in right)
    if len(out) > MAX_MONOMIALS:
        raise TooComplex(f"an aggregate expands into more than {MAX_MONOMIALS} products of columns")
    return out


def _source(scope: Scope, alias: str) -> exp.Table | Scope | None:
    current: Scope | None = scope
    while current is not None:
        source = current.sources.get(alias)
        if source is not None:
            return source
        current = current.parent
    return None


def _projections(source: Scope, name: str) -> list[tuple[exp.Expr, Scope]]:
    """The expression(s) behind output `name` of a scope: one per set-operation branch."""
    expression = source.expression
    if isinstance(expression, exp.Select):
        for projection in expression.expressions:
            if projection.alias_or_name.lower() == name.lower():
                return [(projection.unalias(), source)]
        return []
    out = []
    for branch in source.set_operation_scopes:
        out += _projections(branch, name)
    return out


def _carry(child: Scope, alias: str, inner: exp.Expr, passthrough: dict[tuple[int, exp.Expr], str]) -> exp.Column:
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


def _reference(lineage: Lineage, path: tuple[tuple[Scope, str], ...], table: str,
               passthrough: dict[tuple[int, exp.Expr], str],
               branches: tuple[tuple[Scope, str | None], ...] = ()) -> exp.Column:
    """A column, valid in the first scope of `path`, carrying the entity index of the instance at its end."""
    scope, alias = path[0]
    if len(path) == 1:
        if branches:
            return _carry_union(alias, branches, passthrough)
        return exp.column(EIDX, table=alias, quoted=True)
    child = scope.sources[alias]
    assert isinstance(child, Scope) and isinstance(child.expression, exp.Select)
    return _carry(child, alias, _reference(lineage, path[1:], table, passthrough, branches), passthrough)


def _carry_union(alias: str, branches: tuple[tuple[Scope, str | None], ...],
                 passthrough: dict[tuple[int, exp.Expr], str]) -> exp.Column:
    """The entity index carried up as the last output of every branch of a UNION ALL (0 where a branch has none)."""
    name = f"{PASSTHROUGH_PREFIX}{len(passthrough)}"
    passthrough[(id(branches), exp.to_identifier(name))] = name
    for branch, table_alias in branches:
        value = exp.column(EIDX, table=table_alias, quoted=True) if table_alias is not None \
            else exp.cast(exp.Literal.number(0), "UINTEGER")
        branch.expression.append("expressions", exp.alias_(value, exp.to_identifier(name, quoted=True)))
    return exp.column(name, table=alias, quoted=True)


# --- the SQL ----------------------------------------------------------------------------------------------------
@dataclass
class _Shape:
    """The top-level aggregation's keys and order, and whether its rows can be materialized once."""

    keys: list[exp.Expr]
    order: list[exp.Ordered]
    order_all: bool
    fields: dict[str, dict[str, str]] | None  # source alias -> column names (materialized form), else None
    shell: ShellLayout | None = None  # HAVING / LIMIT / OFFSET applied after the audit (sql_shell.py)
    sets: list[list[int]] | None = None  # ROLLUP / CUBE / GROUPING SETS: each set's key indexes

    @classmethod
    def of(cls, lineage: Lineage, root: ScopeFacts | None = None, *, materialize: bool = True) -> _Shape:
        """The shape of the top-level SELECT (or `root`); raises UnsupportedShape when keys or order cannot be
        resolved. Without `materialize`, the statistics read a copy of the FROM / JOIN / WHERE (no CTE added)."""
        root = root if root is not None else lineage.root
        select = root.scope.expression
        assert isinstance(select, exp.Select)
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
