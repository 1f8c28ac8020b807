"""Output control: the group threshold, the dominance rule and the row cap, applied to a result in the worker.

Contract with SQL analysis (policy/sql_rewrite.py, policy/sql_release.py): a query over entity data comes with a
`ReleasePlan` and returns, after the user's columns, helper columns per entity instance: entity counts, entity index
lists and dominance statistics, per group and per contributing condition. Output control then:

1. drops every row whose group covers fewer than k distinct entities of any entity instance (rows without an entity
   never count); each of its cells counts as suppressed for `k`;
2. suppresses (sets to NULL) every cell with a component whose contributing rows exist but cover fewer than k
   entities (`k`: this is also how a cell fed only by rows without an entity is caught), or whose per-entity
   contributions to a protected column fail the dominance rule (`dominance`);
3. hands every other cell over to the release audit as `CellRelease`s: per population, the entity set (a
   serialized Roaring bitmap over the population's dense entity index; 0 stands for rows without an entity) and
   the ledger measures it releases;
4. removes the helper columns and applies the row cap (row-level results only).

`finish` adds the suppression marker column and NULLs the cells suppressed later by the audit; the rows it keeps
and their order are decided in policy/output_rows.py, by released values only. Queries without
entity data have no plan: only the row cap applies.
"""

from __future__ import annotations

import array
import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from policy.output_rows import released_order, select_rows, shell_rows
from policy.output_sets import settle
from policy.sql_release import (
    ReleasePlan,
    condition_count,
    condition_rows,
    condition_set,
    group_count,
    group_set,
    helper_names,
    stat_top,
    stat_total,
)

SUPPRESSED_MARKER = "sluice_suppressed"
NO_ENTITY = 0  # the entity index of rows whose entity column is NULL


class Reason(StrEnum):
    """Why a cell was suppressed."""

    K = "k"
    DOMINANCE = "dominance"
    DIFFERENCE_AUDIT = "difference_audit"
    AUDIT_BUDGET_EXCEEDED = "audit_budget_exceeded"


class DominanceRule(StrEnum):
    """The concentration rules statistical offices use."""

    P_PERCENT = "p_percent"
    NK = "nk"


@dataclass(frozen=True)
class Dominance:
    """A dominance rule and its parameters (settings; see docs/output-control.md)."""

    rule: DominanceRule = DominanceRule.P_PERCENT
    p: float = 10.0  # p% rule: sensitive when total - x1 - x2 < p/100 * x1
    n: int = 2  # (n, k) rule: sensitive when the n largest make up more than k_percent of the total
    k_percent: float = 85.0

    def __post_init__(self) -> None:
        if self.n not in (1, 2):
            raise ValueError("the (n, k) rule supports n = 1 or 2 (the rewrite keeps the two largest contributions)")

    def sensitive(self, top: list[float], total: float) -> bool:
        """Whether a cell whose largest absolute contributions are `top` (of `total`) is dominated."""
        if total <= 0 or not top:
            return False
        largest = [*sorted(top, reverse=True), 0.0, 0.0]
        if self.rule == DominanceRule.NK:
            return sum(largest[: self.n]) > self.k_percent / 100.0 * total
        return total - largest[0] - largest[1] < self.p / 100.0 * largest[0]


@dataclass(frozen=True)
class CellSet:
    """One population's part of a released cell: its entity set and the ledger measures it releases."""

    population: str
    measures: tuple[str, ...]
    entities: bytes  # BitMap.serialize()

    def bitmap(self) -> BitMap:
        """The entity set."""
        return BitMap.deserialize(self.entities)


@dataclass(frozen=True)
class CellRelease:
    """A cell that passed k and dominance and now goes to the release audit."""

    row: int
    column: int
    parts: tuple[CellSet, ...]


Marks = dict[tuple[int, int], Reason]


@dataclass(frozen=True)
class ControlledOutput:
    """A result that passed output control, with what was taken out and what the audit must still decide."""

    table: pa.Table
    suppressed: Mapping[str, int]
    truncated_rows: int
    cells: tuple[CellRelease, ...] = ()
    marks: Marks = field(default_factory=dict)
    plan: ReleasePlan | None = None

    @property
    def suppressed_cells(self) -> int:
        """Cells suppressed, whatever the reason."""
        return sum(self.suppressed.values())


