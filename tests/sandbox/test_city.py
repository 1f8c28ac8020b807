"""The SYNTHETIC city data set: deterministic, typed as declared, and shaped for the suppression demo."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from policy.constraints import Constraint, Grade, MaskKind
from sandbox.catalogue.domains import DOMAINS
from sandbox.demo.city import (
    CITY_DATASETS,
    DISTRICTS,
    INCOME_BANDS,
    SMALL_DISTRICT,
    arrow_schema,
    city_arrow_tables,
    city_table_policies,
    generate_city,
)

TODAY = date(2026, 6, 1)
FIRST_DAY = TODAY - timedelta(days=365)
SPECS = {spec.id: spec for spec in CITY_DATASETS}
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    return city_arrow_tables(today=TODAY)


@pytest.fixture(scope="module")
def con(tables: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    for name, table in tables.items():
        connection.register(name, table)
    return connection


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_city(tmp_path_factory.mktemp("city"), today=TODAY)


def only_row(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    rows = con.sql(sql).fetchall()
    assert len(rows) == 1
    return tuple(rows[0])


def digests(paths: dict[str, Path]) -> dict[str, str]:
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in paths.items()}


def test_the_five_datasets_are_declared_with_the_expected_ids_domains_and_grades() -> None:
    assert {s.id: (s.domain, s.grade) for s in CITY_DATASETS} == {
        "residents": ("social_management", Grade.IMPORTANT),
        "clinic_visits": ("health_care", Grade.IMPORTANT),
        "enterprises": ("economy", Grade.GENERAL),
        "bus_ridership": ("transport", Grade.GENERAL),
        "weather": ("meteorology", Grade.GENERAL),
    }
    assert all(s.domain in DOMAINS for s in CITY_DATASETS)


def test_every_dataset_is_plainly_labelled_synthetic() -> None:
    for spec in CITY_DATASETS:
        assert "SYNTHETIC" in spec.title
        assert "SYNTHETIC" in spec.title_zh
        assert "SYNTHETIC" in spec.description


def test_entity_columns_exist_in_their_datasets_and_default_to_join() -> None:
    for spec in CITY_DATASETS:
        if spec.entity_column is None:
            continue
        entity = next(c for c in spec.columns if c.name == spec.entity_column)
        assert entity.constraint == Constraint.JOIN
    assert SPECS["bus_ridership"].entity_column is None
    assert SPECS["weather"].entity_column is None


def test_sensitive_and_masked_columns_are_declared_as_specified() -> None:
    residents = {c.name: c for c in SPECS["residents"].columns}
    assert residents["name"].constraint == Constraint.HIDDEN
    assert (residents["phone"].constraint, residents["phone"].mask) == (
        Constraint.AGGREGATE,
        MaskKind.PARTIAL,
    )
    assert (residents["birth_date"].constraint, residents["birth_date"].mask) == (
        Constraint.GROUP,
        MaskKind.GENERALIZE,
    )
    diagnosis = next(c for c in SPECS["clinic_visits"].columns if c.name == "diagnosis_group")
    assert diagnosis.tags == ("sensitive_personal",)
    assert diagnosis.constraint == Constraint.GROUP


def test_table_policies_mirror_the_specs() -> None:
    policies = city_table_policies()
    assert set(policies) == set(SPECS)
    for dataset_id, policy in policies.items():
        spec = SPECS[dataset_id]
        assert policy.name == policy.dataset_id == dataset_id
        assert (policy.grade, policy.entity_column) == (spec.grade, spec.entity_column)
        assert [(c.name, c.type, c.constraint, c.tags, c.mask) for c in policy.columns] == [
            (c.name, c.type, c.constraint, c.tags, c.mask) for c in spec.columns
        ]
    assert "name" not in [c.name for c in policies["residents"].visible_columns]


def test_tables_have_the_declared_columns_and_duckdb_types(
    tables: dict[str, pa.Table], con: duckdb.DuckDBPyConnection
) -> None:
    for spec in CITY_DATASETS:
        assert tables[spec.id].schema.equals(arrow_schema(spec))
        described = con.sql(f"DESCRIBE {spec.id}").fetchall()
        assert [(row[0], row[1]) for row in described] == [(c.name, c.type) for c in spec.columns]


def test_sizes_are_as_specified(tables: dict[str, pa.Table]) -> None:
    sizes = {name: table.num_rows for name, table in tables.items()}
    assert sizes == {
        "residents": 20_000,
        "clinic_visits": 60_000,
        "enterprises": 5_000,
        "bus_ridership": 40_000,
        "weather": len(DISTRICTS) * 365,
    }


def test_the_same_seed_writes_byte_identical_files_even_in_another_process(
    csv_files: dict[str, Path], tmp_path: Path
) -> None:
    script = (
        "import sys; from datetime import date; from pathlib import Path; "
        "from sandbox.demo.city import generate_city; "
        "generate_city(Path(sys.argv[1]), today=date(2026, 6, 1))"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=Path(__file__).parents[2])
    again = {name: tmp_path / path.name for name, path in csv_files.items()}
    assert digests(again) == digests(csv_files)


def test_a_different_seed_gives_different_data(tmp_path: Path, csv_files: dict[str, Path]) -> None:
    other = generate_city(tmp_path, today=TODAY, seed=7)
    assert all(a != b for a, b in zip(digests(other).values(), digests(csv_files).values(), strict=True))


def test_all_dated_rows_fall_in_the_365_days_before_today(con: duckdb.DuckDBPyConnection) -> None:
    for table, column in (("clinic_visits", "visit_date"), ("weather", "day")):
        low, high = only_row(con, f"SELECT min({column}), max({column}) FROM {table}")
        assert low >= FIRST_DAY and high < TODAY
    low_hour, high_hour = only_row(con, "SELECT min(hour), max(hour) FROM bus_ridership")
    assert low_hour >= datetime.combine(FIRST_DAY, datetime.min.time())
    assert high_hour < datetime.combine(TODAY, datetime.min.time())


def test_dates_move_with_today() -> None:
    later = TODAY + timedelta(days=40)
    weather = city_arrow_tables(today=later)["weather"]
    days = weather.column("day").to_pylist()
    assert min(days) == later - timedelta(days=365)
    assert max(days) == later - timedelta(days=1)


def test_weather_has_one_row_per_district_per_day(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.sql("SELECT district, count(*), count(DISTINCT day) FROM weather GROUP BY district").fetchall()
    assert sorted(rows) == sorted((d, 365, 365) for d in DISTRICTS)


def test_bus_rows_are_whole_hours_on_about_twenty_routes(con: duckdb.DuckDBPyConnection) -> None:
    routes, odd, dupes = only_row(
        con,
        "SELECT count(DISTINCT route), count(*) FILTER (WHERE date_trunc('hour', hour) <> hour), "
        "count(*) - count(DISTINCT (route, stop, hour)) FROM bus_ridership",
    )
    assert 15 <= routes <= 25
    assert (odd, dupes) == (0, 0)


def test_only_the_small_district_has_fewer_than_ten_clinic_visitors(con: duckdb.DuckDBPyConnection) -> None:
    visitors = dict(
        con.sql(
            "SELECT r.district, count(DISTINCT v.person_id) FROM clinic_visits v "
            "JOIN residents r USING (person_id) GROUP BY r.district"
        ).fetchall()
    )
    assert set(visitors) == set(DISTRICTS)
    assert 0 < visitors.pop(SMALL_DISTRICT) < 10
    assert min(visitors.values()) > 200


def test_the_small_district_has_about_fifteen_residents(con: duckdb.DuckDBPyConnection) -> None:
    (count,) = only_row(con, f"SELECT count(*) FROM residents WHERE district = '{SMALL_DISTRICT}'")
    assert 10 <= count <= 20


def test_every_clinic_visit_references_an_existing_resident(con: duckdb.DuckDBPyConnection) -> None:
    (orphans,) = only_row(con, "SELECT count(*) FROM clinic_visits v ANTI JOIN residents r USING (person_id)")
    assert orphans == 0


def test_identifiers_are_unique(con: duckdb.DuckDBPyConnection) -> None:
    keys = (("residents", "person_id"), ("clinic_visits", "visit_id"), ("enterprises", "credit_code"))
    for table, column in keys:
        total, distinct = only_row(con, f"SELECT count(*), count(DISTINCT {column}) FROM {table}")
        assert total == distinct


def test_resident_values_look_like_the_real_thing(tables: dict[str, pa.Table]) -> None:
    residents = tables["residents"]
    assert all(re.fullmatch(r"1[358]\d{9}", p) for p in residents.column("phone").to_pylist())
    assert all(re.fullmatch(r"[\u4e00-\u9fff]{2,4}", n) for n in residents.column("name").to_pylist())
    births = residents.column("birth_date").to_pylist()
    assert date(1940, 1, 1) <= min(births) and max(births) <= date(2008, 12, 31)
    assert set(residents.column("income_band").to_pylist()) == set(INCOME_BANDS)
    assert set(residents.column("district").to_pylist()) == set(DISTRICTS)


def test_credit_codes_have_eighteen_characters_and_a_valid_check(tables: dict[str, pa.Table]) -> None:
    weights = [pow(3, i, 31) for i in range(17)] + [1]
    for code in tables["enterprises"].column("credit_code").to_pylist():
        assert len(code) == 18 and set(code) <= set(USCC_CHARS)
        assert sum(USCC_CHARS.index(ch) * w for ch, w in zip(code, weights, strict=True)) % 31 == 0


def test_csv_files_round_trip_through_duckdb_with_the_declared_types(
    csv_files: dict[str, Path], tables: dict[str, pa.Table]
) -> None:
    for spec in CITY_DATASETS:
        assert csv_files[spec.id].suffix == ".csv"
        rel = duckdb.read_csv(
            str(csv_files[spec.id]), header=True, dtype={c.name: c.type for c in spec.columns}
        )
        assert [str(t) for t in rel.types] == [c.type for c in spec.columns]
        assert rel.to_arrow_table().cast(arrow_schema(spec)).equals(tables[spec.id])


def test_parquet_output_holds_the_same_tables(tmp_path: Path, tables: dict[str, pa.Table]) -> None:
    paths = generate_city(tmp_path, today=TODAY, fmt="parquet")
    for dataset_id, path in paths.items():
        assert path.suffix == ".parquet"
        assert pq.read_table(path).equals(tables[dataset_id])


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        generate_city(tmp_path, today=TODAY, fmt="xlsx")
