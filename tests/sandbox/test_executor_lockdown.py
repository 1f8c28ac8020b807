"""Lock-down really stops escapes: checked in process against real locked DuckDB instances."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from policy.analysis import analyse
from policy.constraints import ColumnPolicy, Constraint, MaskKind, TablePolicy
from sandbox.executor import (
    EngineLimits,
    InputTable,
    LockedEngine,
    RunOutcome,
    RunSpec,
    StatementRefused,
    Watchdog,
    open_instance,
    run_locked,
    single_select,
)
from sandbox.executor.lockdown import SMALL_INPUT_ROWS, Instance
from sandbox.inputs import arrow_copy, prepare_input
from sandbox.populations import EntityIndex

GRANT_KEY = b"0123456789abcdef-grant-key-A-xyz"
LIMITS = EngineLimits(memory_limit_mb=256, threads=2, timeout_ms=1500, address_space_mb=4096)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lockdown")
    index = EntityIndex(root / "populations")
    raw = root / "raw_people.parquet"
    pq.write_table(pa.table({
        "person_id": list(range(1000)),
        "age": [20 + i % 60 for i in range(1000)],
        "income": [1000 + 7 * i for i in range(1000)],
        "diagnosis": ["secret-diagnosis"] * 1000,
    }), raw)
    people = prepare_input(raw, root / "prepared" / "grant_a" / "people.parquet", (
        ColumnPolicy("person_id", "BIGINT", Constraint.JOIN, mask=MaskKind.HASH),
        ColumnPolicy("age", "BIGINT", Constraint.GROUP, mask=MaskKind.GENERALIZE),
        ColumnPolicy("income", "BIGINT", Constraint.AGGREGATE),
        ColumnPolicy("diagnosis", "VARCHAR", Constraint.HIDDEN),
    ), grant_key=GRANT_KEY, entity=("person_id", lambda ids: index.indexes("people", ids)))
    raw_salaries = root / "raw_salaries.parquet"
    pq.write_table(pa.table({"employer": ["acme", "globex"], "salary": [5000, 7000]}), raw_salaries)
    salaries = prepare_input(raw_salaries, root / "prepared" / "grant_b" / "salaries.parquet", (
        ColumnPolicy("employer", "VARCHAR", Constraint.OPEN),
        ColumnPolicy("salary", "BIGINT", Constraint.AGGREGATE),
    ), grant_key=b"0123456789abcdef-grant-key-B-xyz")
    return {"root": root, "people": people.path, "salaries": salaries.path, "raw": raw}


@pytest.fixture(scope="module")
def engine() -> Iterator[LockedEngine]:
    eng = LockedEngine(LIMITS, max_instances=4)
    yield eng
    eng.close()


def _spec(data: dict[str, Path], sql: str, *, key: str = "grant-a", **params: object) -> RunSpec:
    inputs = (InputTable("people", data["people"]),) if key == "grant-a" else (
        InputTable("salaries", data["salaries"]),)
    return RunSpec(instance_key=key, inputs=inputs, sql=sql, params=params, k=1, max_rows=None,
                   result_path=data["root"] / "results" / f"{time.perf_counter_ns()}.parquet")


def _run(engine: LockedEngine, data: dict[str, Path], sql: str, **kw: object) -> RunOutcome:
    return engine.run(_spec(data, sql, **kw))  # type: ignore[arg-type]


def _rows(outcome: RunOutcome) -> list[dict[str, object]]:
    assert outcome.status == "succeeded", outcome
    assert outcome.result_path is not None
    return pq.read_table(outcome.result_path).to_pylist()


def test_a_granted_query_runs_and_reports_rows_and_a_result_file(engine: LockedEngine, data: dict) -> None:
    outcome = _run(engine, data, "SELECT age, count(*) AS n FROM people WHERE age >= $min GROUP BY age "
                   "ORDER BY age", min=70)
    assert _rows(outcome) == [{"age": 70, "n": 80}, {"age": 75, "n": 80}]
    assert outcome.result_rows == 2
    assert outcome.error_code is None
    assert outcome.cpu_ms > 0 and outcome.wall_ms > 0


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM read_parquet('{people}')",
    "SELECT * FROM read_parquet('{raw}')",
    "SELECT * FROM parquet_metadata('{people}')",
])
def test_reading_a_real_file_from_sql_fails(engine: LockedEngine, data: dict, sql: str) -> None:
    outcome = _run(engine, data, sql.format(people=data["people"], raw=data["raw"]))
    assert outcome.status == "failed"
    assert outcome.error_code == "sandbox_violation"


@pytest.mark.parametrize(("sql", "status", "code"), [
    ("COPY (SELECT 1) TO '{root}/copied.csv'", "refused", "statement_not_allowed"),
    ("ATTACH '{root}/other.db'", "refused", "statement_not_allowed"),
    ("ATTACH ':memory:' AS scratch", "refused", "statement_not_allowed"),
    ("INSTALL httpfs", "refused", "statement_not_allowed"),
    ("LOAD httpfs", "refused", "statement_not_allowed"),
    ("SET threads = 1", "refused", "statement_not_allowed"),
    ("RESET memory_limit", "refused", "statement_not_allowed"),
    ("PRAGMA threads = 1", "refused", "statement_not_allowed"),
    ("SET VARIABLE x = 1", "refused", "statement_not_allowed"),
    ("CREATE SECRET (TYPE s3, KEY_ID 'a', SECRET 'b')", "refused", "statement_not_allowed"),
    ("CREATE OR REPLACE VIEW people AS SELECT 1 AS x", "refused", "statement_not_allowed"),
    ("CREATE TEMP VIEW people AS SELECT 1 AS x", "refused", "statement_not_allowed"),
    ("EXPLAIN SELECT * FROM people", "refused", "statement_not_allowed"),
    ("SUMMARIZE people", "refused", "statement_not_allowed"),
    ("DESCRIBE people", "refused", "statement_not_allowed"),
    ("PIVOT people ON age USING sum(income)", "refused", "statement_not_allowed"),
    ("CALL checkpoint()", "refused", "statement_not_allowed"),
    ("SELECT 1; DROP VIEW people", "refused", "multiple_statements"),
    ("SELECT 1; SELECT 2", "refused", "multiple_statements"),
    ("  ;  ", "refused", "empty_statement"),
])
def test_statements_other_than_one_plain_select_are_refused(
    engine: LockedEngine, data: dict, sql: str, status: str, code: str
) -> None:
    outcome = _run(engine, data, sql.format(root=data["root"]))
    assert (outcome.status, outcome.error_code) == (status, code)
    assert not (data["root"] / "copied.csv").exists()
    assert _rows(_run(engine, data, "SELECT count(*) AS n FROM people")) == [{"n": 1000}]


@pytest.mark.parametrize("sql", [
    "COPY (SELECT 1) TO '{root}/copied.csv'",
    "ATTACH '{root}/other.db'",
    "INSTALL httpfs",
    "SET threads = 1",
    "RESET memory_limit",
    "PRAGMA threads = 1",
])
def test_the_instance_itself_refuses_escapes_even_without_the_statement_check(data: dict, sql: str) -> None:
    instance = open_instance((InputTable("people", data["people"]),), LIMITS)
    try:
        with pytest.raises(duckdb.Error):
            instance.con.cursor().execute(sql.format(root=data["root"]))
    finally:
        instance.con.close()
    assert not (data["root"] / "copied.csv").exists()


def test_load_of_an_extension_fails_in_the_instance(data: dict) -> None:
    instance = open_instance((), LIMITS)
    try:
        with pytest.raises(duckdb.PermissionException):
            instance.con.cursor().execute("LOAD httpfs")
    finally:
        instance.con.close()


def test_arrow_scan_functions_cannot_be_called_from_sql(engine: LockedEngine, data: dict) -> None:
    for sql in ("SELECT * FROM python_arrow_scan()", "SELECT * FROM arrow_scan()",
                "SELECT * FROM arrow_scan_dumb()"):
        assert _run(engine, data, sql).error_code == "binder_error"


def test_hidden_columns_do_not_exist(engine: LockedEngine, data: dict) -> None:
    assert _run(engine, data, "SELECT diagnosis FROM people").error_code == "binder_error"
    sql = "SELECT column_name FROM duckdb_columns() WHERE table_name = 'people'"
    columns = _rows(_run(engine, data, sql))
    # the dense entity index is a hidden column of entity inputs; governed SQL cannot name __sluice identifiers
    assert [c["column_name"] for c in columns] == ["person_id", "age", "income", "__sluice_eidx"]


def test_another_grants_tables_are_not_visible(engine: LockedEngine, data: dict) -> None:
    assert _rows(_run(engine, data, "SELECT sum(salary) AS s FROM salaries", key="grant-b")) == [{"s": 12000}]
    outcome = _run(engine, data, "SELECT sum(salary) AS s FROM salaries")
    assert outcome.error_code == "catalog_error"
    views = _rows(_run(engine, data, "SELECT view_name FROM duckdb_views() WHERE NOT internal"))
    assert views == [{"view_name": "people"}]


def test_settings_reveal_no_server_paths(engine: LockedEngine, data: dict) -> None:
    settings = _rows(_run(engine, data, "SELECT name, value FROM duckdb_settings()"))
    paths = [str(data["root"]), str(Path.home()), os.getcwd(), "/tmp", "/root", "/home"]
    leaked = [s for s in settings if any(p in str(s["value"]) for p in paths)]
    assert leaked == []
    assert _rows(_run(engine, data, "SELECT current_setting('secret_directory') AS s, "
                      "current_setting('temp_directory') AS t")) == [{"s": "", "t": ""}]


def test_view_text_shows_no_path_and_no_grant_key(engine: LockedEngine, data: dict) -> None:
    views = _rows(_run(engine, data, "SELECT sql FROM duckdb_views() WHERE NOT internal"))
    text = " ".join(str(v["sql"]) for v in views)
    assert "parquet" not in text.lower()
    assert str(data["root"]) not in text
    assert GRANT_KEY.decode() not in text
    assert GRANT_KEY.hex() not in text


def test_hashed_ids_are_masked_inside_the_instance(engine: LockedEngine, data: dict) -> None:
    rows = _rows(_run(engine, data, "SELECT DISTINCT length(person_id) AS n FROM people"))
    assert rows == [{"n": 32}]


def test_a_failing_cast_reports_no_value(engine: LockedEngine, data: dict) -> None:
    outcome = _run(engine, data, "SELECT sum(CAST(income AS TINYINT)) AS s FROM people")
    assert (outcome.status, outcome.error_code) == ("failed", "conversion_error")
    message = f"{outcome.error_message} {outcome.internal_detail}"
    assert not any(ch.isdigit() for ch in message)  # the raw text names the value, e.g. 1000


def test_a_value_in_an_error_function_never_reaches_the_message(engine: LockedEngine, data: dict) -> None:
    outcome = _run(engine, data, "SELECT error('income is ' || max(income)::VARCHAR) FROM people")
    assert outcome.error_code == "invalid_input"
    assert not any(ch.isdigit() for ch in f"{outcome.error_message} {outcome.internal_detail}")


def test_max_execution_time_stops_a_long_scan(data: dict) -> None:
    instance = open_instance((), EngineLimits(256, 2, timeout_ms=300, address_space_mb=4096))
    watchdog = Watchdog()
    try:
        started = time.monotonic()
        with pytest.raises(duckdb.InterruptException):
            run_locked(instance, "SELECT count(*) FROM range(100000000000)", {}, timeout_ms=60_000,
                       watchdog=watchdog)
        assert time.monotonic() - started < 5
        assert not watchdog.fired
    finally:
        watchdog.close()
        instance.con.close()


def test_the_watchdog_stops_a_sleep_that_max_execution_time_does_not(data: dict) -> None:
    instance = open_instance((), EngineLimits(256, 2, timeout_ms=60_000, address_space_mb=4096))
    watchdog = Watchdog()
    try:
        started = time.monotonic()
        with pytest.raises(duckdb.InterruptException):
            run_locked(instance, "SELECT sleep_ms(20000)", {}, timeout_ms=300, watchdog=watchdog)
        assert time.monotonic() - started < 5
        assert watchdog.fired
        assert run_locked(instance, "SELECT 42 AS x", {}, timeout_ms=300, watchdog=watchdog).to_pylist() == [
            {"x": 42}]
    finally:
        watchdog.close()
        instance.con.close()


def test_a_timed_out_run_ends_timed_out_and_the_instance_serves_the_next(
    engine: LockedEngine, data: dict
) -> None:
    outcome = _run(engine, data, "SELECT sleep_ms(20000)")
    assert (outcome.status, outcome.error_code) == ("timed_out", "timed_out")
    assert outcome.wall_ms < 5000
    assert _rows(_run(engine, data, "SELECT count(*) AS n FROM people")) == [{"n": 1000}]


def test_instances_are_cached_per_key_and_rebuilt_when_an_input_changes(data: dict, tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"v": [1, 2]}), path)
    eng = LockedEngine(LIMITS, max_instances=2)
    try:
        def total(key: str) -> list[dict[str, object]]:
            spec = RunSpec(key, (InputTable("t", path),), "SELECT sum(v) AS s FROM t", {}, 1, None,
                           tmp_path / f"{time.perf_counter_ns()}.parquet")
            return _rows(eng.run(spec))
        assert total("a") == [{"s": 3}]
        assert total("a") == [{"s": 3}]
        assert eng.instances.opened == 1
        os.utime(path, ns=(1, 1))
        pq.write_table(pa.table({"v": [10, 20]}), path)
        assert total("a") == [{"s": 30}]
        assert eng.instances.opened == 2
        total("b")
        total("c")
        assert eng.instances.keys() == ["b", "c"]
    finally:
        eng.close()


def test_the_row_cap_applies_before_the_result_is_written(engine: LockedEngine, data: dict) -> None:
    sql = "SELECT age, sum(income) AS total FROM people GROUP BY age ORDER BY age"
    spec = _spec(data, sql)
    outcome = engine.run(RunSpec(spec.instance_key, spec.inputs, sql, {}, k=81, max_rows=5,
                                 result_path=spec.result_path))
    rows = _rows(outcome)
    assert [r["age"] for r in rows] == [20, 25, 30, 35, 40]
    assert outcome.truncated_rows == 7 and outcome.result_rows == 5 and outcome.suppressed_cells == 0


def test_output_control_over_entity_data_leaves_the_release_to_the_api(engine: LockedEngine, data: dict) -> None:
    people = TablePolicy("people", (ColumnPolicy("person_id", "VARCHAR", Constraint.JOIN),
                                    ColumnPolicy("age", "BIGINT", Constraint.GROUP),
                                    ColumnPolicy("income", "BIGINT", Constraint.AGGREGATE)),
                         entity_column="person_id", population="people")
    result = analyse("SELECT age, sum(income) AS total FROM people GROUP BY age ORDER BY age", {"people": people})
    assert result.sql is not None and result.release is not None
    spec = _spec(data, result.sql)
    outcome = engine.run(RunSpec(spec.instance_key, spec.inputs, result.sql, {}, k=81, max_rows=None,
                                 result_path=spec.result_path, release=result.release.to_dict()))
    assert outcome.status == "succeeded" and outcome.result_path is None and outcome.pending is not None
    assert outcome.pending.table.column("age").to_pylist() == [20, 25, 30, 35, 40, 45, 50, 55]
    assert outcome.suppression == {"k": 4}  # bands 20..55 have 85 people each, bands 60..75 have 80 < k
    assert len(outcome.pending.cells) == 8 and all(len(c.parts[0].bitmap()) == 85 for c in outcome.pending.cells)


def test_a_missing_input_file_fails_the_run_cleanly(engine: LockedEngine, data: dict, tmp_path: Path) -> None:
    spec = RunSpec("gone", (InputTable("t", tmp_path / "missing.parquet"),), "SELECT 1", {}, 1, None,
                   tmp_path / "r.parquet")
    outcome = engine.run(spec)
    assert (outcome.status, outcome.error_code) == ("failed", "input_unavailable")
    assert str(tmp_path) not in str(outcome.error_message)


@pytest.mark.parametrize("sql", [
    "SELECT 1",
    "with t AS (SELECT 1 AS x) SELECT x FROM t",
    "  -- a comment\n/* another */ (SELECT 1) UNION ALL (SELECT 2)",
    "VALUES (1), (2)",
    "FROM people SELECT count(*)",
    "SELECT 1;",
])
def test_plain_selects_in_every_form_sql_analysis_emits_are_accepted(sql: str) -> None:
    assert single_select(sql).type == duckdb.StatementType.SELECT


def test_deeply_nested_sql_is_refused_by_the_parser_not_a_crash(engine: LockedEngine, data: dict) -> None:
    sql = "SELECT " + "(" * 5000 + "1" + ")" * 5000
    assert (_run(engine, data, sql).status, _run(engine, data, sql).error_code) == ("refused", "parser_error")
    nested = "SELECT " + "(" * 300 + "1" + ")" * 300
    assert _run(engine, data, nested).error_code == "parser_error"  # max_expression_depth = 250


def test_run_locked_never_runs_a_parsed_statement_that_is_not_a_select(data: dict) -> None:
    instance = open_instance((InputTable("people", data["people"]),), LIMITS)
    watchdog = Watchdog()
    try:
        statement = duckdb.extract_statements("CREATE TABLE copied AS SELECT * FROM people")[0]
        with pytest.raises(StatementRefused):
            run_locked(instance, statement, {}, timeout_ms=1000, watchdog=watchdog)
        assert instance.con.cursor().execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'copied'").fetchone() == (0,)
    finally:
        watchdog.close()
        instance.con.close()


def test_named_parameters_are_bound_by_name_and_a_missing_one_fails_the_run(engine: LockedEngine, data: dict) -> None:
    assert _rows(_run(engine, data, "SELECT $b - $a AS d", a=2, b=7)) == [{"d": 5}]
    outcome = _run(engine, data, "SELECT count(*) AS n FROM people WHERE age >= $min")
    assert (outcome.status, outcome.result_path) == ("failed", None)


def _threads(instance: Instance) -> int:
    try:
        return int(instance.con.cursor().execute("SELECT current_setting('threads')").fetchall()[0][0])
    finally:
        instance.con.close()


def _arrow_input(root: Path, name: str, rows: int) -> InputTable:
    raw = root / f"{name}.parquet"
    pq.write_table(pa.table({"x": pa.array(range(rows), pa.int64())}), raw)
    return InputTable(name, arrow_copy(raw, root / f"{name}.arrow"))


def test_an_instance_whose_memory_mapped_inputs_fit_one_morsel_runs_on_one_duckdb_thread(data: dict) -> None:
    small = (_arrow_input(data["root"], "small_a", 1000),
             _arrow_input(data["root"], "small_b", SMALL_INPUT_ROWS - 1000))  # exactly one morsel together
    assert _threads(open_instance(small, LIMITS)) == 1
    assert _threads(open_instance((), LIMITS)) == 1


def test_an_instance_over_more_rows_or_a_parquet_dataset_keeps_the_configured_threads(data: dict) -> None:
    split = (_arrow_input(data["root"], "half_a", 1000),
             _arrow_input(data["root"], "half_b", SMALL_INPUT_ROWS - 999))  # one row more than a morsel
    assert _threads(open_instance(split, LIMITS)) == LIMITS.threads == 2
    assert _threads(open_instance((InputTable("people", data["people"]),), LIMITS)) == 2  # Parquet: rows not counted
    assert _threads(open_instance(split, EngineLimits(256, 1, timeout_ms=1500, address_space_mb=4096))) == 1


def test_the_thread_count_of_a_small_instance_is_locked_like_the_rest(data: dict) -> None:
    instance = open_instance((_arrow_input(data["root"], "tiny", 10),), LIMITS)
    try:
        with pytest.raises(duckdb.Error):
            instance.con.cursor().execute("SET threads = 2")
        assert instance.con.cursor().execute("SELECT current_setting('threads')").fetchall() == [(1,)]
    finally:
        instance.con.close()