def apply_output_control(table: pa.Table, *, k: int, max_rows: int | None, plan: ReleasePlan | None = None,
                         dominance: Dominance | None = None) -> ControlledOutput:
    """Threshold, dominance and row cap; cells that pass are listed for the release audit (see module doc)."""
    if plan is None:
        truncated = 0
        if max_rows is not None and table.num_rows > max_rows:
            truncated = table.num_rows - max_rows
            table = table.slice(0, max_rows)
        return ControlledOutput(table=table, suppressed={}, truncated_rows=truncated)
    return _Control(table, plan, k, dominance or Dominance()).run()


class _Control:
    def __init__(self, table: pa.Table, plan: ReleasePlan, k: int, dominance: Dominance) -> None:
        self.table, self.plan, self.k, self.dominance = table, plan, k, dominance
        self._columns: dict[str, list[Any]] = {}
        self._lists: dict[str, Callable[[int], np.ndarray | None]] = {}

    def values(self, name: str) -> list[Any]:
        if name not in self._columns:
            self._columns[name] = self.table.column(name).to_pylist()
        return self._columns[name]

    def entities(self, name: str) -> Callable[[int], np.ndarray | None]:
        if name not in self._lists:
            self._lists[name] = _list_reader(self.table.column(name))
        return self._lists[name]

    def run(self) -> ControlledOutput:
        plan, instances = self.plan, range(len(self.plan.instances))
        suppressed: Counter[str] = Counter()
        keep: list[int] = []
        marks: Marks = {}
        cells: list[CellRelease] = []
        windows = plan.shell.windows if plan.shell is not None else ()
        tainted: dict[int, set[Any]] = {column: set() for column, _ in windows}
        setop = plan.setop
        branches = self.values(self.table.schema.names[setop.column]) if setop is not None else None
        for row in range(self.table.num_rows):
            branch = branches[row] if branches is not None else None
            mine = plan.instances_of(branch) if branches is not None else list(instances)
            if any((self.values(group_count(i))[row] or 0) < self.k for i in mine if i not in plan.optional):
                suppressed[Reason.K] += len(plan.cells)
                for column, partition in windows:
                    tainted[column].add(self.values(self.table.schema.names[partition])[row])
                if setop is not None:
                    # kept, every value NULL, until `finish`: a row of another branch that an INTERSECT / EXCEPT
                    # row might equal (the mark on the hidden branch column says it was dropped)
                    out_row = len(keep)
                    keep.append(row)
                    for column in (*range(plan.columns), setop.column):
                        marks[(out_row, column)] = Reason.K
                continue
            out_row = len(keep)
            keep.append(row)
            for cell in plan.cells:
                reason, parts = self._cell(row, cell.components, branch, mine)
                if reason is not None:
                    marks[(out_row, cell.index)] = reason
                    suppressed[reason] += 1
                elif parts:
                    cells.append(CellRelease(out_row, cell.index, parts))
        if windows:
            cells = self._taint_windows(keep, windows, tainted, marks, cells, suppressed)
        table = self.table.select(list(range(plan.columns + len(plan.hidden)))).take(pa.array(keep, type=pa.int64()))
        table = _null_cells(table, {m: r for m, r in marks.items() if setop is None or m[1] != setop.column})
        return ControlledOutput(table=table, suppressed=dict(suppressed), truncated_rows=0, cells=tuple(cells),
                                marks=marks, plan=plan)

    def _taint_windows(self, keep: list[int], windows: tuple[tuple[int, int], ...], tainted: dict[int, set[Any]],
                       marks: Marks, cells: list[CellRelease], suppressed: Counter[str]) -> list[CellRelease]:
        """Suppress (k) a window's cells in every partition with a group dropped or a window cell suppressed."""
        names = self.table.schema.names
        having = self.plan.shell.keep if self.plan.shell is not None else None
        for column, partition in windows:
            values = self.values(names[partition])
            # a suppressed HAVING cell leaves unknown which groups the window saw
            tainted[column] |= {values[keep[r]] for (r, c) in marks if c in (column, having)}
            for out_row, row in enumerate(keep):
                if values[row] in tainted[column] and (out_row, column) not in marks:
                    marks[(out_row, column)] = Reason.K
                    suppressed[Reason.K] += 1
        return [c for c in cells if (c.row, c.column) not in marks]

    def _cell(self, row: int, components: tuple[int, ...], branch: Any, mine: list[int]
              ) -> tuple[Reason | None, tuple[CellSet, ...]]:
        parts: list[CellSet] = []
        dominated = False
        for index in components:
            component = self.plan.components[index]
            own = mine
            if component.branch is not None:
                if self.plan.setop is not None and component.branch != branch:
                    continue  # a set operation: the component feeds another branch's rows
                # joined aggregations: the component is counted over its own source's instances only
                own = [i for i in mine if self.plan.branches[i] == component.branch]
                if not own:
                    return Reason.K, ()  # fail closed: a component with no entity instance to count
                if any(i in self.plan.optional and (self.values(group_count(i))[row] or 0) < self.k for i in own):
                    return Reason.K, ()  # an outer-joined group missing or below k: nothing read from it is released
            c = component.condition
            if c is not None and not any(self.values(condition_rows(i, c))[row] for i in own):
                if component.strict:
                    return Reason.K, ()  # "nobody" must look like "fewer than k" (see Component.strict)
                continue  # no row contributes: the value is NULL or 0 and says nothing about anyone
            for i in own:
                count = self.values(group_count(i) if c is None else condition_count(i, c))[row]
                if (count or 0) < self.k:
                    return Reason.K, ()
            for j in component.stats:
                for i in own:
                    top = self.values(stat_top(i, j))[row]
                    total = self.values(stat_total(i, j))[row]
                    if top is not None and total is not None and self.dominance.sensitive(
                            [float(x) for x in top if x is not None], float(total)):
                        dominated = True
            if component.kind != "entities":
                parts += self._parts(row, c, component.measures, own)
        if dominated:
            return Reason.DOMINANCE, ()
        return None, tuple(parts)

    def _parts(self, row: int, c: int | None, measures: tuple[str, ...], mine: list[int]) -> list[CellSet]:
        sets: dict[str, BitMap] = {}
        for i in mine:
            population = self.plan.instances[i]
            values = self.entities(group_set(i) if c is None else condition_set(i, c))(row)
            bitmap = BitMap(array.array("I", values.astype(np.uint32).tobytes())) if values is not None else BitMap()
            sets[population] = sets[population] | bitmap if population in sets else bitmap
        return [CellSet(population, measures, bitmap.serialize()) for population, bitmap in sorted(sets.items())
                if len(bitmap)]


