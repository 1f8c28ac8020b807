"""Parquet to normalized Parquet: checked names and types, optional casts, unreadable rows reported."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sandbox.catalogue.errors import EmptyFile, MalformedFile
from sandbox.catalogue.import_sink import HASH_CHUNK_BYTES, Converted, ParquetSink
from sandbox.catalogue.import_text import Progress
from sandbox.catalogue.import_types import (
    check_column_names,
    duckdb_type_name,
    resolve_column_types,
    storage_type,
)

BATCH_ROWS = 65_536
_READ_ERRORS = (pa.ArrowException, OSError, ValueError)


def convert_parquet(
    source: Path, column_types: Mapping[str, str] | None, sink: ParquetSink, progress: Progress
) -> Converted:
    """Copy a Parquet file into `sink` batch by batch; a damaged file is refused with the row it failed at."""
    source_sha256, source_bytes = _hash(source, progress)
    try:
        parquet = pq.ParquetFile(source)
    except _READ_ERRORS as exc:
        raise MalformedFile(
            f"The file is not a readable Parquet file ({exc}).", row=None, detail=str(exc)
        ) from None
    with parquet:
        arrow_schema = parquet.schema_arrow
        names = list(arrow_schema.names)
        check_column_names(names)
        explicit = resolve_column_types(column_types, names)
        schema = pa.schema(
            [
                pa.field(f.name, explicit[f.name] if f.name in explicit else storage_type(f.name, f.type))
                for f in arrow_schema
            ]
        )
        total_rows = parquet.metadata.num_rows
        sink.open(schema)
        done = 0
        batches = parquet.iter_batches(batch_size=BATCH_ROWS)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except _READ_ERRORS as exc:
                raise MalformedFile(
                    f"Rows from {done + 1} on cannot be read; the Parquet file is damaged ({exc}).",
                    row=done + 1,
                    detail=str(exc),
                ) from None
            sink.write(_cast(batch, schema, done))
            done += batch.num_rows
            progress.update(1, source_bytes * done // max(total_rows, 1))
    rows = sink.close()
    if rows == 0:
        raise EmptyFile("The Parquet file has no rows; a dataset needs at least one row.", reason="no_rows")
    return Converted(schema=schema, row_count=rows, source_sha256=source_sha256, source_bytes=source_bytes)


def _hash(source: Path, progress: Progress) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            progress.update(0, size)
    return digest.hexdigest(), size


def _cast(batch: pa.RecordBatch, schema: pa.Schema, first_row: int) -> pa.RecordBatch:
    """Cast each column to the stored type; a value that does not fit is reported with its 1-based row."""
    arrays = []
    for field, column in zip(schema, batch.columns, strict=True):
        if column.type == field.type:
            arrays.append(column)
            continue
        try:
            arrays.append(pc.cast(column, field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            index = _first_failure(column, field.type)
            row = first_row + index + 1 if index is not None else None
            raise MalformedFile(
                f"Row {row}: column {field.name!r} cannot be converted from {column.type} to "
                f"{duckdb_type_name(field.type, column=field.name)} ({exc}). Fix the value or column_types.",
                row=row,
                column=field.name,
            ) from None
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _first_failure(column: pa.Array, target: pa.DataType) -> int | None:
    for index in range(len(column)):
        try:
            pc.cast(column.slice(index, 1), target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return index
    return None
