"""Row selection after the audit: HAVING, LIMIT and OFFSET of an aggregation over entity data.

Every aggregate over entity data that is evaluated counts as released, whether it is output or not: a HAVING that
keeps or drops a group by its value, or an ORDER BY that LIMIT cuts, would otherwise let a binary search over
thresholds recover what the audit protects. So when the top-level aggregation has HAVING, LIMIT or OFFSET, the
rewrite evaluates every group (HAVING, LIMIT and OFFSET are taken out of the SQL), and adds hidden columns after the
user's: the HAVING value (a hidden cell), the order values LIMIT cuts by (hidden cells, unless they are output
columns), the row's raw rank (kept in the format, not used to select), and the LIMIT and OFFSET values. Output
control and the audit decide on every cell of every group; `policy.output.finish` then selects the rows: the OFFSET /
LIMIT slice of the released order (sql_release.Shell says how).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from policy import sql_release as R


@dataclass
class ShellLayout:
    """The hidden columns of a shell, in order: (name, the original node whose aggregates make it a cell, or None)."""

    hidden: list[tuple[str, exp.Expr | None]] = field(default_factory=list)
    having: exp.Expr | None = None
    limit: exp.Expr | None = None
    offset: exp.Expr | None = None
    order: list[int] = field(default_factory=list)  # absolute column indexes (user or hidden) LIMIT cuts by
    windows: list[tuple[int, str, list[exp.Expr]]] = field(default_factory=list)
    """(output column, hidden partition column, partition expressions) of each output column with a window."""

    def index(self, columns: int, name: str) -> int | None:
        """The absolute column index of a hidden column (None when absent)."""
        for j, (hidden, _) in enumerate(self.hidden):
            if hidden == name:
                return columns + j
        return None

    def shell(self, columns: int, cells: set[int]) -> R.Shell:
        """The plan's Shell (order columns restricted to those that are cells)."""
        pos = self.index(columns, R.POS)
        assert pos is not None
        windows = []
        for column, name, _ in self.windows:
            partition = self.index(columns, name)
            assert partition is not None
            windows.append((column, partition))
        return R.Shell(pos=pos, keep=self.index(columns, R.KEEP), limit=self.index(columns, R.LIMIT),
                       offset=self.index(columns, R.OFFSET), order=tuple(c for c in self.order if c in cells),
                       windows=tuple(windows))


def layout(select: exp.Select, order_items: list[exp.Ordered], order_all: bool) -> ShellLayout | None:
    """The shell of the top-level aggregation, or None when it has no HAVING, LIMIT or OFFSET."""
    having = select.args.get("having")
    limit = select.args.get("limit")
    offset = select.args.get("offset")
    windowed = [(i, list(p.find_all(exp.Window))) for i, p in enumerate(select.expressions)]
    windowed = [(i, w) for i, w in windowed if w]
    unnamed = not order_all and any(_output_index(o.this, select) is None for o in order_items)
    if having is None and limit is None and offset is None and not windowed and not unnamed:
        return None
    columns = len(select.expressions)
    out = ShellLayout(having=having.this if having is not None else None,
                      limit=limit.expression if limit is not None else None,
                      offset=offset.expression if offset is not None else None)
    for index, windows in windowed:
        partitions = {tuple(e.sql() for e in w.args.get("partition_by") or []) for w in windows}
        partition = list(windows[0].args.get("partition_by") or []) if len(partitions) == 1 else []
        out.windows.append((index, f"{R.PARTITION}{index}", partition))
    if having is not None:
        out.hidden.append((R.KEEP, having.this))
    if order_all:
        out.order = list(range(columns))
    for i, ordered in enumerate([] if order_all else order_items):
        # every ORDER BY value is a column of the result, so that the released rows can be re-sorted by released
        # values only (`output.finish`): an output column, a hidden cell (it reads an aggregate: audited like the
        # outputs), or a hidden key (a function of the group keys)
        target = _output_index(ordered.this, select)
        if target is not None:
            out.order.append(target)
        elif ordered.this.find(exp.AggFunc) is not None:
            out.order.append(columns + len(out.hidden))
            out.hidden.append((f"{R.ORDER_CELL}{i}", ordered.this))
        else:
            out.hidden.append((f"{R.ORDER_KEY}{i}", ordered.this))
    out.hidden += [(name, None) for _, name, _ in out.windows]
    out.hidden.append((R.POS, None))
    if limit is not None:
        out.hidden.append((R.LIMIT, None))
    if offset is not None:
        out.hidden.append((R.OFFSET, None))
    return out


INNER_PARTITION = "__sluice_w"
QUERY = "__sluice_q"


def partition_values(shell: ShellLayout) -> list[tuple[str, exp.Expr]]:
    """Hidden columns of the wrapped aggregation: each windowed output's partition, numbered over all groups."""
    out: list[tuple[str, exp.Expr]] = []
    for index, _, partition in shell.windows:
        value: exp.Expr = exp.Literal.number(1)
        if partition:
            value = exp.Window(this=exp.func("dense_rank"),
                               order=exp.Order(expressions=[exp.Ordered(this=p.copy()) for p in partition]))
        out.append((f"{INNER_PARTITION}{index}", value))
    return out


