"""Output control edge cases a mutation experiment showed untested: a row whose entity count is unknown is never
released, and median (like every aggregate returning one person's value) stays refused on its own."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from casebook import load_cases, policies_for

from policy.analysis import Verdict, analyse
from policy.output import Reason, apply_output_control
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