def _list_reader(column: pa.ChunkedArray) -> Callable[[int], np.ndarray | None]:
    """Row -> the list's values as a numpy array (None for a NULL list), without making Python objects."""
    array_ = column.combine_chunks()
    if isinstance(array_, pa.ChunkedArray):  # pragma: no cover - combine_chunks of an empty column
        array_ = pa.concat_arrays(array_.chunks) if array_.num_chunks else pa.array([], type=column.type)
    offsets = array_.offsets.to_numpy()
    values = array_.values.fill_null(NO_ENTITY).to_numpy(zero_copy_only=False)
    nulls = array_.is_null().to_numpy(zero_copy_only=False)

    def read(row: int) -> np.ndarray | None:
        if nulls[row]:
            return None
        return values[offsets[row]:offsets[row + 1]]

    return read


def _null_cells(table: pa.Table, marks: Marks) -> pa.Table:
    """`table` with every marked (row, column) cell set to NULL."""
    by_column: dict[int, list[int]] = {}
    for row, column in marks:
        by_column.setdefault(column, []).append(row)
    for column, rows in by_column.items():
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[rows] = True
        data = table.column(column)
        nulled = pc.if_else(pa.array(mask), pa.scalar(None, type=data.type), data)
        table = table.set_column(column, table.schema.field(column), nulled)
    return table


