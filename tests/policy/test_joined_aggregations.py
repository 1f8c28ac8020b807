"""Aggregations joined on their group keys cannot be used to single anyone out.

Each query runs for real through the governed path (analysis, DuckDB, output control at k = 10, the release audit,
`finish`). The city's small district 湖滨区 has 15 residents (four in the lowest income band) and 2 enterprises.
"""

from __future__ import annotations

import json
from typing import Any

from casebook import CITY_K, governed_run, policies_for

from policy.analysis import analyse
from policy.output import Reason

_run = governed_run


def test_the_difference_of_two_joined_counts_that_isolates_four_residents_is_suppressed(
        connections: dict[str, Any]) -> None:
    sql = '''
    WITH a AS (SELECT district, count(*) AS n FROM residents GROUP BY district),
         b AS (SELECT district, count(*) AS m FROM residents WHERE income_band <> '<3k' GROUP BY district)
    SELECT a.district, a.n - b.m AS low_income FROM a JOIN b ON a.district = b.district'''
    released, later, _ = _run(sql, connections["city"])
    rows = dict(zip(released.column("district").to_pylist(), released.column("low_income").to_pylist(), strict=True))
    assert rows["湖滨区"] is None and list(later.values()) == [Reason.DIFFERENCE_AUDIT]
    assert all(v is not None for d, v in rows.items() if d != "湖滨区")


def test_a_joined_row_is_dropped_when_either_joined_group_is_below_k(connections: dict[str, Any]) -> None:
    # 15 residents (enough) but 2 enterprises: the row would show the two enterprises' count
    sql = '''
    WITH a AS (SELECT district, count(*) AS n FROM residents GROUP BY district),
         b AS (SELECT district, count(*) AS m FROM enterprises GROUP BY district)
    SELECT a.district, a.n, b.m FROM a JOIN b ON a.district = b.district'''
    released, _, suppressed = _run(sql, connections["city"])
    assert "湖滨区" not in released.column("district").to_pylist()
    assert suppressed == {Reason.K: 2} and released.num_rows == 8


def test_each_joined_value_is_counted_over_its_own_source(connections: dict[str, Any]) -> None:
    # residents with a visit in a clinic, beside all residents: the visit counts are checked against the visitors,
    # never against the residents (whose set is larger)
    sql = '''
    WITH v AS (SELECT r.district, count(*) FILTER (WHERE c.diagnosis_group = '肿瘤') AS tumours
               FROM residents AS r JOIN clinic_visits AS c ON r.person_id = c.person_id GROUP BY r.district),
         p AS (SELECT district, count(*) AS n FROM residents GROUP BY district)
    SELECT v.district, v.tumours, p.n FROM v JOIN p ON v.district = p.district'''
    con = connections["city"]
    released, _, _ = _run(sql, con)
    visitors = dict(con.sql("SELECT r.district, count(DISTINCT r.person_id) FILTER (WHERE c.diagnosis_group = '肿瘤') "
                            "FROM residents r JOIN clinic_visits c ON r.person_id = c.person_id GROUP BY 1").fetchall())
    for district, tumours in zip(released.column("district").to_pylist(), released.column("tumours").to_pylist(),
                                 strict=True):
        assert (tumours is None) == (visitors[district] < CITY_K), district


def test_a_filter_comparing_a_group_with_itself_without_four_people_selects_no_row(
        connections: dict[str, Any]) -> None:
    sql = """
    WITH a AS (SELECT district, count(*) AS n FROM residents WHERE district = '湖滨区' GROUP BY district),
         b AS (SELECT district, count(*) AS m FROM residents WHERE district = '湖滨区' AND income_band <> '<3k'
               GROUP BY district)
    SELECT a.district, a.n FROM a JOIN b ON a.district = b.district WHERE a.n > b.m"""
    assert connections["city"].sql(sql).fetchall() == [("湖滨区", 15)]  # raw: 15 > 11
    released, later, _ = _run(sql, connections["city"])
    # the filter's value is made of both counts (a hidden cell): suppressed, so the row is not selected
    assert released.num_rows == 0 and list(later.values()) == [Reason.DIFFERENCE_AUDIT]


def test_a_top_n_ordered_by_a_difference_that_isolates_four_residents_never_selects_that_row(
        connections: dict[str, Any]) -> None:
    sql = """
    WITH a AS (SELECT district, count(*) AS n FROM residents GROUP BY district),
         b AS (SELECT district, count(*) AS m FROM residents WHERE income_band <> '<3k' GROUP BY district)
    SELECT a.district FROM a JOIN b ON a.district = b.district ORDER BY a.n - b.m LIMIT 3"""
    raw = [d for (d,) in connections["city"].sql(sql).fetchall()]
    assert raw[0] == "湖滨区"  # four low-income residents: the smallest difference
    released, later, _ = _run(sql, connections["city"])
    # its order value (a hidden cell) is suppressed, so it ranks as NULL (last): the three smallest released
    # differences fill the limit
    four = [d for (d,) in connections["city"].sql(sql.replace("LIMIT 3", ", a.district LIMIT 4")).fetchall()]
    assert four[0] == "湖滨区" and released.column("district").to_pylist() == four[1:]
    assert list(later.values()) == [Reason.DIFFERENCE_AUDIT]


