"""Data for running accepted SQL-analysis fixtures for real: the synthetic city and TPC-H SF 0.01."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from casebook import tpch_policy_document, tpch_table_policies

from policy.constraints import TablePolicy
from policy.sql_passthrough import EIDX
from sandbox.demo.city import city_arrow_tables, city_table_policies

CITY_TODAY = date(2026, 6, 1)
TPCH_TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier")


def _visible(table: pa.Table, policy: TablePolicy) -> pa.Table:
    """The dataset as the sandbox exposes it: hidden columns do not exist."""
    return table.select([c.name for c in policy.visible_columns])


def entity_indexes(tables: dict[str, pa.Table], policies: dict[str, TablePolicy]) -> dict[str, pa.Array]:
    """A dense index per population over the raw entity ids of its datasets (1..n, sorted; 0 is no entity)."""
    ids: dict[str, list[pa.ChunkedArray]] = {}
    for name, policy in policies.items():
        if policy.entity_column is not None and policy.entity_population is not None:
            ids.setdefault(policy.entity_population, []).append(
                tables[name].column(policy.entity_column).cast(pa.string()))
    return {population: pc.unique(pa.chunked_array([c for col in cols for c in col.chunks])).drop_null().sort()
            for population, cols in ids.items()}


def with_entity_index(table: pa.Table, policy: TablePolicy, index: dict[str, pa.Array]) -> pa.Table:
    """The input as prepared for a run: the hidden __sluice_eidx column holds each row's dense entity index."""
    if policy.entity_column is None or policy.entity_population is None:
        return table
    raw = table.column(policy.entity_column).cast(pa.string())
    position = pc.index_in(raw, value_set=index[policy.entity_population])
    return table.append_column(EIDX, pc.add(position, 1).cast(pa.uint32()).fill_null(0))


def prepared_tables(tables: dict[str, pa.Table], policies: dict[str, TablePolicy]) -> dict[str, pa.Table]:
    """Every dataset as a run sees it: visible columns only, plus the entity index column."""
    index = entity_indexes(tables, policies)
    return {name: with_entity_index(_visible(tables[name], policy), policy, index) for name, policy in policies.items()}


def _connect(tables: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    return con


@pytest.fixture(scope="session")
def tpch_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TPC-H SF 0.01 as Parquet, generated once and kept in the pytest cache (or a temp dir without one)."""
    scale = tpch_policy_document()["scale_factor"]
    cache = getattr(request.config, "cache", None)
    out = Path(cache.mkdir(f"tpch-sf{scale}")) if cache is not None else tmp_path_factory.mktemp("tpch")
    if not all((out / f"{t}.parquet").exists() for t in TPCH_TABLES):
        generator = Path(sys.executable).parent / "tpchgen-cli"
        subprocess.run([str(generator), "parquet", "-s", str(scale), "--output-dir", str(out), "--overwrite",
                        "--quiet"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def schema_tables(tpch_dir: Path) -> dict[str, dict[str, pa.Table]]:
    """Per schema, every dataset as a run sees it (prepared_tables), from Arrow."""
    tpch = {t: pq.read_table(tpch_dir / f"{t}.parquet") for t in TPCH_TABLES}
    tpch = {t: table.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f
                                     for f in table.schema])) for t, table in tpch.items()}
    return {"city": prepared_tables(city_arrow_tables(today=CITY_TODAY), city_table_policies()),
            "tpch": prepared_tables(tpch, tpch_table_policies()),
            "tpch_careful": prepared_tables(tpch, tpch_table_policies("tpch_careful"))}


@pytest.fixture(scope="session")
def connections(schema_tables: dict[str, dict[str, pa.Table]]) -> Iterator[dict[str, duckdb.DuckDBPyConnection]]:
    """One in-memory DuckDB per schema, with every dataset registered from Arrow (visible columns only)."""
    cons = {schema: _connect(tables) for schema, tables in schema_tables.items()}
    yield cons
    for con in cons.values():
        con.close()