def within_having(node: exp.Expr, having: exp.Expr) -> exp.Expr:
    """`node` (a copy) with every window partitioned first by whether its group passes HAVING: every group is
    evaluated, but a window of the raw query only sees the groups HAVING keeps."""
    out = node.copy()
    for window in list(out.find_all(exp.Window)):
        passes = exp.func("coalesce", exp.paren(having.copy(), copy=False), exp.false())
        window.set("partition_by", [passes, *(window.args.get("partition_by") or [])])
    return out


def _output_index(node: exp.Expr, select: exp.Query) -> int | None:
    """The output column an ORDER BY item names (a position, an output alias, or a projection's own expression),
    or None."""
    if isinstance(node, exp.Literal) and node.is_number:
        return int(node.name) - 1
    projections = select.selects
    if isinstance(node, exp.Column) and not node.table:
        for index, projection in enumerate(projections):
            if projection.alias_or_name.lower() == node.name.lower():
                return index
    if isinstance(select, exp.Select):
        for index, projection in enumerate(projections):
            if projection.unalias() == node:
                return index
    return None


def order_spec(query: exp.Expr) -> list[tuple[int | None, bool, bool, tuple[int, ...]]] | None:
    """The top-level ORDER BY before the rewrite: per item, (the output column it names or None, desc, nulls
    first, the output columns it reads by alias); None without ORDER BY."""
    if not isinstance(query, exp.Query):
        return None
    node = query.args.get("order")
    if node is None:
        return None
    items: list[exp.Ordered] = node.expressions
    columns = len(query.selects)
    if any(isinstance(o.this, exp.Var) and o.this.name.upper() == "ALL" for o in items):
        desc = bool(items[0].args.get("desc"))
        nulls = bool(items[0].args.get("nulls_first"))
        return [(c, desc, nulls, ()) for c in range(columns)]
    names = {p.alias_or_name.lower(): i for i, p in enumerate(query.selects)}
    out: list[tuple[int | None, bool, bool, tuple[int, ...]]] = []
    for ordered in items:
        reads = tuple(sorted({names[c.name.lower()] for c in ordered.this.find_all(exp.Column)
                              if not c.table and c.name.lower() in names}))
        out.append((_output_index(ordered.this, query), bool(ordered.args.get("desc")),
                    bool(ordered.args.get("nulls_first")), reads))
    return out


def sort_keys(spec: list[tuple[int | None, bool, bool, tuple[int, ...]]] | None, plan: R.ReleasePlan
              ) -> tuple[R.SortKey, ...] | None:
    """The plan's sort keys (`order_spec` resolved against the plan's hidden columns); () without ORDER BY, None
    when an item has no column of the result (the rows are then released in a canonical order)."""
    if spec is None:
        return ()
    keys: list[R.SortKey] = []
    for i, (index, desc, nulls_first, reads) in enumerate(spec):
        if index is None:
            for name in (f"{R.ORDER_CELL}{i}", f"{R.ORDER_KEY}{i}"):
                if name in plan.hidden:
                    index = plan.columns + plan.hidden.index(name)
            if index is None:
                return None
        keys.append(R.SortKey(index, desc, nulls_first, tuple(r for r in reads if r != index)))
    return tuple(keys)


def hidden_values(shell: ShellLayout, having: exp.Expr | None, order: list[exp.Ordered]) -> list[tuple[str, exp.Expr]]:
    """The outer SELECT's hidden columns; `having` and `order` reference the wrapped aggregation's hidden copies."""
    keep = exp.func("coalesce", having, exp.false()) if having is not None else None
    out: list[tuple[str, exp.Expr]] = []
    for name, _ in shell.hidden:
        if name == R.KEEP and keep is not None:
            out.append((name, keep))
        elif name.startswith(R.ORDER_CELL):
            out.append((name, order[int(name[len(R.ORDER_CELL):])].this.copy()))
        elif name.startswith(R.ORDER_KEY):
            out.append((name, order[int(name[len(R.ORDER_KEY):])].this.copy()))
        elif name == R.POS:
            # kept in the plan's format; the raw rank is not computed: rows are ranked after the audit, by released
            # values only (`output_rows.shell_rows`), since the raw rank ranked suppressed values too
            out.append((name, exp.Literal.number(1)))
        elif name.startswith(R.PARTITION):
            out.append((name, exp.column(f"{INNER_PARTITION}{name[len(R.PARTITION):]}", table=QUERY, quoted=True)))
        elif name == R.LIMIT and shell.limit is not None:
            out.append((name, exp.cast(shell.limit.copy(), "BIGINT")))
        elif name == R.OFFSET and shell.offset is not None:
            out.append((name, exp.cast(shell.offset.copy(), "BIGINT")))
    return out
