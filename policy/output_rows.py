"""The rows a release plan keeps, and their order: both decided after the audit, by released values only.

`finish` (policy/output.py) calls these with output control's marks and the audit's suppressions (`marks`: (row,
column) -> reason). `released_order` sorts rows by the ORDER BY values as released (a suppressed cell as NULL),
then by every released output column, then by the reasons of suppressed output cells; `select_rows` applies HAVING
and the OFFSET / LIMIT slice of that order (`sql_release.Shell`). policy/release_stages.py reads `candidates` and
`slice_bounds` to audit only what the selection reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from policy.output_sets import settle
from policy.sql_release import ReleasePlan

Marks = Mapping[tuple[int, int], Any]


def released_order(table: pa.Table, rows: list[int], plan: ReleasePlan, suppressed: Marks, *,
                   tie_break: bool = True) -> list[int]:
    """`rows` sorted by released values only, so that their order says nothing about a suppressed value.

    The raw query's order was decided by every value, suppressed ones included (`ORDER BY n` lists a suppressed
    n between the released ones at its rank). Here the keys are the plan's ORDER BY items (`ReleasePlan.sort`:
    output columns or hidden order cells, NULL where suppressed, or where an output column they read by alias
    was), then every output column ascending, NULLs last, as released, then the reasons of suppressed output
    cells: rows still tied are equal in everything released (values and marker), so ties never fall back on the
    raw order in a way anyone can see. OFFSET / LIMIT cut this order (`shell_rows`).
    Without sort keys (no ORDER BY, or one the plan cannot apply) the rows are sorted by the output columns
    alone. With `tie_break=False`, by the sort keys only (ties stay in the given order: policy/release_stages.py)."""
    if len(rows) < 2:
        return rows
    columns: list[pa.Array] = []
    orders: list[tuple[str, str]] = []
    picked = pa.array(rows, type=pa.int64())

    def add(column: int, desc: bool, nulls_first: bool, depends: tuple[int, ...] = ()) -> None:
        values = table.column(column).take(picked).combine_chunks()
        hidden = [i for i, row in enumerate(rows) if (row, column) in suppressed
                  or any((row, d) in suppressed for d in depends)]
        if hidden:
            mask = np.zeros(len(rows), dtype=bool)
            mask[hidden] = True
            values = pc.if_else(pa.array(mask), pa.scalar(None, type=values.type), values)
        values = _sortable(values)
        missing = values.is_null()
        columns.extend([missing, values])
        orders.extend([(f"k{len(orders)}", "descending" if nulls_first else "ascending"),
                       (f"k{len(orders) + 1}", "descending" if desc else "ascending")])

    for key in plan.sort or ():
        add(key.column, key.desc, key.nulls_first, key.depends)
    if tie_break:
        for column in range(plan.columns):
            add(column, False, False)
        marked = {column for _, column in suppressed}
        for column in (c for c in range(plan.columns) if c in marked):  # then why each was suppressed (rows still
            # tied are released alike)
            columns.append(pa.array([str(suppressed[(row, column)]) if (row, column) in suppressed else ""
                                     for row in rows], type=pa.string()))
            orders.append((f"k{len(orders)}", "ascending"))
    if not columns:
        return rows
    keys = pa.table(columns, names=[f"k{i}" for i in range(len(columns))])
    order = pc.sort_indices(keys, sort_keys=orders).to_pylist()
    return [rows[i] for i in order]


def _sortable(values: pa.Array) -> pa.Array:
    """`values` as a type Arrow can sort (nested values as their canonical JSON text)."""
    kind = values.type
    if pa.types.is_nested(kind) or pa.types.is_dictionary(kind) or pa.types.is_null(kind):
        return pa.array([None if v is None else json.dumps(v, default=str, sort_keys=True)
                         for v in values.to_pylist()], type=pa.string())
    return values


def select_rows(table: pa.Table, plan: ReleasePlan, suppressed: Marks | None = None) -> list[int]:
    """The rows a shell keeps (see sql_release.Shell): HAVING, then OFFSET / LIMIT over the released order."""
    if plan.setop is not None:
        settled = settle(table, plan, suppressed or {})[0]
        return shell_rows(table, plan, settled, suppressed or {}) if plan.shell is not None else settled
    if plan.shell is None:
        return list(range(table.num_rows))
    return shell_rows(table, plan, range(table.num_rows), suppressed or {})


def candidates(table: pa.Table, plan: ReleasePlan, suppressed: Marks) -> list[int]:
    """The rows OFFSET / LIMIT rank over one aggregation: those where HAVING holds and its value was released."""
    return _having_kept(table, plan, range(table.num_rows), suppressed)


def _having_kept(table: pa.Table, plan: ReleasePlan, rows: Iterable[int], suppressed: Marks) -> list[int]:
    """`rows` where HAVING holds and its value was released (all of them without HAVING)."""
    assert plan.shell is not None
    keep = plan.shell.keep
    values = table.column(keep).to_pylist() if keep is not None else None
    return [row for row in rows if values is None or (values[row] and (row, keep) not in suppressed)]


def slice_bounds(table: pa.Table, plan: ReleasePlan, row: int) -> tuple[int, int | None]:
    """The OFFSET (0 when absent) and LIMIT (None when absent) of a shell, read in `row`."""
    assert plan.shell is not None
    return _clause(table, plan.shell.offset, row) or 0, _clause(table, plan.shell.limit, row)


def shell_rows(table: pa.Table, plan: ReleasePlan, candidates: Iterable[int], suppressed: Marks) -> list[int]:
    """The candidate rows HAVING keeps and, with OFFSET / LIMIT, the slice of them in the released order.

    The rank is taken among the rows output control and the audit left (a group dropped for k, or whose HAVING
    cell was suppressed, is not a candidate), by `released_order`: the ORDER BY values as released (a suppressed
    one ranks as NULL), ties broken by the released output columns. So which rows fall within the limit is a
    function of released values and of which cells were suppressed, never of a suppressed value (the raw rank,
    `Shell.pos`, is not used: it ranked suppressed values too)."""
    shell = plan.shell
    assert shell is not None
    rows = _having_kept(table, plan, candidates, suppressed)
    if not rows or (shell.limit is None and shell.offset is None):
        return rows
    rows = released_order(table, rows, plan, suppressed)
    first, count = slice_bounds(table, plan, rows[0])
    return rows[first:] if count is None else rows[first:first + count]


def _clause(table: pa.Table, column: int | None, row: int) -> int | None:
    """A LIMIT or OFFSET value (a constant of the query, repeated in every row), at least 0; None when absent."""
    if column is None:
        return None
    value = table.column(column)[row].as_py()
    return None if value is None else max(0, int(value))
