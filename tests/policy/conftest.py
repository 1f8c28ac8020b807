"""Data for running accepted SQL-analysis fixtures for real: the synthetic city and TPC-H SF 0.01."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from casebook import tpch_policy_document, tpch_table_policies

from policy.constraints import TablePolicy
from sandbox.demo.city import city_arrow_tables, city_table_policies

CITY_TODAY = date(2026, 6, 1)
TPCH_TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier")


def _visible(table: pa.Table, policy: TablePolicy) -> pa.Table:
    """The dataset as the sandbox exposes it: hidden columns do not exist."""
    return table.select([c.name for c in policy.visible_columns])


def _connect(tables: dict[str, pa.Table], policies: dict[str, TablePolicy]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name, policy in policies.items():
        con.register(name, _visible(tables[name], policy))
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
def connections(tpch_dir: Path) -> Iterator[dict[str, duckdb.DuckDBPyConnection]]:
    """One in-memory DuckDB per schema, with every dataset registered from Arrow (visible columns only)."""
    tpch = {t: pq.read_table(tpch_dir / f"{t}.parquet") for t in TPCH_TABLES}
    tpch = {t: table.cast(pa.schema([f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f
                                     for f in table.schema])) for t, table in tpch.items()}
    cons = {
        "city": _connect(city_arrow_tables(today=CITY_TODAY), city_table_policies()),
        "tpch": _connect(tpch, tpch_table_policies()),
    }
    yield cons
    for con in cons.values():
        con.close()
