"""The order of released rows over real city data: an ORDER BY never ranks a suppressed value (policy/sql_shell.py
`order_spec` / `sort_keys`, policy.output_rows.released_order)."""

from __future__ import annotations

from typing import Any

from casebook import CITY_K, policies_for

from policy import sql_release as R
from policy.analysis import analyse
from policy.output import Reason, apply_output_control, finish


def _released(connections: dict[str, Any], sql: str, later: dict[tuple[int, int], Reason] | None = None) -> Any:
    result = analyse(sql, policies_for("city"))
    assert result.sql is not None and result.release is not None, result.findings
    controlled = apply_output_control(connections["city"].sql(result.sql).to_arrow_table(), k=CITY_K, max_rows=None,
                                      plan=result.release)
    return result.release, controlled, finish(controlled.table, controlled.marks, later or {}, result.release)


def test_an_order_by_an_aggregate_that_is_not_an_output_is_a_hidden_cell_of_the_plan() -> None:
    result = analyse("SELECT diagnosis_group, count(*) AS n FROM clinic_visits GROUP BY diagnosis_group "
                     "ORDER BY sum(cost) DESC", policies_for("city"))
    plan = result.release
    assert plan is not None and plan.shell is not None, result.findings
    hidden = plan.columns + plan.hidden.index(f"{R.ORDER_CELL}0")
    assert hidden in {c.index for c in plan.cells}  # audited like the outputs
    assert plan.sort == (R.SortKey(hidden, desc=True),)


def test_an_order_by_output_names_positions_and_expressions_needs_no_hidden_column() -> None:
    for order in ("n DESC", "2 DESC", "count(*) DESC"):
        result = analyse(f"SELECT district, count(*) AS n FROM residents GROUP BY district ORDER BY {order}",
                         policies_for("city"))
        assert result.release is not None and result.release.shell is None, (order, result.findings)
        assert result.release.sort == (R.SortKey(1, desc=True),)


def test_an_order_by_a_group_key_that_is_not_an_output_is_a_hidden_key_not_a_cell() -> None:
    result = analyse("SELECT count(*) AS n FROM residents GROUP BY district ORDER BY district", policies_for("city"))
    plan = result.release
    assert plan is not None and plan.sort is not None, result.findings
    hidden = plan.columns + plan.hidden.index(f"{R.ORDER_KEY}0")
    assert plan.sort == (R.SortKey(hidden),) and hidden not in {c.index for c in plan.cells}


def test_a_plan_keeps_its_sort_keys_through_json() -> None:
    result = analyse("SELECT diagnosis_group, count(*) AS n FROM clinic_visits GROUP BY diagnosis_group "
                     "ORDER BY sum(cost) DESC NULLS FIRST, n / 2", policies_for("city"))
    assert result.release is not None
    assert R.ReleasePlan.from_dict(result.release.to_dict()) == result.release
    assert result.release.sort is not None and result.release.sort[0].nulls_first
    assert result.release.sort[1].depends == (1,)  # `n / 2` reads the output n


def test_released_rows_follow_the_order_by_over_released_values(connections: dict[str, Any]) -> None:
    sql = "SELECT district, count(*) AS n FROM residents GROUP BY district ORDER BY n DESC"
    _, _, released = _released(connections, sql)
    counts = released.column("n").to_pylist()
    assert counts == sorted(counts, reverse=True) and len(counts) > 2


def test_a_cell_suppressed_by_the_audit_no_longer_holds_its_rank(connections: dict[str, Any]) -> None:
    sql = "SELECT district, count(*) AS n FROM residents GROUP BY district ORDER BY n DESC"
    _, controlled, raw = _released(connections, sql)
    top = max(range(raw.num_rows), key=lambda r: raw.column("n")[r].as_py())
    table_row = controlled.table.column("district").to_pylist().index(raw.column("district")[top].as_py())
    _, _, released = _released(connections, sql, {(table_row, 1): Reason.DIFFERENCE_AUDIT})
    districts = released.column("district").to_pylist()
    # the largest count, suppressed, goes last (NULLs last) instead of first
    assert districts[-1] == raw.column("district")[top].as_py() and released.column("n")[-1].as_py() is None
