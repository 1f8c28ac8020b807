"""Aggregations joined on their group keys cannot be used to single anyone out.

Each query runs for real through the governed path (analysis, DuckDB, output control at k = 10, the release audit,
`finish`). The city's small district 湖滨区 has 15 residents (four in the lowest income band) and 2 enterprises.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from casebook import CITY_K, policies_for

from policy.analysis import analyse
from policy.output import Reason, apply_output_control, finish
from policy.release_audit import AuditCell, AuditPart, PopulationAudit, audit


def _run(sql: str, con: Any) -> tuple[pa.Table, dict[Any, Reason], dict[str, int]]:
    result = analyse(sql, policies_for("city"))
    assert result.sql is not None and result.release is not None, result.findings
    controlled = apply_output_control(con.sql(result.sql).to_arrow_table(), k=CITY_K, max_rows=None,
                                      plan=result.release)
    cells = [AuditCell((c.row, c.column), tuple(AuditPart(p.population, p.bitmap(), p.measures) for p in c.parts))
             for c in controlled.cells]
    later = dict(audit({p: PopulationAudit(p, CITY_K) for p in result.release.populations}, cells).suppressed)
    return finish(controlled.table, controlled.marks, later, result.release), later, dict(controlled.suppressed)


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