def test_joined_rows_are_sorted_by_an_order_value_that_is_not_an_output(connections: dict[str, Any]) -> None:
    # without LIMIT: the order value is a hidden cell (audited), and the released rows follow it, not the output
    sql = """
    WITH a AS (SELECT district, count(*) AS n FROM residents GROUP BY district),
         b AS (SELECT district, count(*) AS m FROM enterprises GROUP BY district)
    SELECT a.district FROM a JOIN b ON a.district = b.district ORDER BY b.m DESC"""
    raw = [d for (d,) in connections["city"].sql(sql.replace("DESC", "DESC, a.district")).fetchall()]
    released, later, suppressed = _run(sql, connections["city"])
    assert "湖滨区" in raw and suppressed == {Reason.K: 1}  # 2 enterprises: the row is dropped
    assert released.column("district").to_pylist() == [d for d in raw if d != "湖滨区"] and not later


def test_joined_rows_sorted_by_a_suppressed_hidden_order_value_list_it_as_null(connections: dict[str, Any]) -> None:
    sql = """
    WITH a AS (SELECT district, count(*) AS n FROM residents GROUP BY district),
         b AS (SELECT district, count(*) AS m FROM residents WHERE income_band <> '<3k' GROUP BY district)
    SELECT a.district FROM a JOIN b ON a.district = b.district ORDER BY a.n - b.m"""
    raw = [d for (d,) in connections["city"].sql(sql + ", a.district").fetchall()]
    released, later, _ = _run(sql, connections["city"])
    assert raw[0] == "湖滨区" and list(later.values()) == [Reason.DIFFERENCE_AUDIT]
    assert released.column("district").to_pylist() == [*raw[1:], "湖滨区"]


def test_a_having_inside_a_joined_aggregation_is_audited_as_a_cell(connections: dict[str, Any]) -> None:
    # the HAVING counts the small district without its four low-income residents; the other side counts all 15
    sql = """
    WITH a AS (SELECT district, count(*) AS n FROM residents WHERE district = '湖滨区' GROUP BY district
               HAVING count(*) FILTER (WHERE income_band <> '<3k') > 10),
         b AS (SELECT district, count(*) AS m FROM residents GROUP BY district)
    SELECT a.district, b.m FROM a JOIN b ON a.district = b.district"""
    assert connections["city"].sql(sql).fetchall() == [("湖滨区", 15)]
    released, later, _ = _run(sql, connections["city"])
    assert released.num_rows == 0 and list(later.values()) == [Reason.DIFFERENCE_AUDIT]


def test_a_left_joined_count_without_four_people_beside_the_full_count_is_suppressed(
        connections: dict[str, Any]) -> None:
    sql = """
    WITH a AS (SELECT district, count(*) AS n FROM residents WHERE district = '湖滨区' GROUP BY district),
         b AS (SELECT district, count(*) AS m FROM residents WHERE income_band <> '<3k' GROUP BY district)
    SELECT a.district, a.n, b.m FROM a LEFT JOIN b ON a.district = b.district"""
    assert connections["city"].sql(sql).fetchall() == [("湖滨区", 15, 11)]
    released, later, _ = _run(sql, connections["city"])
    # both counts are cells of the row: the audit releases one of them, never both
    assert released.num_rows == 1 and list(later.values()) == [Reason.DIFFERENCE_AUDIT]
    assert sum(v is None for v in released.select(["n", "m"]).to_pylist()[0].values()) == 1


def test_a_left_joined_group_below_k_looks_exactly_like_no_group(connections: dict[str, Any]) -> None:
    def left_join(condition: str) -> Any:
        sql = f"""
        WITH p AS (SELECT district, count(*) AS people FROM residents GROUP BY district),
             v AS (SELECT r.district, count(*) AS visits FROM residents AS r JOIN clinic_visits AS c
                   ON r.person_id = c.person_id WHERE {condition} GROUP BY r.district)
        SELECT p.district, p.people, v.visits FROM p LEFT JOIN v ON v.district = p.district ORDER BY p.district"""
        return _run(sql, connections["city"])[0]

    small = left_join("r.district = '湖滨区'")  # the small district's few visitors: a group below k
    missing = left_join("r.district = '湖滨区' AND c.cost < 0")  # no group at all
    assert connections["city"].sql("SELECT count(*) FROM clinic_visits WHERE cost < 0").fetchall() == [(0,)]
    assert small.to_pylist() == missing.to_pylist()
    row = next(r for r in small.to_pylist() if r["district"] == "湖滨区")
    assert row["visits"] is None and json.loads(row["sluice_suppressed"]) == {"visits": "k"}


def test_a_left_joined_group_key_in_the_output_is_refused() -> None:
    sql = """
    WITH p AS (SELECT district, count(*) AS people FROM residents GROUP BY district),
         v AS (SELECT r.district, count(*) AS visits FROM residents AS r JOIN clinic_visits AS c
               ON r.person_id = c.person_id GROUP BY r.district)
    SELECT p.district, v.district IS NULL AS none FROM p LEFT JOIN v ON v.district = p.district"""
    result = analyse(sql, policies_for("city"))
    assert result.codes == ("unsupported_query_shape_for_threshold",)
