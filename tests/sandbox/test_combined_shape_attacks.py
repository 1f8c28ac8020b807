"""Issue 12's combined shapes over the full HTTP path (submit, approve, run, download): a set operation, joined
aggregations and a scalar subquery each meet the release audit on every aggregate they evaluate.

The dataset is the one of test_output_control_attacks.py: 40 people in district A, 40 in B, 4 in the tiny district
C. Each attack below would give the total income of C's four people as the difference of two released sums.
"""

from __future__ import annotations

from typing import Any

from sluice_api import Api
from test_output_control_attacks import attack, marker, released

__all__ = ["attack"]  # the fixture, shared


def test_an_intersect_of_two_sums_that_differ_by_four_people_releases_nothing(
        api: Api, attack: dict[str, Any]) -> None:
    record, rows = released(api, attack["key"], attack["grant"],
                            "SELECT sum(income) AS s FROM people WHERE district IN ('A', 'C') INTERSECT "
                            "SELECT sum(income) AS s FROM people WHERE district = 'A'")
    # the second sum is evaluated (never output) and suppressed by the audit; whether the first equals it is then
    # unknown, so its row is dropped and counted: the same answer whether the raw sums are equal or not
    assert rows == []
    assert record["suppression"] == {"difference_audit": 1, "k": 1}


def test_the_difference_of_two_joined_sums_is_suppressed(api: Api, attack: dict[str, Any]) -> None:
    _, rows = released(api, attack["key"], attack["grant"],
                       "WITH a AS (SELECT category, sum(income) AS s FROM people WHERE district IN ('A', 'C') "
                       "GROUP BY category), b AS (SELECT category, sum(income) AS s FROM people "
                       "WHERE district = 'A' GROUP BY category) "
                       "SELECT a.category, a.s - b.s AS c_income FROM a JOIN b ON a.category = b.category "
                       "ORDER BY a.category")
    assert [r["c_income"] for r in rows] == [None, None]
    assert [marker(r) for r in rows] == [{"c_income": "difference_audit"}] * 2


def test_a_share_of_a_scalar_total_that_differs_by_four_people_is_suppressed(
        api: Api, attack: dict[str, Any]) -> None:
    record, rows = released(api, attack["key"], attack["grant"],
                            "SELECT count(*) AS n, sum(income) * 1.0 / (SELECT sum(income) FROM people "
                            "WHERE district IN ('A', 'C')) AS share FROM people WHERE district = 'A'")
    assert rows[0]["n"] == 43 and rows[0]["share"] is None  # 40 people and 3 rows without a person
    assert marker(rows[0]) == {"share": "difference_audit"} and record["suppression"] == {"difference_audit": 1}