def finish(table: pa.Table, marks: Marks, later: Marks | None = None, plan: ReleasePlan | None = None) -> pa.Table:
    """The result as released: cells suppressed `later` (by the audit) set to NULL, and the marker column added.

    The marker column `sluice_suppressed` holds, per row, a JSON object mapping each suppressed column of that row
    to its reason (`k`, `dominance`, `difference_audit`, `audit_budget_exceeded`), or NULL when none was. With a plan
    that has a shell (HAVING, LIMIT, OFFSET, windows: policy/sql_shell.py), a window's cells are suppressed in every
    partition where the audit suppressed one (added to `later` in place, so the caller counts them), the rows are
    selected now, after the audit, and the hidden columns removed.
    """
    later = later if later is not None else {}
    if plan is not None and plan.shell is not None and plan.shell.windows:
        _taint_windows(table, plan.shell.windows, marks, later, plan.shell.keep)
    settled: list[int] | None = None
    if plan is not None and plan.setop is not None:
        settled, undecided = settle(table, plan, {**marks, **later})
        for row in undecided:  # its fate depends on a value that was not released: dropped, cells counted
            for cell in plan.cells:
                if (row, cell.index) not in marks and (row, cell.index) not in later:
                    later[(row, cell.index)] = Reason.K
    table = _null_cells(table, later)
    names = table.schema.names
    suppressed = {**marks, **later}
    columns = plan.columns if plan is not None else table.num_columns
    per_row: dict[int, dict[str, str]] = {}
    for (row, column), reason in sorted(suppressed.items()):
        if column < columns:
            per_row.setdefault(row, {})[names[column]] = str(reason)
    marker = [json.dumps(per_row[r], ensure_ascii=False, sort_keys=True) if r in per_row else None
              for r in range(table.num_rows)]
    table = table.append_column(pa.field(SUPPRESSED_MARKER, pa.string()), pa.array(marker, type=pa.string()))
    if plan is None:
        return table
    rows = settled if settled is not None else select_rows(table, plan, suppressed)
    if settled is not None and plan.shell is not None:  # LIMIT / OFFSET over a UNION ALL (sql_setop.py)
        rows = shell_rows(table, plan, settled, suppressed)
    if plan.distinct:  # an aggregate of aggregates (sql_nested.py): rows equal by construction, merged now
        rows = distinct_rows(table, rows, [*range(columns), table.num_columns - 1])
    rows = released_order(table, rows, plan, suppressed)
    return table.take(pa.array(rows, type=pa.int64())).select([*range(columns), table.num_columns - 1])


def distinct_rows(table: pa.Table, rows: list[int], columns: list[int]) -> list[int]:
    """The first of each run of rows equal in `columns` (values and suppression marker), in order."""
    values = [table.column(c).to_pylist() for c in columns]
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = repr([v[row] for v in values])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def _taint_windows(table: pa.Table, windows: tuple[tuple[int, int], ...], marks: Marks, later: Marks,
                   having: int | None = None) -> None:
    """Add to `later` (in place, so the caller counts them) the window cells of every partition in which the audit
    suppressed a window cell or a HAVING cell (which groups the window saw would then be unknown)."""
    for column, partition in windows:
        values = table.column(partition).to_pylist()
        tainted = {values[r] for (r, c) in later if c in (column, having)}
        for row, value in enumerate(values):
            if value in tainted and (row, column) not in marks and (row, column) not in later:
                later[(row, column)] = Reason.DIFFERENCE_AUDIT


def released_columns(table: pa.Table, plan: ReleasePlan) -> pa.Table:
    """The user's columns of the rows a shell keeps, nothing suppressed (for comparing with the raw query in tests)."""
    rows = select_rows(table, plan)
    if plan.distinct:
        rows = distinct_rows(table, rows, list(range(plan.columns)))
    return table.take(pa.array(rows, type=pa.int64())).select(list(range(plan.columns)))


def strip_helpers(table: pa.Table, plan: ReleasePlan) -> pa.Table:
    """The user's columns only (for comparing governed with original SQL in tests)."""
    return table.drop_columns([n for n in helper_names(plan) if n in table.schema.names])
