"""The bare comparison endpoint of the product-call benchmark: FastAPI + DuckDB, no authentication, no audit, no
metering, no output control; the same query over the same Parquet file (BENCH_BARE_PARQUET)."""

from __future__ import annotations

import os
import threading
from typing import Any

import duckdb
from fastapi import FastAPI
from pydantic import BaseModel

SQL = "SELECT industry, count(*) AS firms, sum(employees) AS employees FROM firms WHERE district = $district " \
      "GROUP BY industry"


class Body(BaseModel):
    params: dict[str, Any]


def create_app() -> FastAPI:
    """One DuckDB database with a view over the Parquet file; a cursor per thread."""
    con = duckdb.connect()
    con.execute(f"CREATE VIEW firms AS SELECT * FROM read_parquet('{os.environ['BENCH_BARE_PARQUET']}')")
    local = threading.local()
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/invoke", status_code=201)
    def invoke(body: Body) -> dict[str, Any]:
        cursor = getattr(local, "cursor", None)
        if cursor is None:
            cursor = local.cursor = con.cursor()
        table = cursor.execute(SQL, {"district": str(body.params["district"])}).to_arrow_table()
        return {"columns": table.column_names, "rows": table.to_pylist()}

    return app
