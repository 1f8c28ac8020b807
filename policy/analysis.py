"""Static SQL policy analysis: the public entry point.

`analyse` proves, fail-closed, that a submitted query respects every column's constraint under a grant, and
returns a plain, serializable `Analysis`: the verdict, the findings (stable codes with positions), the SQL that
will actually run (regenerated from the checked tree and rewritten for the group threshold), and what the
query reads. See docs/governed-queries.md for the rules.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.schema import ensure_schema

from policy import sql_findings as F
from policy.constraints import TablePolicy
from policy.output import SUPPRESSED_MARKER
from policy.sql_engines import DEFAULT_ENGINE, UnsupportedOnEngine, engine_sql
from policy.sql_findings import Finding, Positions
from policy.sql_joined import plan_joined, rewrite_joined
from policy.sql_lineage import Lineage, TooComplex
from policy.sql_normalize import inline_aggregated_source
from policy.sql_parse import declared_parameter_types, parse_query
from policy.sql_release import ReleasePlan
from policy.sql_resolve import Catalog, resolve
from policy.sql_rewrite import UnsupportedShape, rewrite_threshold
from policy.sql_rules import Rules
from policy.sql_scalar import rewrite_with_scalars
from policy.sql_setop import plan_set_operation, rewrite_set_operation
from policy.sql_shell import order_spec, sort_keys
from policy.sql_threshold import plan_threshold
from policy.sql_type_rules import numeric_aggregates_over_text

__all__ = ["Analysis", "Finding", "Verdict", "analyse"]

DEFAULT_MAX_SQL_LENGTH = 100_000


class Verdict(StrEnum):
    """Whether the query may run."""

    ACCEPTED = "accepted"
    REFUSED = "refused"


@dataclass(frozen=True)
class Analysis:
    """The frozen result of analysing one query under one grant."""

    verdict: Verdict
    findings: tuple[Finding, ...]
    sql: str | None
    tables_read: tuple[str, ...] = ()
    columns_read: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    joins_datasets: bool = False
    is_aggregate: bool = False
    output_columns: tuple[str, ...] = ()
    entity_tables: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()
    release: ReleasePlan | None = None
    engine_sql: Mapping[str, str] = field(default_factory=dict)
    """The checked query in each non-default engine's dialect (policy.sql_engines), transpiled at approval."""
    timings: tuple[tuple[str, int, int], ...] = field(default=(), compare=False)
    """(phase, start, end) in epoch nanoseconds: `parse` (parse, resolve, type) then `analyse` (rules, rewrite);
    for tracing only, never frozen."""

    @property
    def accepted(self) -> bool:
        """Whether the verdict is `accepted`."""
        return self.verdict == Verdict.ACCEPTED

    @property
    def codes(self) -> tuple[str, ...]:
        """The finding codes, in order."""
        return tuple(f.code for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (what is frozen at approval)."""
        return {
            "verdict": self.verdict.value,
            "findings": [f.to_dict() for f in self.findings],
            "sql": self.sql,
            "tables_read": list(self.tables_read),
            "columns_read": {t: list(c) for t, c in self.columns_read.items()},
            "joins_datasets": self.joins_datasets,
            "is_aggregate": self.is_aggregate,
            "output_columns": list(self.output_columns),
            "entity_tables": list(self.entity_tables),
            "parameters": list(self.parameters),
            "release": self.release.to_dict() if self.release is not None else None,
            "engine_sql": dict(self.engine_sql),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Analysis:
        """An Analysis from `to_dict` output."""
        return cls(
            verdict=Verdict(data["verdict"]),
            findings=tuple(Finding.from_dict(f) for f in data.get("findings", ())),
            sql=data.get("sql"),
            tables_read=tuple(data.get("tables_read", ())),
            columns_read={str(t): tuple(c) for t, c in dict(data.get("columns_read", {})).items()},
            joins_datasets=bool(data.get("joins_datasets", False)),
            is_aggregate=bool(data.get("is_aggregate", False)),
            output_columns=tuple(data.get("output_columns", ())),
            entity_tables=tuple(data.get("entity_tables", ())),
            parameters=tuple(data.get("parameters", ())),
            release=ReleasePlan.from_dict(data["release"]) if data.get("release") else None,
            engine_sql={str(k): str(v) for k, v in dict(data.get("engine_sql") or {}).items()},
        )


def analyse(sql: str, tables: Mapping[str, TablePolicy], *, parameters: Mapping[str, str] | None = None,
            max_sql_length: int = DEFAULT_MAX_SQL_LENGTH, engine: str = DEFAULT_ENGINE) -> Analysis:
    """Analyse `sql` under a grant's tables (already tightened); refuse whatever cannot be proven safe.

    For an `engine` other than DuckDB, the accepted query is also transpiled to its dialect (or refused).
    """
    marks = [time.time_ns()]
    try:
        result = _analyse(sql, tables, parameters, max_sql_length, marks)
        if result.sql is not None and engine != DEFAULT_ENGINE:
            result = _for_engine(result, engine)
    except RecursionError:
        result = _refused([Finding(F.QUERY_TOO_DEEP, "query is nested too deeply to analyse")])
    except TooComplex as err:
        result = _refused([Finding(F.QUERY_TOO_COMPLEX, f"the query is too complex to analyse ({err}); simplify "
                                                        "its expressions")])
    except Exception as err:  # fail closed: an analysis bug must never accept a query
        result = _refused([Finding(F.INTERNAL_ANALYSIS_ERROR,
                                   f"the analyser could not handle this query ({type(err).__name__}); it is refused")])
    marks.append(time.time_ns())
    phases = (("parse", marks[0], marks[1]), ("analyse", marks[1], marks[2])) if len(marks) == 3 \
        else (("parse", marks[0], marks[-1]),)
    return dataclasses.replace(result, timings=phases)


def _refused(findings: list[Finding], **facts: Any) -> Analysis:
    return Analysis(verdict=Verdict.REFUSED, findings=tuple(findings), sql=None, **facts)


@dataclass
class _Prepared:
    """A query parsed, resolved, typed and traced (or the findings that stopped it)."""

    findings: list[Finding]
    parameters: tuple[str, ...]
    positions: Positions
    tree: exp.Query | None = None
    lineage: Lineage | None = None


def _prepare(sql: str, tables: Mapping[str, TablePolicy], parameters: Mapping[str, str] | None,
             max_sql_length: int) -> _Prepared:
    positions = Positions(sql)
    catalog = Catalog.of(tables)
    parsed = parse_query(sql, positions, max_sql_length=max_sql_length)
    param_types, findings = declared_parameter_types(parameters, positions)
    findings = parsed.findings + findings
    used = tuple(sorted(parsed.parameters))
    for name in used:
        if name not in param_types and not any(f.code == F.INVALID_PARAMETER_TYPE for f in findings):
            findings.append(Finding(F.UNKNOWN_PARAMETER, f"parameter ${name} is not declared"))
    if parsed.tree is None or findings:
        return _Prepared(findings, used, positions)
    schema = ensure_schema(catalog.schema(), dialect="duckdb")
    tree, findings = resolve(parsed.tree, catalog, positions, schema)
    if tree is None:
        return _Prepared(findings, used, positions)
    tree = inline_aggregated_source(tree, frozenset(
        column.lower() for column in (catalog.entity_column(t) for t in catalog.tables) if column))
    _type_parameters(tree, param_types)
    annotate_types(tree, schema=schema, dialect="duckdb")
    return _Prepared([], used, positions, tree, Lineage(tree, catalog, positions))


def trace(sql: str, tables: Mapping[str, TablePolicy], *,
          parameters: Mapping[str, str] | None = None) -> Lineage | None:
    """The lineage of a query (None when it does not parse or resolve); for tests and debugging."""
    return _prepare(sql, tables, parameters, DEFAULT_MAX_SQL_LENGTH).lineage


def _analyse(sql: str, tables: Mapping[str, TablePolicy], parameters: Mapping[str, str] | None,
             max_sql_length: int, marks: list[int]) -> Analysis:
    prepared = _prepare(sql, tables, parameters, max_sql_length)
    marks.append(time.time_ns())
    lineage, tree = prepared.lineage, prepared.tree
    if lineage is None or tree is None:
        return _refused(prepared.findings, parameters=prepared.parameters)
    output_scopes = lineage.output_scopes()
    is_aggregate = bool(output_scopes) and all(s.is_aggregate for s in output_scopes)
    joined = plan_joined(lineage, prepared.positions)  # aggregations joined at the top: rows of aggregates
    facts = _facts(lineage, lineage.catalog, is_aggregate or joined is not None, prepared.parameters)
    findings = list(lineage.problems)
    findings += Rules(lineage, prepared.positions).check(row_level=not is_aggregate)
    findings += numeric_aggregates_over_text(lineage)
    if not is_aggregate and joined is None and facts["entity_tables"]:
        findings.append(Finding(
            F.ROW_LEVEL_QUERY_ON_ENTITY_DATA,
            f"{', '.join(facts['entity_tables'])} hold(s) data about individual entities; a row-level query "
            "would show groups of one, so only aggregate queries may read them"))
    for name in facts["output_columns"]:
        if name.lower() == SUPPRESSED_MARKER:
            findings.append(Finding(F.RESERVED_IDENTIFIER, f"the output column name {SUPPRESSED_MARKER} is reserved "
                                                           "for the suppression marker; rename the column"))
    plan = joined or plan_set_operation(lineage, prepared.positions) or plan_threshold(lineage, prepared.positions)
    findings += plan.findings
    if findings:
        return _refused(findings, **facts)
    order = order_spec(lineage.root.scope.expression)  # before the rewrite changes the top-level query
    try:
        release: ReleasePlan | None
        if plan.joined:
            release = rewrite_joined(lineage, plan)
        elif plan.set_kind:
            release = rewrite_set_operation(lineage, plan)
        elif plan.scalars:
            release = rewrite_with_scalars(lineage, plan)
        else:
            release = rewrite_threshold(lineage, plan)
    except UnsupportedShape as err:
        return _refused([Finding(F.UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD, str(err))], **facts)
    if release is not None:
        release = dataclasses.replace(release, sort=sort_keys(order, release))
    query = plan.rewritten if plan.rewritten is not None else tree
    return Analysis(verdict=Verdict.ACCEPTED, findings=(), sql=query.sql(dialect="duckdb", comments=False),
                    release=release, **facts)


def _for_engine(result: Analysis, engine: str) -> Analysis:
    """An accepted analysis with its SQL transpiled for `engine`, or refused when that has no exact form."""
    assert result.sql is not None
    try:
        return dataclasses.replace(result, engine_sql={engine: engine_sql(result.sql, engine)})
    except UnsupportedOnEngine as err:
        facts = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
                 if f.name not in ("verdict", "findings", "sql", "release", "engine_sql", "timings")}
        return _refused([Finding(F.UNSUPPORTED_ON_ENGINE, err.message)], **facts)


def _type_parameters(tree: exp.Expr, types: Mapping[str, exp.DataType]) -> None:
    """Bind every $name to its declared type: CAST($name AS type)."""
    for placeholder in list(tree.find_all(exp.Placeholder)):
        dtype = types[placeholder.name.lower()]
        placeholder.replace(exp.Cast(this=placeholder.copy(), to=dtype.copy()))


def _facts(lineage: Lineage, catalog: Catalog, is_aggregate: bool, parameters: tuple[str, ...]) -> dict[str, Any]:
    """What the query reads and returns, for auto-approval, metering and audit."""
    tables: set[str] = set()
    for facts in lineage.scopes:
        for source in facts.scope.sources.values():
            if isinstance(source, exp.Table) and source.name.lower() in catalog.tables:
                tables.add(source.name.lower())
    columns: dict[str, set[str]] = {t: set() for t in tables}
    for use in lineage.uses:
        columns.setdefault(use.table, set()).add(use.column)
    names = {t: catalog.name(t) for t in columns}
    return {
        "tables_read": tuple(sorted(names[t] for t in tables)),
        "columns_read": {names[t]: tuple(sorted(c)) for t, c in sorted(columns.items())},
        "joins_datasets": len(tables) >= 2,
        "is_aggregate": is_aggregate,
        "output_columns": tuple(d.name for d in lineage.root.outputs),
        "entity_tables": tuple(sorted(names[t] for t in tables if catalog.entity_column(t))),
        "parameters": parameters,
    }
