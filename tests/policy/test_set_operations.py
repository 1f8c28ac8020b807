"""Set operations of aggregations over entity data cannot be used to single anyone out.

Each query runs for real through the governed path (analysis, DuckDB, output control at k = 10, the release audit,
`finish`). The city's small district 湖滨区 has 15 residents, four of them in the lowest income band: any pair of
released counts that differ by exactly those four would single them out.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from casebook import CITY_K, policies_for

from policy.analysis import analyse
from policy.output import Reason, apply_output_control, finish
from policy.release_audit import AuditCell, AuditPart, PopulationAudit, audit

SMALL = "湖滨区"
ALL = f"SELECT count(*) AS n FROM residents WHERE district = '{SMALL}'"
WITHOUT_LOW = f"SELECT count(*) AS n FROM residents WHERE district = '{SMALL}' AND income_band <> '<3k'"


def _run(sql: str, con: Any, ledgers: dict[str, PopulationAudit] | None = None
         ) -> tuple[pa.Table, dict[Any, Reason]]:
    """The released table and every cell suppressed after output control (audit, undecided set-operation rows)."""
    result = analyse(sql, policies_for("city"))
    assert result.sql is not None and result.release is not None, result.findings
    controlled = apply_output_control(con.sql(result.sql).to_arrow_table(), k=CITY_K, max_rows=None,
                                      plan=result.release)
    cells = [AuditCell((c.row, c.column), tuple(AuditPart(p.population, p.bitmap(), p.measures) for p in c.parts))
             for c in controlled.cells]
    if ledgers is None:
        ledgers = {}
    for population in result.release.populations:
        ledgers.setdefault(population, PopulationAudit(population, CITY_K))
    later = dict(audit(ledgers, cells).suppressed)
    return finish(controlled.table, controlled.marks, later, result.release), later


def test_a_union_all_of_a_small_group_and_the_group_without_four_people_suppresses_the_second(
        connections: dict[str, Any]) -> None:
    released, later = _run(f"{ALL} UNION ALL {WITHOUT_LOW}", connections["city"])
    assert released.column("n").to_pylist() == [15, None]
    assert list(later.values()) == [Reason.DIFFERENCE_AUDIT]


def test_an_intersect_cannot_tell_whether_a_group_equals_itself_without_four_people(
        connections: dict[str, Any]) -> None:
    # the second branch is never output, but its count is evaluated: audited, and suppressed; the first branch's
    # row would be kept or dropped by comparing with it, so it is undecided: dropped and counted
    released, later = _run(f"{ALL} INTERSECT {WITHOUT_LOW}", connections["city"])
    assert released.num_rows == 0
    assert sorted(later.values()) == [Reason.DIFFERENCE_AUDIT, Reason.K]


def test_an_except_gives_the_same_answer_as_the_intersect_so_neither_reveals_the_comparison(
        connections: dict[str, Any]) -> None:
    # the raw EXCEPT keeps the row (15 <> 11) where the raw INTERSECT drops it: released, both drop it
    raw = connections["city"].sql(f"{ALL} EXCEPT {WITHOUT_LOW}").fetchall()
    assert raw == [(15,)]
    released, later = _run(f"{ALL} EXCEPT {WITHOUT_LOW}", connections["city"])
    assert released.num_rows == 0
    assert sorted(later.values()) == [Reason.DIFFERENCE_AUDIT, Reason.K]


def test_the_hidden_branch_of_an_except_enters_the_ledger_so_a_later_difference_is_suppressed(
        connections: dict[str, Any]) -> None:
    con = connections["city"]
    ledgers: dict[str, PopulationAudit] = {}
    # run 1 outputs only the city-wide count, but evaluates the small district without its four low-income people
    first, later = _run(f"SELECT count(*) AS n FROM residents EXCEPT {WITHOUT_LOW}", con, ledgers)
    assert first.column("n").to_pylist() == [20000] and not later
    # run 2 asks for the whole small district: with run 1's hidden cell, it would single the four out
    second, later = _run(ALL, con, ledgers)
    assert second.column("n").to_pylist() == [None]
    assert list(later.values()) == [Reason.DIFFERENCE_AUDIT]


def test_a_union_counts_duplicate_released_rows_once(connections: dict[str, Any]) -> None:
    released, _ = _run(f"{ALL} UNION {ALL}", connections["city"])
    assert released.column("n").to_pylist() == [15]


def test_a_row_dropped_for_k_in_the_other_branch_leaves_an_except_row_undecided(connections: dict[str, Any]) -> None:
    # two enterprises in the small district: the second branch's row is dropped for k, so it could equal anything
    sql = (f"SELECT district, count(*) AS n FROM residents WHERE district = '{SMALL}' GROUP BY district EXCEPT "
           f"SELECT district, count(*) AS n FROM enterprises WHERE district = '{SMALL}' GROUP BY district")
    released, later = _run(sql, connections["city"])
    assert released.num_rows == 0
    assert list(later.values()) == [Reason.K]


def test_a_top_n_over_a_union_all_of_a_group_and_itself_without_four_people_releases_one_count(
        connections: dict[str, Any]) -> None:
    sql = ("SELECT 'all' AS who, count(*) AS n FROM residents WHERE district = '湖滨区' UNION ALL "
           "SELECT 'not low', count(*) FROM residents WHERE district = '湖滨区' AND income_band <> '<3k' "
           "ORDER BY n DESC LIMIT 2")
    assert connections["city"].sql(sql).fetchall() == [("all", 15), ("not low", 11)]
    released, later = _run(sql, connections["city"])
    # both counts are cells, audited together: one is suppressed and ranks as NULL (last), whichever it was
    assert list(later.values()) == [Reason.DIFFERENCE_AUDIT]
    n = released.column("n").to_pylist()
    assert released.num_rows == 2 and n[0] in (15, 11) and n[1] is None
