"""Row selection after the audit (policy/sql_shell.py, policy.output.finish): HAVING, LIMIT and window partitions
decide on released values only."""

from __future__ import annotations

import json

import pyarrow as pa

from policy.output import Reason, finish, select_rows
from policy.sql_release import ReleasePlan, Shell

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


def test_limit_keeps_the_raw_ranks_and_drops_a_row_ranked_by_a_suppressed_value() -> None:
    table = _table([True] * 4, [1] * 4, [3, 1, 2, 4], 3)
    assert select_rows(table, _plan(order=(1,))) == [1, 2, 0]
    assert select_rows(table, _plan(order=(1,)), {(2, 1): Reason.K}) == [1, 0]


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
