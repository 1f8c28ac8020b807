"""Output control edge cases mutation testing showed untested: a row whose entity count is unknown is never
released, median (like every aggregate returning one person's value) stays refused on its own, and a HAVING cell
suppressed for k suppresses the windows of its partition."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from casebook import load_cases, policies_for

from policy.analysis import Verdict, analyse
from policy.output import ControlledOutput, Reason, apply_output_control
from policy.sql_release import group_count

CASE = "residents per district with GROUP BY ALL are counted"


@pytest.mark.slow
def test_a_row_whose_entity_count_is_null_is_suppressed_not_released(connections: dict[str, Any]) -> None:
    case = next(c for c in load_cases() if c.title == CASE)
    result = analyse(case.sql, policies_for(case.schema))
    assert result.sql is not None and result.release is not None
    governed = connections[case.schema].sql(result.sql).to_arrow_table()
    k = 10
    before = apply_output_control(governed, k=k, max_rows=None, plan=result.release)
    counts = governed.column(group_count(0)).to_pylist()
    row = max(range(len(counts)), key=lambda r: counts[r])  # the largest group: certainly released as it is
    assert counts[row] >= k and before.table.num_rows == governed.num_rows - sum(c < k for c in counts)
    index = governed.schema.get_field_index(group_count(0))
    nulled = governed.set_column(index, group_count(0), pa.array(
        [None if r == row else c for r, c in enumerate(counts)], type=governed.schema.field(index).type))
    after = apply_output_control(nulled, k=k, max_rows=None, plan=result.release)
    assert after.table.num_rows == before.table.num_rows - 1
    assert after.suppressed[Reason.K] == before.suppressed.get(Reason.K, 0) + len(result.release.cells)


@pytest.mark.parametrize("aggregate", ["median(cost)", "mode(cost)", "quantile_cont(cost, 0.5)", "min(cost)"])
def test_an_aggregate_that_returns_one_persons_value_is_refused_alone(aggregate: str) -> None:
    sql = f"SELECT clinic, {aggregate} AS v FROM clinic_visits GROUP BY clinic"
    result = analyse(sql, policies_for("city"))
    assert result.verdict == Verdict.REFUSED
    assert sorted(set(result.codes)) == ["unsafe_aggregate_on_protected_column", "unsafe_aggregate_over_entity_data"]


def test_the_same_query_with_a_safe_aggregate_is_accepted() -> None:
    result = analyse("SELECT clinic, avg(cost) AS v FROM clinic_visits GROUP BY clinic", policies_for("city"))
    assert result.verdict == Verdict.ACCEPTED, result.findings


def _controlled(sql: str, con: Any) -> ControlledOutput:
    """Output control at k = 10 over the city query `sql`, analysed and run raw on `con`."""
    result = analyse(sql, policies_for("city"))
    assert result.sql is not None and result.release is not None, result.findings
    return apply_output_control(con.sql(result.sql).to_arrow_table(), k=10, max_rows=None, plan=result.release)


def test_a_window_total_is_suppressed_for_k_when_a_having_cell_of_its_partition_is(
        connections: dict[str, Any]) -> None:
    """湖滨区 has four residents in the lowest income band: its HAVING value (4) is suppressed for k, which leaves
    unknown whether the district passed HAVING, so the window over every kept group is suppressed too."""
    sql = ("SELECT district, count(*) AS n, sum(count(*)) OVER () AS total FROM residents GROUP BY district "
           "HAVING count(*) FILTER (WHERE income_band = '<3k') > 0")
    controlled = _controlled(sql, connections["city"])
    total = controlled.table.schema.get_field_index("total")
    rows = range(controlled.table.num_rows)
    assert controlled.table.num_rows > 1
    assert all(controlled.marks.get((r, total)) == Reason.K for r in rows)


def test_a_group_dropped_for_k_suppresses_the_window_in_its_partition_only(connections: dict[str, Any]) -> None:
    """湖滨区's groups have two to six residents each and are dropped, so the window sum of every income band that
    counted one of them is suppressed; 湖滨区 has nobody earning over 20k, so that band's window sum is shown."""
    sql = ("SELECT district, income_band, count(*) AS n, sum(count(*)) OVER (PARTITION BY income_band) AS band_total "
           "FROM residents GROUP BY district, income_band")
    controlled = _controlled(sql, connections["city"])
    window = controlled.table.schema.get_field_index("band_total")
    bands = controlled.table.column("income_band").to_pylist()
    assert "湖滨区" not in controlled.table.column("district").to_pylist()
    marked = {r for r in range(len(bands)) if controlled.marks.get((r, window)) == Reason.K}
    assert marked == {r for r, band in enumerate(bands) if band != ">20k"} and ">20k" in bands
    assert set(controlled.marks.values()) == {Reason.K}
    assert controlled.suppressed[Reason.K] == 4 * 2 + len(marked)  # 湖滨区's four groups, two cells each; windows
    assert not {(c.row, c.column) for c in controlled.cells} & set(controlled.marks)


@pytest.mark.parametrize(("rows", "max_rows", "kept", "truncated"),
                         [(5, 3, [0, 1, 2], 2), (3, 3, [0, 1, 2], 0), (2, 3, [0, 1], 0), (4, None, [0, 1, 2, 3], 0)])
def test_open_data_is_capped_at_max_rows_keeping_the_first_rows_and_counting_the_rest(
        rows: int, max_rows: int | None, kept: list[int], truncated: int) -> None:
    out = apply_output_control(pa.table({"n": list(range(rows))}), k=10, max_rows=max_rows)
    assert out.table.column("n").to_pylist() == kept
    assert out.truncated_rows == truncated
    assert out.suppressed == {}
