"""The engine interface: one policy-checked query on a grant's prepared inputs, to a controlled, metered outcome.

An engine takes a `CheckedQuery` (what approval froze: the SQL regenerated from the checked sqlglot tree, in its
own dialect), returns the Arrow result through the same output control as every engine (`control_output`: k
threshold, dominance, row cap, and the entity sets of each cell for the release audit), and the run is metered
from the granted inputs it read, not from what the engine reports, so a bill never depends on the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from policy.output import Dominance
from policy.sql_engines import DUCKDB
from sandbox.errors import Refused
from sandbox.executor.scan import scan_stats
from sandbox.executor.types import InputTable, RunOutcome, RunSpec, ScanStats


class Engine(Protocol):
    """A SQL engine behind the sandbox. `run` never raises for a query's failure: it returns a failed outcome."""

    name: str
    input_format: Literal["arrow", "parquet"]  # which prepared copy of an input the engine reads

    def start(self) -> None:
        """Be ready to take runs (start workers or a session); idempotent."""

    def run(self, spec: RunSpec) -> RunOutcome:
        """Execute `spec` (its SQL in this engine's dialect), control the output, and report the outcome."""

    def close(self) -> None:
        """Release the engine's processes and sessions."""


@dataclass(frozen=True)
class CheckedQuery:
    """A query as approval froze it: its SQL per engine (regenerated from the checked tree), reads and release."""

    sql: str
    engine_sql: Mapping[str, str]
    columns_read: Mapping[str, Sequence[str]]
    is_aggregate: bool
    release: Mapping[str, Any] | None

    @classmethod
    def of_analysis(cls, frozen_sql: str, analysis: Mapping[str, Any]) -> CheckedQuery:
        """The checked query of an approved job: its frozen SQL and the analysis frozen with it."""
        return cls(sql=frozen_sql, engine_sql=dict(analysis.get("engine_sql") or {}),
                   columns_read={t: tuple(c) for t, c in (analysis.get("columns_read") or {}).items()},
                   is_aggregate=bool(analysis.get("is_aggregate")), release=analysis.get("release"))

    def sql_for(self, engine: str) -> str:
        """The SQL `engine` runs; a job approved before its grant's engine was known must be submitted again."""
        if engine == DUCKDB:
            return self.sql
        text = self.engine_sql.get(engine)
        if not text:
            raise Refused(f"this job was not analysed for the {engine} engine; submit it again",
                          code="job_reanalysis_required", engine=engine)
        return text


@dataclass(frozen=True)
class EngineRun:
    """An engine's outcome and the usage it is charged for."""

    outcome: RunOutcome
    usage: ScanStats


def run_checked(engine: Engine, query: CheckedQuery, *, instance_key: str,
                inputs: Sequence[tuple[InputTable, InputTable]], params: Mapping[str, Any], k: int,
                max_rows: int | None, result_path: Path,
                dominance: Dominance) -> EngineRun:
    """Run `query` on `engine` over prepared inputs given as (Arrow IPC, Parquet) pairs, and meter it.

    Usage is rows and uncompressed bytes of the columns read, from the Parquet metadata of the granted inputs:
    deterministic, and the same whichever engine ran the query.
    """
    chosen = tuple(pair[0] if engine.input_format == "arrow" else pair[1] for pair in inputs)
    spec = RunSpec(instance_key=instance_key, inputs=chosen, sql=query.sql_for(engine.name), params=params, k=k,
                   max_rows=None if query.is_aggregate else max_rows, result_path=result_path,
                   release=query.release, dominance=dominance)
    outcome = engine.run(spec)
    usage = scan_stats([pair[1] for pair in inputs], {t: list(c) for t, c in query.columns_read.items()})
    return EngineRun(outcome, usage)
