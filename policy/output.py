"""Output control: the group threshold and the row cap, applied to a result before it leaves the worker.

Contract with SQL analysis: when a query reads a dataset with an `entity_column`, the regenerated SQL adds,
for each such dataset, one BIGINT column named ``__sluice_entities_<i>`` holding the number of distinct
entities of that dataset behind the output row. Output control drops every row where any of those counts is
below k, counts the dropped rows, removes the helper columns, then applies the row cap.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

ENTITY_COUNT_PREFIX = "__sluice_entities_"


@dataclass(frozen=True)
class ControlledOutput:
    """A result that passed output control, with what was taken out."""

    table: pa.Table
    suppressed_rows: int
    truncated_rows: int


def entity_count_columns(schema: pa.Schema) -> list[str]:
    """Names of the helper columns that carry distinct-entity counts."""
    return [name for name in schema.names if name.startswith(ENTITY_COUNT_PREFIX)]


def apply_output_control(table: pa.Table, *, k: int, max_rows: int | None) -> ControlledOutput:
    """Suppress rows covering fewer than `k` distinct entities, drop helper columns, cap the row count."""
    helpers = entity_count_columns(table.schema)
    suppressed = 0
    if helpers:
        keep = None
        for name in helpers:
            col = table.column(name)
            ok = pc.fill_null(pc.greater_equal(col, pa.scalar(k, col.type)), False)
            keep = ok if keep is None else pc.and_(keep, ok)
        before = table.num_rows
        table = table.filter(keep).drop_columns(helpers)
        suppressed = before - table.num_rows
    truncated = 0
    if max_rows is not None and table.num_rows > max_rows:
        truncated = table.num_rows - max_rows
        table = table.slice(0, max_rows)
    return ControlledOutput(table=table, suppressed_rows=suppressed, truncated_rows=truncated)
