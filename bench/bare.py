"""The bare baseline for throughput: FastAPI + DuckDB running one fixed query over a Parquet file, nothing else.

`uvicorn bench.bare:app --workers N` with BENCH_BARE_PARQUET (the file) and BENCH_BARE_SQL (the query over the
view `t`). It answers the rows as JSON, as `POST /v1/jobs/{id}/runs` answers its run record. Each thread has its
own DuckDB cursor on one in-memory connection per process.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import duckdb
from fastapi import FastAPI

_con = duckdb.connect()
_con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{os.environ.get('BENCH_BARE_PARQUET', '')}')")
_SQL = os.environ.get("BENCH_BARE_SQL", "SELECT count(*) FROM t")
_local = threading.local()

app = FastAPI()


@app.post("/run")
def run(body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run the query; its rows."""
    cursor = getattr(_local, "cursor", None)
    if cursor is None:
        cursor = _local.cursor = _con.cursor()
    table = cursor.sql(_SQL).to_arrow_table()
    return table.to_pylist()
