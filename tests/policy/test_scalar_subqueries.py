"""Scalar subqueries of global aggregations over entity data cannot be used to single anyone out.

Each query runs for real through the governed path (analysis, DuckDB, output control at k = 10, the release audit,
`finish`). The city's small district 湖滨区 has 15 residents (four in the lowest income band), fewer than 10 of whom
visit a clinic.
"""

from __future__ import annotations

from typing import Any

from casebook import governed_run, policies_for

from policy.analysis import analyse
from policy.output import Reason

_run = governed_run


def test_a_having_that_compares_with_the_group_without_four_people_selects_no_row(connections: dict[str, Any]) -> None:
    sql = ("SELECT district, count(*) AS n FROM residents WHERE district = '湖滨区' GROUP BY district "
           "HAVING count(*) > (SELECT count(*) FROM residents WHERE district = '湖滨区' AND income_band <> '<3k')")
    assert connections["city"].sql(sql).fetchall() == [("湖滨区", 15)]  # raw: 15 > 11
    released, later, _ = _run(sql, connections["city"])
    # shown or not, the row would tell whether the four exist: the HAVING value is made of both counts
    assert released.num_rows == 0 and list(later.values()) == [Reason.DIFFERENCE_AUDIT]


def test_a_where_comparing_with_the_average_of_fewer_than_k_people_releases_nothing(
        connections: dict[str, Any]) -> None:
    sql = ("SELECT c.clinic, count(*) AS n FROM clinic_visits AS c WHERE c.cost > (SELECT avg(v.cost) FROM "
           "clinic_visits AS v JOIN residents AS r ON v.person_id = r.person_id WHERE r.district = '湖滨区') "
           "GROUP BY c.clinic")
    released, _, suppressed = _run(sql, connections["city"])
    assert released.num_rows == 0 and suppressed[Reason.K] > 0


def test_a_share_of_a_scalar_total_is_released_with_both_counts_audited(connections: dict[str, Any]) -> None:
    sql = ("SELECT district, count(*) * 1.0 / (SELECT count(*) FROM residents WHERE income_band <> '<3k') AS share "
           "FROM residents WHERE income_band <> '<3k' GROUP BY district")
    result = analyse(sql, policies_for("city"))
    assert result.release is not None
    cell = next(c for c in result.release.cells if c.name == "share")
    assert {result.release.components[c].branch for c in cell.components} == {0, 1}
    released, _, _ = _run(sql, connections["city"])
    raw = dict(connections["city"].sql(sql).fetchall())
    assert all(raw[d] == s for d, s in zip(released.column("district").to_pylist(),
                                            released.column("share").to_pylist(), strict=True) if s is not None)
