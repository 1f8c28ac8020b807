"""Fixture cases for SQL analysis: loading the TOML casebooks and the schemas they run against.

A casebook is a TOML file under tests/policy/fixtures/<schema>/ with a top-level `schema = "city" | "tpch"`
and one `[[case]]` table per case:

    title     = "..."            # the test id: reads like a spec
    sql       = '''...'''
    verdict   = "accepted" | "refused"
    codes     = ["..."]          # refused: the finding codes expected, as a multiset (repeat a code it occurs twice)
    params    = { name = ["TYPE", value] }   # optional typed parameters
    min_rows  = 1                # accepted: rows that must survive output control (default 1)
    check_sql = '''...'''        # accepted over entity data: independent count of rows (groups) dropped below k
    check_cells_sql = '''...'''  # optional: independent count of cells of kept rows suppressed for k
    dominance_suppressed = 0     # cells suppressed by the dominance rule
    audit_suppressed = 0         # cells the release audit suppresses over a fresh ledger (each named in a test)
    name      = "q5"             # optional short name (TPC-H query number)

The TPC-H grant lives in fixtures/tpch/policy.json, the careful TPC-H grant (prices aggregate-only) in
fixtures/tpch_careful/policy.json; the city grant is sandbox.demo.city.city_table_policies(). The `masked` grant
(fixtures/masked/policy.json, refused cases only, no data) has columns whose masks change their type; a column
is `[name, catalogue type, constraint]` with an optional fourth element, its mask.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa

from policy.constraints import ColumnPolicy, Constraint, Grade, MaskKind, TablePolicy
from policy.output import Reason
from sandbox.demo.city import city_table_policies

FIXTURES = Path(__file__).parent / "fixtures"
TPCH_POLICY = FIXTURES / "tpch" / "policy.json"
TPCH_QUERIES = FIXTURES / "tpch" / "queries.toml"
TPCH_CAREFUL_POLICY = FIXTURES / "tpch_careful" / "policy.json"
MASKED_POLICY = FIXTURES / "masked" / "policy.json"
TPCH_SCHEMAS = {"tpch": TPCH_POLICY, "tpch_careful": TPCH_CAREFUL_POLICY}
POLICY_DOCUMENTS = {**TPCH_SCHEMAS, "masked": MASKED_POLICY}
CITY_K = 10


@dataclass(frozen=True)
class Case:
    """One fixture: a query, the grant it runs under, and what analysis must decide."""

    schema: str
    title: str
    sql: str
    verdict: str
    codes: tuple[str, ...] = ()
    params: dict[str, tuple[str, Any]] = field(default_factory=dict)
    min_rows: int = 1
    check_sql: str | None = None
    check_cells_sql: str | None = None
    dominance_suppressed: int = 0
    audit_suppressed: int = 0
    name: str = ""
    source: str = ""

    @property
    def parameter_types(self) -> dict[str, str]:
        """name -> declared DuckDB type."""
        return {name: spec[0] for name, spec in self.params.items()}

    @property
    def parameter_values(self) -> dict[str, Any]:
        """name -> value bound at run time."""
        return {name: spec[1] for name, spec in self.params.items()}


CASE_KEYS = frozenset(f.name for f in fields(Case)) - {"schema", "source"}  # what a [[case]] table may set


def load_cases(root: Path = FIXTURES) -> list[Case]:
    """Every case of every casebook under `root`, in file order."""
    cases: list[Case] = []
    for path in sorted(root.rglob("*.toml")):
        book = tomllib.loads(path.read_text(encoding="utf-8"))
        schema = book["schema"]
        for raw in book.get("case", []):
            unknown = set(raw) - CASE_KEYS
            if unknown:  # a misspelt key would silently drop an expectation
                raise ValueError(f"{path.name}: case {raw.get('title')!r} has unknown keys {sorted(unknown)}")
            cases.append(Case(
                schema=schema,
                title=raw["title"],
                sql=raw["sql"],
                verdict=raw["verdict"],
                codes=tuple(raw.get("codes", [])),
                params={k: (v[0], v[1]) for k, v in raw.get("params", {}).items()},
                min_rows=int(raw.get("min_rows", 1)),
                check_sql=raw.get("check_sql"),
                check_cells_sql=raw.get("check_cells_sql"),
                dominance_suppressed=int(raw.get("dominance_suppressed", 0)),
                audit_suppressed=int(raw.get("audit_suppressed", 0)),
                name=raw.get("name", ""),
                source=str(path.relative_to(root)),
            ))
    return cases


def tpch_policy_document(schema: str = "tpch") -> dict[str, Any]:
    """The raw TPC-H grant document (policy.json; `tpch_careful`: the careful grant, prices aggregate-only)."""
    document: dict[str, Any] = json.loads(POLICY_DOCUMENTS[schema].read_text(encoding="utf-8"))
    return document


def tpch_table_policies(schema: str = "tpch") -> dict[str, TablePolicy]:
    """A policy.json grant (TPC-H, or `masked`) as TablePolicies, by table name; columns keep their catalogue
    type and mask, and ColumnPolicy types them after the mask as the sandbox does."""
    document = tpch_policy_document(schema)
    prefix = "tpch" if schema in TPCH_SCHEMAS else schema
    policies = {}
    for name, spec in document["tables"].items():
        columns = tuple(ColumnPolicy(c[0], c[1], Constraint(c[2]), mask=MaskKind(c[3]) if len(c) > 3 else None)
                        for c in spec["columns"])
        policies[name] = TablePolicy(name=name, columns=columns, entity_column=spec["entity_column"],
                                     grade=Grade(spec["grade"]), dataset_id=f"{prefix}.{name}",
                                     population=f"{prefix}_customer" if spec["entity_column"] else None)
    return policies


def tpch_k() -> int:
    """The group threshold used for TPC-H runs."""
    return int(tpch_policy_document()["k"])


def policies_for(schema: str) -> dict[str, TablePolicy]:
    """The grant a casebook's schema names."""
    if schema == "city":
        return city_table_policies()
    if schema in POLICY_DOCUMENTS:
        return tpch_table_policies(schema)
    raise ValueError(f"unknown schema {schema!r}")


def k_for(schema: str) -> int:
    """The group threshold for a schema."""
    return CITY_K if schema == "city" else int(tpch_policy_document(schema)["k"])


def governed_run(sql: str, con: Any) -> tuple[pa.Table, dict[Any, Reason], dict[str, int]]:
    """Run a city query through analysis, DuckDB, output control at k, a fresh release audit and `finish`.

    Returns the released table, the cells the audit suppressed, and the counts output control suppressed.
    """
    from policy.analysis import analyse
    from policy.output import apply_output_control, finish
    from policy.release_audit import AuditCell, AuditPart, PopulationAudit
    from policy.release_stages import staged_audit

    result = analyse(sql, policies_for("city"))
    assert result.sql is not None and result.release is not None, result.findings
    controlled = apply_output_control(con.sql(result.sql).to_arrow_table(), k=CITY_K, max_rows=None,
                                      plan=result.release)
    cells = [AuditCell((c.row, c.column), tuple(AuditPart(p.population, p.bitmap(), p.measures) for p in c.parts))
             for c in controlled.cells]
    later = dict(staged_audit({p: PopulationAudit(p, CITY_K) for p in result.release.populations}, controlled.table,
                              controlled.marks, cells, result.release).suppressed)
    return finish(controlled.table, controlled.marks, later, result.release), later, dict(controlled.suppressed)
