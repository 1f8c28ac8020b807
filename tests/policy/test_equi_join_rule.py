"""The equi-join rule checks every join of a query, after joins it lets pass, and says which columns and why."""

from __future__ import annotations

import pytest
from casebook import policies_for

from policy.analysis import analyse

ENTITY = ("{} is an entity column: it may only be equated with a join column of a granted dataset, carried "
          "unchanged; equating it with literals, parameters, expressions or values derived from them picks exactly "
          "who forms each group")
JOIN = ("join columns may only be equated with other join columns, carried unchanged ({}): matching one against "
        "readable, literal or computed values would reveal it")

CASES = [
    ("entity_after_an_open_join",
     "WITH ids AS (SELECT 'P1' AS pid) SELECT count(*) FROM residents r JOIN residents r2 "
     "ON r.district = r2.district JOIN ids ON r.person_id = ids.pid",
     ("entity_column_compared", ENTITY.format("residents.person_id"), 1, 127)),
    ("entity_after_a_valid_entity_join",
     "WITH ids AS (SELECT 'P1' AS pid) SELECT count(*) FROM residents r JOIN clinic_visits c "
     "ON r.person_id = c.person_id JOIN ids ON c.person_id = ids.pid",
     ("entity_column_compared", ENTITY.format("clinic_visits.person_id"), 1, 131)),
    ("join_column_after_an_open_join",
     "SELECT count(*) FROM residents r JOIN residents r2 ON r.district = r2.district "
     "JOIN clinic_visits c ON c.visit_id = r.district",
     ("join_column_joined_with_non_join_column", JOIN.format("clinic_visits.visit_id, residents.district"), 1, 106)),
    ("join_column_after_a_valid_entity_join",
     "SELECT count(*) FROM residents r JOIN clinic_visits c ON r.person_id = c.person_id "
     "JOIN clinic_visits v ON c.visit_id = v.clinic",
     ("join_column_joined_with_non_join_column", JOIN.format("clinic_visits.clinic, clinic_visits.visit_id"), 1, 110)),
]


@pytest.mark.parametrize(("sql", "expected"), [(sql, expected) for _, sql, expected in CASES],
                         ids=[name for name, _, _ in CASES])
def test_a_bad_equi_join_after_one_that_passes_is_refused_with_its_columns_and_place(
        sql: str, expected: tuple[str, str, int, int]) -> None:
    result = analyse(sql, policies_for("city"))
    assert [(f.code, f.message, f.line, f.column) for f in result.findings] == [expected]
