"""TPC-H data (tpchgen-cli), its grant policy and the policy-accepted queries."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "policy" / "fixtures" / "tpch"
TABLES = ("customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier")


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    sql: str


def generate(scale: float, out: Path) -> Path:
    """TPC-H at `scale` as one Parquet file per table (cached in `out`)."""
    out.mkdir(parents=True, exist_ok=True)
    if not all((out / f"{t}.parquet").exists() for t in TABLES):
        tool = Path(sys.executable).parent / "tpchgen-cli"
        subprocess.run([str(tool), "parquet", "-s", str(scale), "--output-dir", str(out), "--overwrite",
                        "--quiet"], check=True)
    return out


def policy() -> dict[str, Any]:
    """Grades, entity columns and constraints of the TPC-H datasets (shared with the policy fixtures)."""
    doc: dict[str, Any] = json.loads((FIXTURES / "policy.json").read_text("utf-8"))
    return doc


def accepted_queries() -> list[Query]:
    """The TPC-H queries the SQL analysis accepts, in fixture order."""
    data = tomllib.loads((FIXTURES / "queries.toml").read_text("utf-8"))
    return [Query(c["name"], c["title"], c["sql"]) for c in data["case"] if c["verdict"] == "accepted"]
