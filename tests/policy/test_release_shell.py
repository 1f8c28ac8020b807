"""Row selection after the audit (policy/sql_shell.py, policy.output.finish): HAVING, LIMIT and window partitions
decide on released values only."""

from __future__ import annotations

import dataclasses
import json

import pyarrow as pa

from policy.output import Reason, finish, select_rows
from policy.sql_release import ReleasePlan, Shell, SortKey

# user columns: key, value; hidden: keep (HAVING cell), partition, pos, limit
COLUMNS = ["key", "value", "__sluice_keep", "__sluice_part1", "__sluice_pos", "__sluice_limit"]


def _table(keep: list[bool], part: list[int], pos: list[int], limit: int) -> pa.Table:
    n = len(keep)
    return pa.table([[f"g{i}" for i in range(n)], list(range(10, 10 + n)), keep, part, pos, [limit] * n],
                    names=COLUMNS)


def _plan(*, keep: bool = True, windows: tuple[tuple[int, int], ...] = (), order: tuple[int, ...] = ()
          ) -> ReleasePlan:
    shell = Shell(pos=4, keep=2 if keep else None, limit=5, order=order, windows=windows)
    return ReleasePlan(instances=("p",), conditions=0, components=(), cells=(), stats=(), columns=2,
                       hidden=tuple(COLUMNS[2:]), shell=shell)


def test_a_group_whose_having_cell_was_suppressed_is_not_released_whatever_having_said() -> None:
    table = _table([True, True, False], [1, 1, 1], [1, 2, 3], 10)
    rows = select_rows(table, _plan(), {(1, 2): Reason.DIFFERENCE_AUDIT})
    assert rows == [0]


def _limited(sort: tuple[SortKey, ...] | None, *, offset: int | None = None) -> ReleasePlan:
    shell = Shell(pos=4, keep=2, limit=5, offset=6 if offset is not None else None)
    hidden = (*COLUMNS[2:], *(("__sluice_offset",) if offset is not None else ()))
    return ReleasePlan(instances=("p",), conditions=0, components=(), cells=(), stats=(), columns=2,
                       hidden=hidden, shell=shell, sort=sort)


def test_limit_cuts_the_released_order_not_the_raw_ranks() -> None:
    table = _table([True] * 4, [1] * 4, [3, 1, 2, 4], 3)  # raw ranks that disagree with the values 10..13
    assert select_rows(table, _limited((SortKey(1, desc=True),))) == [3, 2, 1]
    assert select_rows(table, _limited((SortKey(1),))) == [0, 1, 2]


def test_a_row_whose_order_value_was_suppressed_ranks_as_null_and_the_limit_is_filled_by_released_ones() -> None:
    table = _table([True] * 4, [1] * 4, [1, 2, 3, 4], 3)
    assert select_rows(table, _limited((SortKey(1, desc=True),)), {(3, 1): Reason.K}) == [2, 1, 0]
    assert select_rows(table, _limited((SortKey(1, desc=True, nulls_first=True),)), {(3, 1): Reason.K}) == [3, 2, 1]


def test_offset_skips_rows_of_the_released_order() -> None:
    table = _table([True] * 4, [1] * 4, [4, 3, 2, 1], 1).append_column("__sluice_offset", pa.array([2] * 4))
    assert select_rows(table, _limited((SortKey(1),), offset=2)) == [2]
    assert select_rows(table, _limited((SortKey(1),), offset=2), {(0, 1): Reason.DIFFERENCE_AUDIT}) == [3]


def test_the_rows_limit_keeps_do_not_depend_on_a_suppressed_value_or_the_raw_rank() -> None:
    # g1's value is suppressed; whatever it was (below, between or above the released 10, 12, 13), and so whatever
    # its raw rank, the same rows are kept
    kept = set()
    for hidden in (0, 11, 99):
        values = [10, hidden, 12, 13]
        ranks = [sorted(values, reverse=True).index(v) + 1 for v in values]
        table = pa.table([[f"g{i}" for i in range(4)], values, [True] * 4, [1] * 4, ranks, [2] * 4], names=COLUMNS)
        for sort in ((SortKey(1, desc=True),), (SortKey(1),), (SortKey(1, nulls_first=True),), None):
            rows = select_rows(table, _limited(sort), {(1, 1): Reason.K})
            kept.add((sort, tuple(rows)))
    assert len(kept) == 4  # one answer per order, none per hidden value


def test_rows_tied_in_every_released_value_are_ranked_by_why_they_were_suppressed() -> None:
    table = pa.table([["g"] * 3, [5, 6, 7], [True] * 3, [1] * 3, [1, 2, 3], [1] * 3], names=COLUMNS)
    marks = {(0, 1): Reason.K, (1, 1): Reason.DOMINANCE, (2, 1): Reason.DIFFERENCE_AUDIT}
    assert select_rows(table, _limited((SortKey(1),)), marks) == [2]  # "difference_audit" < "dominance" < "k"


