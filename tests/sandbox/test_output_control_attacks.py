"""Exact-value extraction attacks over the full HTTP path (submit, approve, run, download), each seen to fail.

Every attack here once returned exact individual values. The dataset is small and made up: 40 people in district
A, 40 in B, 4 in the tiny district C; `bonus` is 0 for everyone but one person in A; a few rows have no person.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sluice_api import Api
from starlette.testclient import TestClient

from sandbox import release_snapshot
from sandbox.app import create_app

K = 10


def _people_csv() -> str:
    rows = ["person_id,district,income,phone,category,bonus,amount"]
    districts = ["A"] * 40 + ["B"] * 40 + ["C"] * 4
    for i, district in enumerate(districts):
        bonus = 99_999 if i == 7 else 0
        rows.append(f"p{i:03d},{district},{3000 + 37 * i},1380000{i:04d},{'x' if i % 2 else 'y'},{bonus},{10 + i}")
    for j in range(3):  # rows without an entity: only they have category z
        rows.append(f",A,{9000 + j},,z,0,{500 + j}")
    return "\n".join(rows) + "\n"


PEOPLE_META = {
    "entity_column": "person_id", "population": "attack_people",
    "columns": {"person_id": {"constraint": "join"}, "district": {"constraint": "group"},
                "income": {"constraint": "aggregate"}, "phone": {"constraint": "aggregate"},
                "category": {"constraint": "group"}, "bonus": {"constraint": "aggregate"},
                "amount": {"constraint": "aggregate"}},
    "column_types": {"person_id": "VARCHAR", "district": "VARCHAR", "income": "BIGINT", "phone": "VARCHAR",
                     "category": "VARCHAR", "bonus": "BIGINT", "amount": "BIGINT"},
}


@pytest.fixture
def attack(api: Api) -> dict[str, Any]:
    """The people dataset, an operator with an auto-approving whole grant (k = 10), a second operator."""
    _, steward = api.actor("provider", "data_steward")
    api.register(steward, dataset_id="people", content=_people_csv(), **PEOPLE_META)
    op, key = api.actor("operator", "operator")
    grant = api.grant(op, auto_approve=True, min_group_size=K)["id"]
    op2, key2 = api.actor("operator", "operator")
    grant2 = api.grant(op2, auto_approve=True, min_group_size=K)["id"]
    return {"steward": steward, "key": key, "grant": grant, "key2": key2, "grant2": grant2}


def submit(api: Api, key: str, grant: str, sql: str, *, expect: int = 201, **parameters: str) -> Any:
    resp = api.call("POST", "/v1/jobs", key, json={"grant_id": grant, "title": "t", "purpose": "p", "sql": sql,
                                                   "parameters": parameters})
    assert resp.status_code == expect, resp.text
    return resp.json()


def run(api: Api, key: str, job: str, **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    resp = api.call("POST", f"/v1/jobs/{job}/runs", key, json={"params": params})
    assert resp.status_code == 201, resp.text
    record = resp.json()
    assert record["status"] == "succeeded", record
    rows = api.ok("GET", f"/v1/runs/{record['id']}/result?format=json", key)
    return record, rows


def released(api: Api, key: str, grant: str, sql: str, **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Submit (auto-approved) and run a query; its run record and released rows."""
    types = {name: ("BIGINT" if isinstance(value, int) else "VARCHAR") for name, value in params.items()}
    job = submit(api, key, grant, sql, **types)
    assert job["state"] == "approved", job
    return run(api, key, job["id"], **params)


def refused_codes(api: Api, key: str, grant: str, sql: str, **parameters: str) -> list[str]:
    body = submit(api, key, grant, sql, expect=422, **parameters)
    assert body["code"] == "query_refused"
    return sorted(f["code"] for f in body["context"]["findings"])


def marker(row: dict[str, Any]) -> dict[str, str]:
    return json.loads(row["sluice_suppressed"]) if row["sluice_suppressed"] else {}


