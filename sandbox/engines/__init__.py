"""Engines behind the sandbox: DuckDB (default, the locked worker pool) and Spark (optional extra sluice[spark]).

See docs/engines.md. Every engine takes a policy-checked query (`CheckedQuery`) and gives the same output control,
k threshold, release audit and row caps; pyspark is imported only when a Spark engine starts.
"""

from sandbox.engines.base import CheckedQuery, Engine, EngineRun, run_checked
from sandbox.engines.duckdb import DuckDBEngine

__all__ = ["CheckedQuery", "DuckDBEngine", "Engine", "EngineRun", "run_checked"]