def test_a_window_cell_suppressed_by_the_audit_suppresses_the_window_in_its_partition_only() -> None:
    table = _table([True] * 4, [1, 1, 2, 2], [1, 2, 3, 4], 10)
    later = {(0, 1): Reason.DIFFERENCE_AUDIT}
    released = finish(table, {}, later, _plan(windows=((1, 3),)))
    assert released.column_names == ["key", "value", "sluice_suppressed"]
    assert released.column("value").to_pylist() == [None, None, 12, 13]
    assert later[(1, 1)] == Reason.DIFFERENCE_AUDIT  # added in place, so the caller counts it
    markers = [json.loads(m) if m else None for m in released.column("sluice_suppressed").to_pylist()]
    assert markers == [{"value": "difference_audit"}, {"value": "difference_audit"}, None, None]


def test_hidden_cells_never_appear_in_the_suppression_marker() -> None:
    table = _table([True, True], [1, 1], [1, 2], 10)
    released = finish(table, {(0, 2): Reason.K}, {}, _plan())
    assert released.num_rows == 1 and released.column("sluice_suppressed").to_pylist() == [None]


def test_a_released_row_whose_hidden_helper_cell_was_suppressed_names_no_hidden_column_in_its_marker() -> None:
    table = _table([True, True], [1, 1], [1, 2], 10)
    released = finish(table, {(0, 3): Reason.K}, {}, _plan())  # column 3 is the hidden partition helper
    assert released.column("key").to_pylist() == ["g0", "g1"]
    assert released.column("sluice_suppressed").to_pylist() == [None, None]


# --- the order of released rows: released values only ---------------------------------------------------------------
def _ordered_plan(sort: tuple[SortKey, ...] | None, hidden: tuple[str, ...] = ()) -> ReleasePlan:
    return ReleasePlan(instances=("p",), conditions=0, components=(), cells=(), stats=(), columns=2, hidden=hidden,
                       sort=sort)


def test_a_suppressed_cell_sorts_as_null_whatever_its_hidden_value_ranked() -> None:
    # the raw query ordered by value DESC: g3 (hidden 40) came first, g1 (hidden 25) between the released 30 and 20
    table = pa.table([["g3", "g2", "g1", "g0"], [40, 30, 25, 20]], names=["key", "value"])
    later = {(0, 1): Reason.DIFFERENCE_AUDIT, (2, 1): Reason.K}
    released = finish(table, {}, later, _ordered_plan((SortKey(1, desc=True),)))
    assert released.column("key").to_pylist() == ["g2", "g0", "g1", "g3"]  # NULLs last, then by the released key
    assert released.column("value").to_pylist() == [30, 20, None, None]


def test_the_order_of_released_rows_does_not_depend_on_the_suppressed_values() -> None:
    def order(hidden: list[int]) -> list[str]:
        table = pa.table([["g0", "g1", "g2", "g3"], [20, hidden[0], 30, hidden[1]]], names=["key", "value"])
        rows = sorted(range(4), key=lambda r: -table.column("value")[r].as_py())  # the raw ORDER BY value DESC
        raw = table.take(pa.array(rows))
        later = {(rows.index(1), 1): Reason.K, (rows.index(3), 1): Reason.K}
        released = finish(raw, {}, later, _ordered_plan((SortKey(1, desc=True, nulls_first=True),)))
        return released.column("key").to_pylist()

    assert order([5, 50]) == order([50, 5]) == order([25, 26]) == ["g1", "g3", "g2", "g0"]


def test_a_hidden_order_cell_that_was_suppressed_sorts_as_null() -> None:
    # ORDER BY sum(x) with sum(x) not an output: a hidden cell (column 2), suppressed in row 0
    table = pa.table([["a", "b", "c"], [1, 1, 1], [9, 5, 7]], names=["key", "n", "__sluice_order0"])
    plan = dataclasses.replace(_ordered_plan((SortKey(2),), ("__sluice_order0",)), columns=2)
    released = finish(table, {}, {(0, 2): Reason.DIFFERENCE_AUDIT}, plan)
    assert released.column_names == ["key", "n", "sluice_suppressed"]
    assert released.column("key").to_pylist() == ["b", "c", "a"]


def test_an_order_expression_over_a_suppressed_output_sorts_as_null() -> None:
    # ORDER BY value / 2: its hidden value reads the output `value` (depends), suppressed in row 1
    table = pa.table([["a", "b", "c"], [30, 10, 20], [15, 5, 10]], names=["key", "value", "__sluice_sortkey0"])
    plan = _ordered_plan((SortKey(2, depends=(1,)),), ("__sluice_sortkey0",))
    released = finish(table, {}, {(1, 1): Reason.K}, plan)
    assert released.column("key").to_pylist() == ["c", "a", "b"]


def test_without_an_order_the_rows_are_released_sorted_by_their_released_values() -> None:
    table = pa.table([["g2", "g0", "g1"], [None, 3, 4]], names=["key", "value"])
    assert finish(table, {}, {}, _ordered_plan(None)).column("key").to_pylist() == ["g0", "g1", "g2"]
    assert finish(table, {}, {}, _ordered_plan(())).column("key").to_pylist() == ["g0", "g1", "g2"]


def test_ties_of_the_order_are_broken_by_released_values_not_by_the_raw_order() -> None:
    table = pa.table([["b", "a", "c"], [1, 1, 0]], names=["key", "value"])
    released = finish(table, {}, {}, _ordered_plan((SortKey(1, desc=True),)))
    assert released.column("key").to_pylist() == ["a", "b", "c"]