# --- hole 1: the entity column compared with constants at one remove ---------------------------------------------
def test_equi_joining_the_entity_to_a_cte_of_literals_is_refused(api: Api, attack: dict[str, Any]) -> None:
    sql = ("WITH picked AS (SELECT 'p001' AS id UNION ALL SELECT 'p002') "
           "SELECT p.district, sum(p.income) AS s FROM people p JOIN picked ON p.person_id = picked.id GROUP BY 1")
    assert refused_codes(api, attack["key"], attack["grant"], sql) == ["entity_column_compared"]


def test_the_entity_in_a_union_of_parameters_is_refused(api: Api, attack: dict[str, Any]) -> None:
    sql = "SELECT sum(income) AS s FROM people WHERE person_id IN (SELECT $a UNION ALL SELECT $b)"
    assert refused_codes(api, attack["key"], attack["grant"], sql, a="VARCHAR", b="VARCHAR") == [
        "entity_column_compared"]


def test_equi_joining_the_entity_to_a_derived_column_is_refused(api: Api, attack: dict[str, Any]) -> None:
    sql = ("WITH n AS (SELECT lower(category) AS k, person_id FROM people) "
           "SELECT count(*) AS c FROM people p JOIN n ON p.person_id = n.k")
    assert refused_codes(api, attack["key"], attack["grant"], sql) == ["entity_column_compared"]


# --- hole 2: weighted sums in disguise ----------------------------------------------------------------------------
def test_a_covariance_with_an_indicator_is_refused(api: Api, attack: dict[str, Any]) -> None:
    sql = "SELECT district, covar_pop(income, bonus) AS c FROM people GROUP BY 1"
    assert refused_codes(api, attack["key"], attack["grant"], sql) == ["complex_aggregate_over_entity_data"]


# --- hole 3: affine shifts defeat a contributor rule; the dominance rule catches the lone value ------------------
@pytest.mark.parametrize("expression", ["sum(bonus + 1) - count(*)", "sum(coalesce(bonus, 0.000001))",
                                        "avg(bonus + 3)", "stddev(bonus + 2)"])
def test_a_lone_non_zero_value_among_zeros_is_suppressed_by_dominance(api: Api, attack: dict[str, Any],
                                                                      expression: str) -> None:
    record, rows = released(api, attack["key"], attack["grant"],
                            f"SELECT district, {expression} AS leak FROM people GROUP BY 1 ORDER BY 1")
    by_district = {r["district"]: r for r in rows}
    assert by_district["A"]["leak"] is None and marker(by_district["A"]) == {"leak": "dominance"}
    assert by_district["B"]["leak"] is not None
    assert record["suppression"].get("dominance") == 1


# --- hole 4: rows without an entity never make a cell releasable ---------------------------------------------------
def test_a_filter_fed_only_by_rows_without_an_entity_is_suppressed(api: Api, attack: dict[str, Any]) -> None:
    record, rows = released(api, attack["key"], attack["grant"],
                            "SELECT district, count(*) AS n, sum(amount) FILTER (WHERE category = 'z') AS orphan "
                            "FROM people GROUP BY 1 ORDER BY 1")
    assert record["suppression"]["k"] >= 3  # the orphan cell, and district C's two cells
    a = next(r for r in rows if r["district"] == "A")
    assert a["n"] == 43 and a["orphan"] is None and marker(a) == {"orphan": "k"}
    assert "C" not in {r["district"] for r in rows}  # 4 people < k: the whole row goes


# --- hole 5: choosing members with ORDER BY ... LIMIT --------------------------------------------------------------
def test_limit_minus_limit_is_refused(api: Api, attack: dict[str, Any]) -> None:
    sql = "SELECT sum(t.income) AS s FROM (SELECT * FROM people LIMIT 11) t"
    assert refused_codes(api, attack["key"], attack["grant"], sql) == ["row_selection_below_aggregation"]


