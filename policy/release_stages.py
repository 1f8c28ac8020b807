"""The release audit of a run whose rows OFFSET / LIMIT select: cells of rows the limit drops are not released.

With OFFSET / LIMIT over one aggregation or over aggregations joined on their keys, `output.finish` keeps a slice
of the released order (policy/output.py): the candidates (rows where HAVING holds and its value was released) sorted
by the ORDER BY values as released, ties broken by every released output column. Which rows the slice keeps is
decided by the HAVING and ORDER BY values of every group, and, among rows tied on the ORDER BY values across an edge
of the slice, by their other output cells. So the audit runs in three stages, each against the ledgers as the
previous one left them:

1. the HAVING and ORDER BY cells of every row (they decide the selection: audited and recorded, as before);
2. every other cell of the rows tied on the ORDER BY values with a row across an edge of the slice (the tie-break
   reads them);
3. every other cell of the rows the slice keeps.

The other cells of the rows the slice drops are never audited nor recorded: nothing about them is released. The
rows `finish` then keeps are those stage 3 audited, because the released order refines the order by ORDER BY values
only: a row outside the tied groups keeps its side of each edge whatever the tie-break says. Every recorded cell
passed the audit against every cell recorded before it, which is all the audit's guarantee needs (a different
greedy order than one audit of all cells, not a weaker check). Windows (a window cell depends on the whole
partition) and set operations (the operation reads the other branches' cells) are audited in one stage, every cell
of every row, as are runs without OFFSET / LIMIT.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from policy.output import Marks
from policy.output_rows import candidates, released_order, select_rows, slice_bounds
from policy.release_audit import DEFAULT_BUDGET, AuditCell, AuditResult, PopulationAudit, audit
from policy.sql_release import ReleasePlan


def staged_audit(populations: Mapping[str, PopulationAudit], table: pa.Table, marks: Marks,
                 cells: Sequence[AuditCell], plan: ReleasePlan | None, *, budget: int = DEFAULT_BUDGET
                 ) -> AuditResult:
    """Decide which of a run's cells may be released (see module doc); `table` and `marks` are output control's
    (`ControlledOutput` / `PendingRelease`), `cells` keyed by (row, column)."""
    if not _staged(plan):
        return audit(populations, cells, budget=budget)
    assert plan is not None and plan.shell is not None
    deciding = {c for c in (plan.shell.keep,) if c is not None}
    for key in plan.sort or ():
        deciding |= {key.column, *key.depends}
    first = [c for c in cells if _at(c)[1] in deciding]
    result = audit(populations, first, budget=budget)
    tied = _tied_at_edges(table, plan, _marks(marks, result))
    second = [c for c in cells if _at(c)[1] not in deciding and _at(c)[0] in tied]
    _merge(result, audit(populations, second, budget=max(0, budget - result.spent)))
    kept = set(select_rows(table, plan, _marks(marks, result)))  # the rows `finish` will keep
    third = [c for c in cells if _at(c)[1] not in deciding and _at(c)[0] in kept - tied]
    _merge(result, audit(populations, third, budget=max(0, budget - result.spent)))
    return result


def _at(cell: AuditCell) -> tuple[int, int]:
    """A run cell's (row, column)."""
    key = cell.key
    assert isinstance(key, tuple)
    return key


def _marks(marks: Marks, result: AuditResult) -> Marks:
    """Output control's marks and the audit's suppressions so far."""
    out = dict(marks)
    out.update({key: reason for key, reason in result.suppressed.items() if isinstance(key, tuple)})
    return out


def _staged(plan: ReleasePlan | None) -> bool:
    shell = plan.shell if plan is not None else None
    return (plan is not None and shell is not None and (shell.limit is not None or shell.offset is not None)
            and not shell.windows and plan.setop is None and not plan.distinct)


def _tied_at_edges(table: pa.Table, plan: ReleasePlan, suppressed: Marks) -> set[int]:
    """The candidates tied on the ORDER BY values (as released) with a candidate across an edge of the slice."""
    rows = released_order(table, candidates(table, plan, suppressed), plan, suppressed, tie_break=False)
    if not rows:
        return set()
    start, count = slice_bounds(table, plan, rows[0])
    end = len(rows) if count is None else min(len(rows), start + count)
    edges = [edge for edge in (start, end) if 0 < edge < len(rows)]
    if not edges:
        return set()
    values = {key.column: table.column(key.column).to_pylist() for key in plan.sort or ()}

    def key_of(row: int) -> tuple[str, ...]:
        """A row's ORDER BY values as released, in a form whose equality is the sort's (NULL where suppressed)."""
        return tuple(_canonical(None if (row, key.column) in suppressed
                                or any((row, d) in suppressed for d in key.depends) else values[key.column][row])
                     for key in plan.sort or ())

    keys = [key_of(row) for row in rows]
    tied: set[int] = set()
    for edge in edges:
        if keys[edge - 1] == keys[edge]:
            tied |= {row for row, key in zip(rows, keys, strict=True) if key == keys[edge]}
    return tied


def _canonical(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value + 0.0)  # -0.0 sorts equal to 0.0
    return repr(value)


def _merge(into: AuditResult, other: AuditResult) -> None:
    into.suppressed.update(other.suppressed)
    into.violations.update(other.violations)
    into.accepted.extend(other.accepted)
    into.spent += other.spent
