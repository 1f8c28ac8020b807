"""Name resolution: every table is a granted dataset or a CTE; every column is qualified against visible columns."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.errors import OptimizeError, SchemaError
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import Schema

from policy import sql_findings as F
from policy.constraints import ColumnPolicy, Constraint, TablePolicy
from policy.sql_findings import Finding, Positions
from policy.sql_parse import check_nodes

_POSITION = re.compile(r"Line: (\d+), Col: (\d+)")
_QUOTED = re.compile(r"'([^']*)'")


@dataclass(frozen=True)
class Catalog:
    """The grant's datasets as analysis sees them, keyed by lower-case SQL name."""

    tables: Mapping[str, TablePolicy]

    @classmethod
    def of(cls, tables: Mapping[str, TablePolicy]) -> Catalog:
        """A catalogue from the mapping `analyse` receives (keys are ignored; TablePolicy.name is the name)."""
        return cls({policy.name.lower(): policy for policy in tables.values()})

    def schema(self) -> dict[str, object]:
        """The sqlglot schema of visible (non-hidden) columns."""
        return {name: {c.name.lower(): c.type for c in policy.visible_columns}
                for name, policy in self.tables.items()}

    def name(self, table: str) -> str:
        """The dataset name as granted."""
        return self.tables[table].name

    def column(self, table: str, column: str) -> ColumnPolicy | None:
        """The visible column `column` of `table`, if any."""
        policy = self.tables.get(table)
        col = policy.column(column) if policy else None
        return col if col is not None and col.constraint != Constraint.HIDDEN else None

    def constraint(self, table: str, column: str) -> Constraint:
        """The column's effective constraint (hidden when unknown)."""
        col = self.column(table, column)
        return col.constraint if col else Constraint.HIDDEN

    def is_entity(self, table: str, column: str) -> bool:
        """Whether `column` is the entity column of `table`."""
        entity = self.tables[table].entity_column if table in self.tables else None
        return entity is not None and entity.lower() == column.lower()

    def entity_column(self, table: str) -> str | None:
        """The entity column of `table`, lower-case, if it has one."""
        entity = self.tables[table].entity_column
        return entity.lower() if entity else None


def resolve(tree: exp.Query, catalog: Catalog, positions: Positions,
            schema: Schema | None = None) -> tuple[exp.Query | None, list[Finding]]:
    """Check table names, then qualify every column with `*` expanded; refuse what cannot be resolved."""
    findings = _unknown_tables(tree, catalog, positions)
    if findings:
        return None, findings
    try:
        qualified = qualify(tree, dialect="duckdb", schema=schema or catalog.schema(),
                            validate_qualify_columns=True, quote_identifiers=True, identify=True)
    except (OptimizeError, SchemaError) as err:
        return None, [_qualify_finding(str(err), tree, positions)]
    findings = check_nodes(qualified, positions)
    if findings:
        return None, findings
    for star in qualified.find_all(exp.Star):
        if not isinstance(star.parent, exp.Count):
            return None, [positions.finding(F.UNKNOWN_COLUMN, "could not expand * against granted columns", star)]
    return qualified, []


def _unknown_tables(tree: exp.Query, catalog: Catalog, positions: Positions) -> list[Finding]:
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    findings = []
    granted = ", ".join(sorted(p.name for p in catalog.tables.values())) or "none"
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if name not in catalog.tables and name not in ctes:
            findings.append(positions.finding(
                F.UNKNOWN_TABLE, f"table {table.name} is not a dataset of this grant (granted: {granted})", table))
    return findings


def _qualify_finding(message: str, tree: exp.Expr, positions: Positions) -> Finding:
    match = _POSITION.search(message)
    line, column = (int(match.group(1)), int(match.group(2))) if match else (None, None)
    names = _QUOTED.findall(message)
    subject = names[0] if names else "?"
    for node in tree.find_all(exp.Column):
        if node.name.lower() == subject.lower():
            line, column = positions.of(node)
            break
    lowered = message.lower()
    if "ambiguous" in lowered:
        return Finding(F.AMBIGUOUS_COLUMN, f"column {subject} is ambiguous; qualify it with a table alias",
                       line, column)
    if "could not be resolved" in lowered or "unknown" in lowered or "column" in lowered:
        return Finding(F.UNKNOWN_COLUMN, f"column {subject} does not exist in the granted datasets "
                                         "(or is hidden by the grant)", line, column)
    return Finding(F.UNKNOWN_COLUMN, f"cannot resolve the query's names: {message.splitlines()[0]}", line, column)