# --- hole 6: analysis time and request limits ----------------------------------------------------------------------
def test_a_product_of_many_factors_is_answered_at_once(api: Api, attack: dict[str, Any]) -> None:
    product = " * ".join(["(income + 1)"] * 40)
    sql = f"SELECT district, sum({product}) AS s FROM people GROUP BY 1"
    assert refused_codes(api, attack["key"], attack["grant"], sql) == ["complex_aggregate_over_entity_data"]


def test_a_huge_body_is_refused_before_it_reaches_the_store(api: Api, attack: dict[str, Any]) -> None:
    body = {"grant_id": attack["grant"], "title": "t", "purpose": "p", "sql": "SELECT 1 " + "-" * (2 << 20)}
    resp = api.call("POST", "/v1/jobs", attack["key"], json=body)
    assert resp.status_code == 413 and resp.json()["code"] == "request_too_large"


def test_a_huge_chunked_body_is_refused_as_too_large(api: Api, attack: dict[str, Any]) -> None:
    body = json.dumps({"grant_id": attack["grant"], "title": "t", "purpose": "p",
                       "sql": "SELECT 1 " + "-" * (2 << 20)}).encode()
    chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))  # no Content-Length: sent chunked
    resp = api.http.request("POST", "/v1/jobs", content=chunks,
                            headers={**api.as_(attack["key"]), "content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["code"] == "request_too_large"


def test_a_refused_job_keeps_its_sql_only_up_to_the_length_cap(api: Api, attack: dict[str, Any]) -> None:
    sql = "SELECT count(*) AS n FROM people WHERE district = '" + "x" * 200_000 + "'"
    body = submit(api, attack["key"], attack["grant"], sql, expect=422)
    assert [f["code"] for f in body["context"]["findings"]] == ["sql_too_long"]
    job = api.ok("GET", f"/v1/jobs/{body['context']['job_id']}", attack["key"])
    assert len(job["sql"]) == 100_000


def test_a_nul_byte_in_a_path_is_a_bad_request(api: Api, attack: dict[str, Any]) -> None:
    resp = api.call("GET", "/v1/datasets/people%00x", attack["key"])
    assert resp.status_code == 400 and resp.json()["code"] == "invalid_path"


# --- hole 7: re-grading reaches approved jobs ----------------------------------------------------------------------
def test_a_dataset_regraded_core_stops_jobs_approved_on_the_older_version(api: Api, attack: dict[str, Any]) -> None:
    job = submit(api, attack["key"], attack["grant"], "SELECT district, sum(income) AS s FROM people GROUP BY 1")
    run(api, attack["key"], job["id"])
    meta = {k: v for k, v in PEOPLE_META.items() if k != "column_types"}
    pending = api.new_version(attack["steward"], "people", certify=False, grade="core", **meta)
    run(api, attack["key"], job["id"])  # a version still in registration bounds nothing yet
    api.certify("people", pending["version"])
    resp = api.call("POST", f"/v1/jobs/{job['id']}/runs", attack["key"], json={"params": {}})
    assert resp.status_code == 422 and resp.json()["code"] == "dataset_regraded"
    _, regulator = api.actor("regulator", "regulator")
    audit = api.ok("GET", "/v1/audit/events", regulator, params={"limit": 1000})["events"]
    assert any(a["action"] == "run:create" and a["code"] == "dataset_regraded" for a in audit)


def test_a_column_tightened_to_hidden_stops_jobs_that_read_it(api: Api, attack: dict[str, Any]) -> None:
    job = submit(api, attack["key"], attack["grant"], "SELECT district, sum(income) AS s FROM people GROUP BY 1")
    meta = {k: v for k, v in PEOPLE_META.items() if k != "column_types"}
    meta["columns"] = {**PEOPLE_META["columns"], "income": {"constraint": "hidden"}}
    api.new_version(attack["steward"], "people", **meta)
    resp = api.call("POST", f"/v1/jobs/{job['id']}/runs", attack["key"], json={"params": {}})
    assert resp.status_code == 422 and resp.json()["code"] == "dataset_regraded"
    other = submit(api, attack["key"], attack["grant"], "SELECT district, count(*) AS n FROM people GROUP BY 1")
    assert other["dataset_versions"] == {"people": 2}


# --- hole 8: typos do not open columns -----------------------------------------------------------------------------
def test_a_grant_override_naming_a_missing_column_names_the_nearest(api: Api, attack: dict[str, Any]) -> None:
    op, _ = api.actor("operator", "operator")
    body = api.grant(op, expect=400, column_overrides={"people": {"incom": "hidden"}})
    assert body["code"] == "unknown_column" and "did you mean `income`?" in body["detail"]
    body = api.grant(op, expect=400, column_overrides={"peple": {"income": "hidden"}})
    assert body["code"] == "unknown_dataset" and "did you mean `people`?" in body["detail"]
    body = api.grant(op, expect=400, column_overrides={"people": {"income": "hiden"}})
    assert body["code"] == "invalid_constraint" and "did you mean `hidden`?" in body["detail"]


def test_a_misspelt_tag_that_would_leave_a_column_open_is_refused(api: Api, attack: dict[str, Any]) -> None:
    body = api.register(attack["steward"], expect=400, columns={"phone": {"tags": ["sensitve_personal"]}})
    assert body["code"] == "invalid_tag" and "did you mean `sensitive_personal`?" in body["detail"]


# --- hole 9: a hidden entity column ------------------------------------------------------------------------------
def test_a_hidden_entity_column_is_refused_at_registration(api: Api, attack: dict[str, Any]) -> None:
    body = api.register(attack["steward"], expect=400, entity_column="person_id",
                        columns={"person_id": {"constraint": "hidden"}})
    assert body["code"] == "entity_column_not_join"


# --- the release audit: differencing attacks end to end ---------------------------------------------------------
def test_leave_one_out_groups_recover_nothing(api: Api, attack: dict[str, Any]) -> None:
    _, base = released(api, attack["key"], attack["grant"], "SELECT sum(income) AS s FROM people "
                                                            "WHERE district = 'A'")
    assert base[0]["s"] is not None
    sql = "SELECT sum(income) AS s FROM people WHERE district = 'A' AND phone <> $p"
    job = submit(api, attack["key"], attack["grant"], sql, p="VARCHAR")
    for i in (1, 2, 3):
        record, rows = run(api, attack["key"], job["id"], p=f"1380000{i:04d}")
        assert rows[0]["s"] is None and marker(rows[0]) == {"s": "difference_audit"}, (i, rows)
        assert record["suppression"] == {"difference_audit": 1}
    _, regulator = api.actor("regulator", "regulator")
    events = api.ok("GET", "/v1/audit/events", regulator, params={"limit": 1000})["events"]
    last = [e for e in events if e["action"] == "run:create"][-1]
    assert last["rows"]["suppressed_cells"] == 1 and last["detail"]["suppression"] == {"difference_audit": 1}
    metrics = api.http.get("/metrics").text
    assert 'sluice_suppressed_cells_total{reason="difference_audit"} 3.0' in metrics
    assert 'sluice_release_ledger_cells{population="attack_people"}' in metrics


def test_two_in_lists_that_differ_by_one_person_recover_nothing(api: Api, attack: dict[str, Any]) -> None:
    phones = [f"'1380000{i:04d}'" for i in range(12)]
    _, first = released(api, attack["key"], attack["grant"],
                        f"SELECT count(*) AS n, sum(income) AS s FROM people WHERE phone IN ({', '.join(phones)})")
    assert first[0]["s"] is not None
    _, second = released(api, attack["key"], attack["grant"],
                         f"SELECT count(*) AS n, sum(income) AS s FROM people "
                         f"WHERE phone IN ({', '.join(phones[:-1])})")
    assert second[0]["s"] is None and second[0]["n"] is None
    assert marker(second[0]) == {"n": "difference_audit", "s": "difference_audit"}


def test_a_filter_complement_recovers_nothing(api: Api, attack: dict[str, Any]) -> None:
    record, rows = released(api, attack["key"], attack["grant"],
                            "SELECT sum(income) AS s, sum(income) FILTER (WHERE district <> 'C') AS r "
                            "FROM people WHERE district IN ('A', 'C') AND category <> 'z'")
    row = rows[0]
    # their difference is the 4 people of district C (fewer than k): the finer cell goes, the total stays
    assert row["s"] is not None and row["r"] is None and marker(row) == {"r": "difference_audit"}
    assert record["suppression"] == {"difference_audit": 1}


def test_two_queries_that_differ_by_one_district_recover_nothing(api: Api, attack: dict[str, Any]) -> None:
    _, first = released(api, attack["key"], attack["grant"],
                        "SELECT sum(income) AS s FROM people WHERE district IN ('A', 'B', 'C')")
    assert first[0]["s"] is not None
    # the second operator, under another grant: the ledger is per population, across grants and operators
    _, second = released(api, attack["key2"], attack["grant2"],
                         "SELECT sum(income) AS s FROM people WHERE district IN ('A', 'B')")
    assert second[0]["s"] is None and marker(second[0]) == {"s": "difference_audit"}


def test_a_covariance_weight_recovers_nothing(api: Api, attack: dict[str, Any]) -> None:
    sql = "SELECT covar_samp(income, bonus) AS c FROM people WHERE district = 'A'"
    assert refused_codes(api, attack["key"], attack["grant"], sql) == ["complex_aggregate_over_entity_data"]


def test_a_null_entity_cell_recovers_nothing(api: Api, attack: dict[str, Any]) -> None:
    _, rows = released(api, attack["key"], attack["grant"],
                       "SELECT sum(income) AS s, sum(income) FILTER (WHERE category = 'z') AS z, "
                       "sum(income) FILTER (WHERE category <> 'z') AS people_only FROM people WHERE district = 'A'")
    row = rows[0]
    assert row["z"] is None and marker(row)["z"] == "k"
    # the total and the people-only figure differ exactly by the rows without an entity: one of them goes
    assert (row["s"] is None) or (row["people_only"] is None)


# --- durability and concurrency ------------------------------------------------------------------------------------
def test_the_ledger_survives_a_restart(api: Api, attack: dict[str, Any]) -> None:
    released(api, attack["key"], attack["grant"], "SELECT sum(income) AS s FROM people WHERE district = 'A'")
    job = submit(api, attack["key"], attack["grant"],
                 "SELECT sum(income) AS s FROM people WHERE district = 'A' AND phone <> '13800000009'")
    again = create_app(api.settings, api.clock, pool=api.http.app.state.sluice.runs.shared_pool)  # type: ignore[attr-defined]
    with TestClient(again, raise_server_exceptions=False) as http:
        resp = http.post(f"/v1/jobs/{job['id']}/runs", json={"params": {}}, headers=api.as_(attack["key"]))
        assert resp.status_code == 201, resp.text
        rows = http.get(f"/v1/runs/{resp.json()['id']}/result", headers=api.as_(attack["key"])).json()
    again.state.sluice.engine.dispose()
    assert rows[0]["s"] is None and marker(rows[0]) == {"s": "difference_audit"}


def _restart_and_run(api: Api, key: str, job: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    again = create_app(api.settings, api.clock, pool=api.http.app.state.sluice.runs.shared_pool)  # type: ignore[attr-defined]
    with TestClient(again, raise_server_exceptions=False) as http:
        resp = http.post(f"/v1/jobs/{job}/runs", json={"params": {}}, headers=api.as_(key))
        assert resp.status_code == 201, resp.text
        rows = http.get(f"/v1/runs/{resp.json()['id']}/result", headers=api.as_(key)).json()
    populations = dict(again.state.sluice.releases._populations)
    again.state.sluice.engine.dispose()
    return rows, populations


def test_after_a_restart_the_ledger_is_read_from_its_snapshot(api: Api, attack: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(release_snapshot, "SNAPSHOT_EVERY", 1)
    released(api, attack["key"], attack["grant"], "SELECT sum(income) AS s FROM people WHERE district = 'A'")
    assert list((api.settings.resolved_home / "ledgers").glob("*.pickle"))
    job = submit(api, attack["key"], attack["grant"],
                 "SELECT sum(income) AS s FROM people WHERE district = 'A' AND phone <> '13800000009'")
    rows, populations = _restart_and_run(api, attack["key"], job["id"])
    assert rows[0]["s"] is None and marker(rows[0]) == {"s": "difference_audit"}
    assert populations and all(entry.snapshot_cells > 0 for entry in populations.values())  # not replayed


def test_a_snapshot_that_does_not_match_the_store_is_ignored(api: Api, attack: dict[str, Any],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(release_snapshot, "SNAPSHOT_EVERY", 1)
    released(api, attack["key"], attack["grant"], "SELECT sum(income) AS s FROM people WHERE district = 'A'")
    assert len(list((api.settings.resolved_home / "ledgers").glob("*.pickle"))) == 1
    snapshot = release_snapshot.load(api.settings.resolved_home, next(iter(
        api.http.app.state.sluice.releases._populations)))  # type: ignore[attr-defined]
    assert snapshot is not None
    snapshot.fingerprint = "0" * 64  # as if the store had been restored from an older backup
    release_snapshot.save(api.settings.resolved_home, snapshot)
    job = submit(api, attack["key"], attack["grant"],
                 "SELECT sum(income) AS s FROM people WHERE district = 'A' AND phone <> '13800000009'")
    rows, populations = _restart_and_run(api, attack["key"], job["id"])
    assert rows[0]["s"] is None and marker(rows[0]) == {"s": "difference_audit"}  # rebuilt from the store
    rewritten = release_snapshot.load(api.settings.resolved_home, snapshot.population)
    assert rewritten is not None and rewritten.fingerprint != "0" * 64  # replaced by one that matches the store
    assert rewritten.fingerprint == populations[snapshot.population].fingerprint.hexdigest()


def test_concurrent_releases_cannot_both_pass_against_a_ledger_that_lacks_the_other(
        api: Api, attack: dict[str, Any]) -> None:
    whole = submit(api, attack["key"], attack["grant"], "SELECT sum(income) AS s FROM people WHERE district = 'B'")
    but_one = submit(api, attack["key2"], attack["grant2"],
                     "SELECT sum(income) AS s FROM people WHERE district = 'B' AND phone <> '13800000050'")
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}

    def go(name: str, key: str, job: str) -> None:
        try:
            results[name] = run(api, key, job)[1][0]["s"]
        except BaseException as exc:  # kept for the assertion's message: a thread's own traceback is easily lost
            failures[name] = repr(exc)

    threads = [threading.Thread(target=go, args=("whole", attack["key"], whole["id"])),
               threading.Thread(target=go, args=("but_one", attack["key2"], but_one["id"]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert len(results) == 2, "a run did not answer within 60 s"
    assert sum(value is None for value in results.values()) == 1, results


def test_the_audit_does_not_suppress_what_reveals_nothing(api: Api, attack: dict[str, Any]) -> None:
    record, rows = released(api, attack["key"], attack["grant"],
                            "SELECT district, category, count(*) AS n, sum(income) AS s FROM people "
                            "WHERE district IN ('A', 'B') AND category <> 'z' GROUP BY 1, 2 ORDER BY 1, 2")
    assert len(rows) == 4 and all(r["n"] is not None and r["s"] is not None for r in rows)
    assert record["suppressed_cells"] == 0
    _, totals = released(api, attack["key"], attack["grant"],
                         "SELECT district, count(*) AS n FROM people WHERE district IN ('A', 'B') "
                         "AND category <> 'z' GROUP BY 1")
    assert all(r["n"] is not None for r in totals)  # totals of released groups reveal no one new


# --- the order of released rows ------------------------------------------------------------------------------------
def _ranked_csv() -> str:
    """Four groups of 20 people; `flag` y for 15, 5, 12 and 3 of them, whose incomes make the flagged sums
    15,000 (g1), 20,000 (g2), 24,000 (g3) and 30,000 (g4): g2's and g4's cover fewer than k people."""
    rows = ["person_id,grp,flag,income"]
    for grp, flagged, income in (("g1", 15, 1000), ("g2", 5, 4000), ("g3", 12, 2000), ("g4", 3, 10000)):
        for i in range(20):
            rows.append(f"{grp}-{i:02d},{grp},{'y' if i < flagged else 'n'},{income if i < flagged else 1}")
    return "\n".join(rows) + "\n"


RANKED_META = {
    "entity_column": "person_id", "population": "ranked_people",
    "columns": {"person_id": {"constraint": "join"}, "grp": {"constraint": "group"},
                "flag": {"constraint": "group"}, "income": {"constraint": "aggregate"}},
    "column_types": {"person_id": "VARCHAR", "grp": "VARCHAR", "flag": "VARCHAR", "income": "BIGINT"},
}


@pytest.fixture
def ranked(api: Api, attack: dict[str, Any]) -> dict[str, Any]:
    api.register(attack["steward"], dataset_id="ranked", content=_ranked_csv(), **RANKED_META)
    return attack


def test_ordering_by_a_suppressed_cell_does_not_reveal_its_rank(api: Api, ranked: dict[str, Any]) -> None:
    # raw order: g4 (30,000, hidden), g3 (24,000), g2 (20,000, hidden), g1 (15,000): the position of each suppressed
    # sum would bound it between released ones
    record, rows = released(api, ranked["key"], ranked["grant"],
                            "SELECT grp, sum(income) FILTER (WHERE flag = 'y') AS s FROM ranked GROUP BY grp "
                            "ORDER BY s DESC")
    assert [(r["grp"], r["s"] and int(r["s"])) for r in rows] == [("g3", 24000), ("g1", 15000), ("g2", None),
                                                                  ("g4", None)]
    assert marker(rows[2]) == marker(rows[3]) == {"s": "k"} and record["suppression"] == {"k": 2}


def test_ordering_by_an_aggregate_that_is_not_an_output_ranks_by_released_values_only(
        api: Api, ranked: dict[str, Any]) -> None:
    # the order value is a hidden cell: audited, and sorted as NULL where suppressed (g2, g4), ties by the group key
    _, rows = released(api, ranked["key"], ranked["grant"],
                       "SELECT grp, count(*) AS n FROM ranked GROUP BY grp "
                       "ORDER BY sum(income) FILTER (WHERE flag = 'y') DESC NULLS FIRST")
    assert [r["grp"] for r in rows] == ["g2", "g4", "g3", "g1"]
    assert all(r["n"] == 20 and not marker(r) for r in rows)


# --- which rows LIMIT keeps: ranked over released values only ----------------------------------------------------
def _ranked_low_csv() -> str:
    """`_ranked_csv` with other values in the two suppressed sums only: g2's and g4's flagged people earn 1 and 2,
    so their sums (5 and 6) rank last instead of first and second-to-last."""
    return _ranked_csv().replace(",y,4000", ",y,1").replace(",y,10000", ",y,2")


LIMIT_QUERIES = {
    "top": "SELECT grp, sum(income) FILTER (WHERE flag = 'y') AS s FROM {t} GROUP BY grp ORDER BY s DESC LIMIT {n}",
    "bottom": "SELECT grp, sum(income) FILTER (WHERE flag = 'y') AS s FROM {t} GROUP BY grp ORDER BY s LIMIT {n}",
    "window": "SELECT grp, sum(income) FILTER (WHERE flag = 'y') AS s FROM {t} GROUP BY grp "
              "ORDER BY s DESC LIMIT 1 OFFSET {n}",
    "hidden": "SELECT grp, count(*) AS n FROM {t} GROUP BY grp "
              "ORDER BY sum(income) FILTER (WHERE flag = 'y') DESC LIMIT {n}",
}


@pytest.mark.parametrize("shape", sorted(LIMIT_QUERIES))
def test_which_rows_limit_keeps_does_not_depend_on_suppressed_values(api: Api, ranked: dict[str, Any],
                                                                     shape: str) -> None:
    # the raw ranks differ (g4's hidden sum is the largest in `ranked`, the smallest but one in `ranked_low`): a
    # top-n that ranked every group would keep different rows, or fewer, and so bound the hidden sums
    low = {**RANKED_META, "population": "ranked_low_people"}
    api.register(ranked["steward"], dataset_id="ranked_low", content=_ranked_low_csv(), **low)
    for n in range(4):
        answers = []
        for table in ("ranked", "ranked_low"):
            _, rows = released(api, ranked["key"], ranked["grant"], LIMIT_QUERIES[shape].format(t=table, n=n))
            answers.append([{**r, "s": r.get("s") and int(r["s"])} for r in rows])
        assert answers[0] == answers[1], (shape, n)
        assert len(answers[0]) == (1 if shape == "window" else n)  # every limit is filled while rows remain


def test_a_top_n_lists_the_largest_released_values_and_the_suppressed_ones_last(
        api: Api, ranked: dict[str, Any]) -> None:
    # raw: g4 (30,000, hidden) ranked first, so a raw top-1 was either g4 or nothing at all
    _, top = released(api, ranked["key"], ranked["grant"],
                      "SELECT grp, sum(income) FILTER (WHERE flag = 'y') AS s FROM ranked GROUP BY grp "
                      "ORDER BY s DESC LIMIT 3")
    assert [(r["grp"], r["s"] and int(r["s"])) for r in top] == [("g3", 24000), ("g1", 15000), ("g2", None)]
    assert marker(top[2]) == {"s": "k"}


def _ledger_cells(api: Api, population: str) -> float:
    prefix = f'sluice_release_ledger_cells{{population="{population}"}} '
    line = next(x for x in api.http.get("/metrics").text.splitlines() if x.startswith(prefix))
    return float(line[len(prefix):])


def test_the_cells_of_rows_a_limit_drops_are_not_recorded_as_released(api: Api, ranked: dict[str, Any]) -> None:
    sql = "SELECT grp, sum(income) AS total FROM ranked GROUP BY grp ORDER BY grp"
    _, top = released(api, ranked["key"], ranked["grant"], sql + " LIMIT 1")
    assert [r["grp"] for r in top] == ["g1"]
    one = _ledger_cells(api, "ranked_people")
    _, every = released(api, ranked["key"], ranked["grant"], sql)
    assert len(every) == 4 and one > 0
    assert _ledger_cells(api, "ranked_people") - one == 4 * one  # the limited run recorded one group's cells only


def test_joined_aggregations_follow_an_order_value_that_is_not_an_output_as_released(
        api: Api, ranked: dict[str, Any]) -> None:
    # the order value is a hidden cell: released sums first (g3, then g1), the two suppressed ones as NULL, whatever
    # they were (the largest in `ranked`, the smallest in `ranked_low`)
    low = {**RANKED_META, "population": "ranked_low_people"}
    api.register(ranked["steward"], dataset_id="ranked_low", content=_ranked_low_csv(), **low)
    sql = ("WITH a AS (SELECT grp, count(*) AS n FROM {t} GROUP BY grp), "
           "b AS (SELECT grp, sum(income) FILTER (WHERE flag = 'y') AS s FROM {t} GROUP BY grp) "
           "SELECT a.grp, a.n FROM a JOIN b ON a.grp = b.grp ORDER BY b.s DESC")
    for table in ("ranked", "ranked_low"):
        record, rows = released(api, ranked["key"], ranked["grant"], sql.format(t=table))
        assert [r["grp"] for r in rows] == ["g3", "g1", "g2", "g4"], table
        assert all(r["n"] == 20 and not marker(r) for r in rows) and record["suppression"] == {"k": 2}
