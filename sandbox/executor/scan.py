"""Rows and bytes a run is charged for, from the Parquet metadata of the prepared inputs it reads."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.executor.errors import UnknownInput
from sandbox.executor.types import InputTable, ScanStats


@dataclass(frozen=True)
class _FileStats:
    rows: int
    column_bytes: Mapping[str, int]  # lower-cased top-level column name -> total uncompressed bytes


def scan_stats(inputs: Sequence[InputTable], columns_read: Mapping[str, Sequence[str]]) -> ScanStats:
    """Rows = row counts of the tables read; bytes = uncompressed Parquet size of the columns read.

    Deterministic: the same inputs and columns always give the same numbers, whatever the engine did.
    Names match case-insensitively, as in SQL; a table read twice (a self-join) is counted once; a table
    read for its row count only (`count(*)`) adds rows and no bytes.
    """
    by_name = {table.name.lower(): table for table in inputs}
    wanted: dict[str, set[str]] = {}
    for table_name, columns in columns_read.items():
        key = table_name.lower()
        if key not in by_name:
            raise UnknownInput(f"table {table_name} is not an input of this run", table=table_name)
        wanted.setdefault(key, set()).update(column.lower() for column in columns)
    rows = 0
    size = 0
    for key, names in sorted(wanted.items()):
        stats = file_stats(by_name[key])
        rows += stats.rows
        for column in sorted(names):
            if column not in stats.column_bytes:
                raise UnknownInput(f"column {column} is not in input {by_name[key].name}",
                                   table=by_name[key].name, column=column)
            size += stats.column_bytes[column]
    return ScanStats(rows=rows, bytes=size)


def file_stats(table: InputTable) -> _FileStats:
    """Row count and per-column uncompressed bytes of a prepared input (cached per file version)."""
    try:
        st = os.stat(table.path)
    except OSError as exc:
        raise UnknownInput(f"input {table.name} has no prepared file", table=table.name,
                           detail=type(exc).__name__) from None
    return _read_stats(str(table.path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=1024)
def _read_stats(path: str, size: int, mtime_ns: int) -> _FileStats:
    meta = pq.read_metadata(path)
    owners: list[str] = []  # top-level column name of each Parquet leaf column, in leaf order
    for field in meta.schema.to_arrow_schema():
        owners.extend([field.name.lower()] * _leaf_count(field.type))
    column_bytes = dict.fromkeys(owners, 0)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            column_bytes[owners[c]] += group.column(c).total_uncompressed_size
    return _FileStats(rows=meta.num_rows, column_bytes=column_bytes)


def _leaf_count(dtype: pa.DataType) -> int:
    """How many Parquet leaf columns an Arrow type is stored as."""
    if isinstance(dtype, pa.StructType):
        return sum(_leaf_count(dtype.field(i).type) for i in range(dtype.num_fields))
    if isinstance(dtype, pa.MapType):
        return _leaf_count(dtype.key_type) + _leaf_count(dtype.item_type)
    if isinstance(dtype, (pa.ListType, pa.LargeListType, pa.FixedSizeListType)):
        return _leaf_count(dtype.value_type)
    return 1
