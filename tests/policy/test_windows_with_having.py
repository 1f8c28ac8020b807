"""Windows over aggregated rows combined with HAVING cannot be used to single anyone out.

The window sees only the groups HAVING keeps (as in the raw query), so its value tells which groups passed: when a
group's HAVING cell is suppressed, the window's cells are suppressed in that group's whole partition.
"""

from __future__ import annotations

import json
from typing import Any

from casebook import CITY_K, policies_for

from policy.analysis import analyse
from policy.output import Reason, apply_output_control, finish
from policy.release_audit import AuditCell, AuditPart, PopulationAudit, audit

# 湖滨区 has 15 residents, four of them in the lowest income band: its HAVING value (11) would single them out
SQL = '''
SELECT district, count(*) AS n, sum(count(*)) OVER () AS total FROM residents GROUP BY district
HAVING count(*) FILTER (WHERE income_band <> '<3k') > 0
'''


def test_a_window_total_is_suppressed_when_a_having_cell_of_its_partition_is(connections: dict[str, Any]) -> None:
    result = analyse(SQL, policies_for("city"))
    assert result.sql is not None and result.release is not None, result.findings
    controlled = apply_output_control(connections["city"].sql(result.sql).to_arrow_table(), k=CITY_K, max_rows=None,
                                      plan=result.release)
    cells = [AuditCell((c.row, c.column), tuple(AuditPart(p.population, p.bitmap(), p.measures) for p in c.parts))
             for c in controlled.cells]
    later = dict(audit({"city_person": PopulationAudit("city_person", CITY_K)}, cells).suppressed)
    released = finish(controlled.table, controlled.marks, later, result.release)
    # the small district is not shown (its HAVING value was not released); every other district is, with its count
    raw = {d: n for d, n, _ in connections["city"].sql(SQL).fetchall()}
    assert "湖滨区" in raw and "湖滨区" not in released.column("district").to_pylist()
    assert all(raw[d] == n for d, n in zip(released.column("district").to_pylist(),
                                            released.column("n").to_pylist(), strict=True))
    # the raw total includes the small district: shown, it would tell that the district passed HAVING
    assert released.column("total").to_pylist() == [None] * released.num_rows
    assert {json.loads(m)["total"] for m in released.column("sluice_suppressed").to_pylist()} == \
        {Reason.DIFFERENCE_AUDIT.value}


def test_windows_with_having_rank_only_the_groups_having_keeps(connections: dict[str, Any]) -> None:
    sql = ("SELECT district, count(*) AS n, rank() OVER (ORDER BY count(*) DESC) AS rk FROM residents "
           "GROUP BY district HAVING count(*) > 2500")
    result = analyse(sql, policies_for("city"))
    assert result.sql is not None and result.release is not None, result.findings
    controlled = apply_output_control(connections["city"].sql(result.sql).to_arrow_table(), k=CITY_K, max_rows=None,
                                      plan=result.release)
    released = finish(controlled.table, controlled.marks, {}, result.release)
    assert sorted(released.drop_columns(["sluice_suppressed"]).to_pylist(), key=lambda r: r["rk"]) == \
        sorted(connections["city"].sql(sql).to_arrow_table().to_pylist(), key=lambda r: r["rk"])
    assert sorted(released.column("rk").to_pylist()) == [1, 2, 3, 4]  # no ORDER BY: released in canonical order
