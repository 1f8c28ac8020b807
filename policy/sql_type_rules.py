"""Type rules: refuse at analysis what DuckDB would refuse at run time for a column's type after masking.

Columns are typed as queries see them (`ColumnPolicy.type`, after `masked_type`), so a BIGINT column with
`mask: hash` is text here, as it is in the prepared input. A numeric aggregate over text would pass the column
rules and then fail every run with a binder error; it is refused with the column and its mask named.
"""

from __future__ import annotations

from sqlglot import exp

from policy import sql_findings as F
from policy.sql_findings import Finding
from policy.sql_lineage import Lineage
from policy.sql_model import Origin, Role, aggregate_arguments
from policy.sql_rules import ALLOWED_ROLES
from policy.sql_types import TEXT_TYPES

# Safe aggregates whose arguments must be numbers (count, count_if and approx_count_distinct take any type).
NUMERIC_AGGREGATES: tuple[type[exp.Expr], ...] = (
    exp.Sum, exp.Avg, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance, exp.VariancePop, exp.Corr,
    exp.CovarPop, exp.CovarSamp, exp.Kurtosis, exp.Skewness,
)


def numeric_aggregates_over_text(lineage: Lineage) -> list[Finding]:
    """A finding for each numeric aggregate (sum, avg, stddev, ...) whose argument is text after masking."""
    findings: list[Finding] = []
    for facts in lineage.scopes:
        for aggregate in facts.aggregates:
            if not isinstance(aggregate, NUMERIC_AGGREGATES):
                continue
            for argument in aggregate_arguments(aggregate):
                if argument.type is None or argument.type.this not in TEXT_TYPES:
                    continue
                origins, _, _ = lineage.expression_origins(argument, facts)
                if any(_refused_by_column_rules(lineage, origin) for origin in origins):
                    continue  # one finding per construct: the column rules already refuse it
                described = []
                for origin in sorted(origins, key=lambda o: (o.table, o.column)):
                    column = lineage.catalog.column(origin.table, origin.column)
                    mask = f" after its {column.mask.value} mask" if column is not None and column.mask else ""
                    described.append(f"{lineage.catalog.name(origin.table)}.{origin.column} is text{mask}")
                why = f" ({'; '.join(described)})" if described else ""
                name = aggregate.key if isinstance(aggregate, exp.Func) else type(aggregate).__name__.lower()
                findings.append(lineage.positions.finding(
                    F.NUMERIC_AGGREGATE_OVER_TEXT,
                    f"{name}() needs a number, but its argument is text{why}; DuckDB would refuse it at run "
                    "time. Text values can only be counted", aggregate))
                break
    return findings


def _refused_by_column_rules(lineage: Lineage, origin: Origin) -> bool:
    """Whether the column rules refuse `origin` inside an aggregate (entity columns; join or hidden columns)."""
    catalog = lineage.catalog
    return catalog.is_entity(origin.table, origin.column) or \
        Role.AGGREGATE_ARG not in ALLOWED_ROLES[catalog.constraint(origin.table, origin.column)]
