"""Set operations of aggregations over entity data, applied to the released rows after the release audit.

The governed SQL runs every branch of a `UNION`, `INTERSECT` or `EXCEPT` as one `UNION ALL` with a hidden branch
column (policy/sql_setop.py), so every cell of every branch goes through k, dominance and the audit, whether the
set operation outputs it or not. The set operation is then decided here on released values only, so its outcome
says nothing about a value that was not released:

- `union_all`: every row that was not dropped for k;
- `union`: the same, without duplicates (rows equal in their released values and in which cells were suppressed);
- `intersect`: a row of the first branch whose cells were all released, equal to a fully released row of every
  other branch;
- `except`: a row of the first branch whose cells were all released that no row of another branch could equal.

A row of another branch "could equal" a first-branch row when its released values are equal where both were
released; a row dropped for k could equal anything. A first-branch row whose fate depends on such a row (or on its
own suppressed cells) is *undecided*: it is dropped and its remaining cells are counted as suppressed for `k`.
Rows that the set operation itself drops (no match in an INTERSECT, a match in an EXCEPT) are not counted: the raw
query drops them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from policy.sql_release import ReleasePlan


def settle(table: pa.Table, plan: ReleasePlan, suppressed: Mapping[tuple[int, int], Any]
           ) -> tuple[list[int], list[int]]:
    """(rows kept, in table order; first-branch rows undecided) of a set operation (see the module doc)."""
    setop = plan.setop
    assert setop is not None
    branch = table.column(setop.column).to_pylist()
    dropped = {r for (r, c) in suppressed if c == setop.column}
    hidden: dict[int, set[int]] = {}
    for row, column in suppressed:
        if column < plan.columns:
            hidden.setdefault(row, set()).add(column)
    values = list(zip(*(table.column(c).to_pylist() for c in range(plan.columns)), strict=True)) \
        if plan.columns else [() for _ in range(table.num_rows)]
    live = [r for r in range(table.num_rows) if r not in dropped]
    if setop.kind == "union_all":
        return live, []
    if setop.kind == "union":
        return _distinct(live, values, hidden), []
    by_branch: dict[Any, list[int]] = {}
    for row in range(table.num_rows):
        by_branch.setdefault(branch[row], []).append(row)
    others = [b for b in range(1, setop.branches)]
    kept: list[int] = []
    undecided: list[int] = []
    for row in by_branch.get(0, []):
        if row in dropped:
            continue
        if hidden.get(row):
            undecided.append(row)
            continue
        fates = [_match(values[row], by_branch.get(b, []), values, hidden, dropped) for b in others]
        if setop.kind == "intersect":
            if all(f == "equal" for f in fates):
                kept.append(row)
            elif "none" not in fates:
                undecided.append(row)
        else:  # except
            if all(f == "none" for f in fates):
                kept.append(row)
            elif "equal" not in fates:
                undecided.append(row)
    return _distinct(kept, values, hidden), undecided


def _match(value: tuple[Any, ...], rows: list[int], values: list[tuple[Any, ...]], hidden: dict[int, set[int]],
           dropped: set[int]) -> str:
    """Whether one branch has a fully released row equal to `value` ("equal"), else one that could be ("maybe"),
    else "none"."""
    maybe = False
    for other in rows:
        if other in dropped:
            maybe = True
            continue
        unknown = hidden.get(other, set())
        if all(c in unknown or values[other][c] == value[c] for c in range(len(value))):
            if not unknown:
                return "equal"
            maybe = True
    return "maybe" if maybe else "none"


def _distinct(rows: list[int], values: list[tuple[Any, ...]], hidden: dict[int, set[int]]) -> list[int]:
    """`rows` without later rows equal to an earlier one in released values and suppressed cells."""
    seen: set[tuple[Any, ...]] = set()
    out: list[int] = []
    for row in rows:
        unknown = hidden.get(row, set())
        key = (tuple(None if c in unknown else _hashable(v) for c, v in enumerate(values[row])),
               tuple(sorted(unknown)))
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, list | dict) else value
