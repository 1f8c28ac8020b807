"""The engine interface: DuckDB behind it unchanged, a grant choosing its engine, and the Spark engine's isolation,
hardening, failures and a full governed run on a Spark grant with the same released result as on DuckDB."""

from __future__ import annotations

import dataclasses
import logging
import logging.config
import math
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_jobs_api import HEALTH_COST, SCENARIO, approve, city_files, run, submit, world  # noqa: F401 - fixtures

from policy.output import Dominance
from policy.sql_engines import DUCKDB, SPARK
from sandbox.config import Settings
from sandbox.engines import CheckedQuery, DuckDBEngine, run_checked
from sandbox.errors import Refused
from sandbox.executor import EngineLimits, InputTable, RunSpec, WorkerPool, scan_stats


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with room for a first Spark run on a loaded machine (JVM start, cold planning)."""
    return settings.model_copy(update={"run_timeout_ms": 600_000})


PEOPLE_SQL = "SELECT city, count(*) AS n, sum(income) AS income FROM people GROUP BY city ORDER BY city"


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> tuple[InputTable, InputTable]:
    """A small input prepared both ways: (Arrow IPC, Parquet)."""
    folder = tmp_path_factory.mktemp("people")
    table = pa.table({"city": ["a", "a", "b", "b", "b"], "income": [10, 20, 30, 40, 50],
                      "age": [30, 40, 50, 60, 70]})
    pq.write_table(table, folder / "people.parquet")
    with pa.OSFile(str(folder / "people.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return InputTable("people", folder / "people.arrow"), InputTable("people", folder / "people.parquet")


def _query(sql: str = PEOPLE_SQL, **engine_sql: str) -> CheckedQuery:
    return CheckedQuery(sql=sql, engine_sql=engine_sql, columns_read={"people": ("city", "income")},
                        is_aggregate=True, release=None)


def test_duckdb_is_the_worker_pool_behind_the_interface_and_usage_comes_from_the_granted_inputs(
        worker_pool: WorkerPool, people: tuple[InputTable, InputTable], tmp_path: Path) -> None:
    def started() -> WorkerPool:
        worker_pool.start()
        return worker_pool

    engine = DuckDBEngine(started)
    ran = run_checked(engine, _query(), instance_key="people", inputs=[people], params={}, k=1, max_rows=10,
                      result_path=tmp_path / "r.parquet", dominance=Dominance())
    assert ran.outcome.status == "succeeded", ran.outcome.internal_detail
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == [
        {"city": "a", "n": 2, "income": 30}, {"city": "b", "n": 3, "income": 120}]
    assert ran.usage == scan_stats([people[1]], {"people": ["city", "income"]})
    assert ran.usage.rows == 5 and ran.usage.bytes > 0


def test_a_checked_query_without_sql_for_the_grants_engine_must_be_submitted_again() -> None:
    query = _query()
    assert query.sql_for(DUCKDB) == PEOPLE_SQL
    with pytest.raises(Refused) as err:
        query.sql_for(SPARK)
    assert err.value.code == "job_reanalysis_required"
    assert _query(spark="SELECT 1").sql_for(SPARK) == "SELECT 1"


def test_a_grant_names_its_engine_duckdb_by_default_and_an_unknown_engine_is_refused(api: Any) -> None:
    org = api.org("operator")
    assert api.grant(org)["engine"] == "duckdb"
    assert api.grant(org, engine="spark")["engine"] == "spark"
    problem = api.grant(org, engine="sprak", expect=400)
    assert problem["code"] == "invalid_engine" and "spark" in problem["detail"]


# --- Spark ----------------------------------------------------------------------------------------------------

@pytest.mark.xdist_group("spark")
def test_under_dist_loadgroup_the_spark_group_reaches_xdist_so_one_worker_runs_every_spark_test(
        request: pytest.FixtureRequest) -> None:
    # pytest-xdist 3.8 marks a group by appending "@group" to the node id; from pytest 9.2 that assignment is
    # silently lost (pytest-xdist#1386), every Spark test lands on any worker and each worker starts its own JVM.
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("only an xdist worker under --dist loadgroup groups tests")
    assert request.node.nodeid.endswith("@spark"), (
        f"xdist_group('spark') did not reach the scheduler ({request.node.nodeid}): pytest {pytest.__version__} "
        "with this pytest-xdist ignores xdist_group; requirements.lock pins a pytest that honours it")


def _spec(people: InputTable, sql: str, tmp_path: Path, **params: Any) -> RunSpec:
    return RunSpec(instance_key="people", inputs=(people,), sql=sql, params=params, k=1, max_rows=None,
                   result_path=tmp_path / "r.parquet")


@pytest.mark.slow
@pytest.mark.xdist_group("spark")
def test_spark_runs_a_checked_query_over_temp_views_with_bound_parameters(
        spark_engine: Any, people: tuple[InputTable, InputTable], tmp_path: Path) -> None:
    outcome = spark_engine.run(_spec(people[1], "SELECT city, sum(income) AS s FROM people WHERE age >= :min_age "
                                     "GROUP BY city ORDER BY city", tmp_path, min_age=40))
    assert outcome.status == "succeeded", outcome.internal_detail
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == [{"city": "a", "s": 20}, {"city": "b", "s": 120}]
    capped = spark_engine.run(dataclasses.replace(_spec(people[1], "SELECT city, age FROM people ORDER BY age",
                                                        tmp_path), max_rows=2))
    assert (capped.status, capped.result_rows, capped.truncated_rows) == ("succeeded", 2, 3)  # the grant's row cap


@pytest.mark.slow
@pytest.mark.xdist_group("spark")
@pytest.mark.parametrize(("sql", "status", "code"), [
    ("SET spark.sql.runSQLOnFiles=true", "refused", "statement_not_allowed"),
    ("SELECT 1; SELECT 2", "refused", "statement_not_allowed"),
    ("CREATE TEMPORARY VIEW x AS SELECT 1", "refused", "statement_not_allowed"),
    ("SELECT * FROM parquet.`/etc/hostname`", "failed", "binder_error"),
    ("SELECT * FROM text.`/etc/hostname`", "failed", "binder_error"),
    ("SELECT reflect('java.lang.System', 'getenv', 'HOME') AS h", "failed", "binder_error"),
    ("SELECT java_method('java.lang.System', 'getenv', 'HOME') AS h", "failed", "binder_error"),
    ("SELECT CAST(city AS INT) + 1 / 0 AS x FROM people", "failed", "out_of_range"),
])
def test_spark_refuses_or_fails_what_escapes_the_views_even_without_the_sql_guard(
        spark_engine: Any, people: tuple[InputTable, InputTable], tmp_path: Path, sql: str, status: str,
        code: str) -> None:
    outcome = spark_engine.run(_spec(people[1], sql, tmp_path))
    assert (outcome.status, outcome.error_code) == (status, code), outcome.internal_detail
    assert "/etc" not in (outcome.error_message or "") and "HOME" not in (outcome.error_message or "")


@pytest.mark.slow
@pytest.mark.xdist_group("spark")
def test_spark_does_not_substitute_variables_and_each_run_sees_only_its_own_views(
        spark_engine: Any, people: tuple[InputTable, InputTable], tmp_path: Path) -> None:
    outcome = spark_engine.run(_spec(people[1], "SELECT '${env:HOME}' AS v, count(*) AS n FROM people", tmp_path))
    assert outcome.status == "succeeded", outcome.internal_detail
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == [{"v": "${env:HOME}", "n": 5}]
    alone = RunSpec(instance_key="none", inputs=(), sql="SELECT count(*) AS n FROM people", params={}, k=1,
                    max_rows=None, result_path=tmp_path / "r2.parquet")
    outcome = spark_engine.run(alone)  # the previous run's view is gone with its session
    assert (outcome.status, outcome.error_code) == ("failed", "binder_error")


@pytest.mark.slow
@pytest.mark.xdist_group("spark")
@pytest.mark.parametrize(("sql", "code"), [("SELECT nope FROM people", "binder_error"),
                                           ("SELECT CAST(city AS INT) AS x FROM people", "conversion_error")])
def test_a_logging_configuration_applied_after_spark_started_leaves_failing_runs_their_code_and_logs_no_query(
        spark_engine: Any, people: tuple[InputTable, InputTable], tmp_path: Path, sql: str, code: str) -> None:
    # uvicorn.Config's default logging configuration (a test server in the same process) is such a configuration:
    # disable_existing_loggers=False re-enables every logger that exists, pyspark's query-context loggers included.
    from sandbox.engines.spark import QUERY_CONTEXT_LOGGERS

    spark_engine.start()  # the loggers exist before the configuration, as in a process whose Spark started first
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    loggers = [logging.getLogger(name) for name in QUERY_CONTEXT_LOGGERS]
    for logger in [logging.getLogger(), *loggers]:
        logger.addHandler(keep)
    try:
        outcome = spark_engine.run(_spec(people[1], sql, tmp_path))
    finally:
        for logger in [logging.getLogger(), *loggers]:
            logger.removeHandler(keep)
    assert (outcome.status, outcome.error_code) == ("failed", code), outcome.internal_detail
    assert [r for r in seen if r.name in QUERY_CONTEXT_LOGGERS] == []  # its message could quote a value ('a')


@pytest.mark.slow
@pytest.mark.xdist_group("spark")
def test_a_spark_run_past_its_time_limit_is_interrupted(
        spark_engine: Any, people: tuple[InputTable, InputTable], tmp_path: Path) -> None:
    from sandbox.engines.spark import SparkEngine

    short = SparkEngine(dataclasses.replace(spark_engine.limits, timeout_ms=1500), remote=None, master="local[2]",
                        work_dir=tmp_path / "spark")  # shares the running local Spark
    slow = "SELECT count(*) AS n FROM people a CROSS JOIN range(0, 3000000000) b WHERE b.id % 7 = a.age"
    outcome = short.run(_spec(people[1], slow, tmp_path))
    short.close()
    assert (outcome.status, outcome.error_code) == ("timed_out", "timed_out"), outcome.internal_detail
    assert spark_engine.run(_spec(people[1], PEOPLE_SQL, tmp_path)).status == "succeeded"


@pytest.mark.slow
@pytest.mark.xdist_group("spark")
def test_spark_connect_runs_a_checked_query_in_a_released_session_and_refuses_a_wrong_token(
        spark_connect_url: str, people: tuple[InputTable, InputTable], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox.engines.spark import SparkEngine

    pytest.importorskip("grpc")
    # pyspark switches the whole process to Connect mode with this variable; a server process uses one mode, this
    # test process goes back to local mode afterwards.
    monkeypatch.setenv("SPARK_CONNECT_MODE_ENABLED", "1")
    limits = EngineLimits(memory_limit_mb=1024, threads=1, timeout_ms=300_000, address_space_mb=6144)
    engine = SparkEngine(limits, remote=spark_connect_url, master="unused", work_dir=tmp_path / "c")
    try:
        outcome = engine.run(_spec(people[1], PEOPLE_SQL, tmp_path))
        assert outcome.status == "succeeded", outcome.internal_detail
        assert pq.read_table(tmp_path / "r.parquet").to_pylist() == [
            {"city": "a", "n": 2, "income": 30}, {"city": "b", "n": 3, "income": 120}]
        escape = engine.run(_spec(people[1], "SELECT reflect('java.lang.System', 'getenv', 'HOME') AS h", tmp_path))
        assert (escape.status, escape.error_code) == ("failed", "binder_error")
        alone = engine.run(RunSpec(instance_key="none", inputs=(), sql="SELECT count(*) AS n FROM people", params={},
                                   k=1, max_rows=None, result_path=tmp_path / "r2.parquet"))
        assert (alone.status, alone.error_code) == ("failed", "binder_error")  # each run had its own session
    finally:
        engine.close()
    wrong = SparkEngine(limits, remote=spark_connect_url.rsplit("=", 1)[0] + "=wrong", master="unused",
                        work_dir=tmp_path / "w")
    outcome = wrong.run(_spec(people[1], PEOPLE_SQL, tmp_path))
    wrong.close()
    assert outcome.status == "failed" and outcome.error_code in ("engine_error", "engine_unavailable")


def _same(a: Any, b: Any) -> bool:
    a = float(a) if isinstance(a, Decimal) else a
    b = float(b) if isinstance(b, Decimal) else b
    if isinstance(a, float) or isinstance(b, float):
        return a is b if a is None or b is None else math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b)


@pytest.mark.slow
@pytest.mark.xdist_group("spark")
def test_a_spark_grant_runs_the_health_cost_job_with_the_same_release_usage_and_audit_as_duckdb(
        api: Any, world: dict[str, Any], spark_engine: Any) -> None:  # noqa: F811
    until = (api.clock.now() + timedelta(days=365)).isoformat()
    on_spark = api.grant(world["op"], scope="scenario", datasets=["clinic_visits", "residents"],
                         scenario=SCENARIO, valid_until=until, engine="spark")["id"]
    runs = {}
    rows = {}
    for grant in (world["scenario"], on_spark):
        job = submit(api, world["key"], grant, HEALTH_COST)
        approve(api, job["id"], world["r1"], world["r2"])
        runs[grant] = run(api, world["key"], job["id"])
        assert runs[grant]["status"] == "succeeded", (runs[grant]["error_code"], runs[grant]["error_message"])
        rows[grant] = sorted(api.ok("GET", f"/v1/runs/{runs[grant]['id']}/result?format=json", world["key"]),
                             key=lambda r: str(r["district"]))
    duck, spark = runs[world["scenario"]], runs[on_spark]
    for field in ("rows_scanned", "bytes_scanned", "result_rows", "suppressed_cells", "suppression"):
        assert spark[field] == duck[field], field
    assert len(rows[on_spark]) == len(rows[world["scenario"]]) > 0
    for a, b in zip(rows[world["scenario"]], rows[on_spark], strict=True):
        assert a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a), (a, b)
