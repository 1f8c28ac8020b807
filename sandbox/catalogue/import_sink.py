"""Writing normalized Parquet: fixed-size row groups, the stored schema, durable files and their hashes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# DuckDB's own row-group size; fixed-size row groups make the Parquet bytes depend only on the data.
ROW_GROUP_ROWS = 122_880
HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Converted:
    """What a format converter reports once the Parquet file is complete."""

    schema: pa.Schema
    row_count: int
    source_sha256: str
    source_bytes: int


class ParquetSink:
    """Streams record batches into one Parquet file with the stored schema; can be reset and restarted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self.row_count = 0

    def open(self, schema: pa.Schema) -> None:
        """Start a new file with `schema`."""
        self.reset()
        self._schema = schema
        self._writer = pq.ParquetWriter(self.path, schema, compression="zstd")

    def write(self, batch: pa.RecordBatch) -> None:
        """Append a batch, cast safely to the stored schema (pyarrow raises if a value does not fit)."""
        if self._writer is None or self._schema is None:
            raise RuntimeError("ParquetSink.open() must be called before write()")
        if batch.num_rows == 0:
            return
        if batch.schema != self._schema:
            batch = batch.cast(self._schema, safe=True)
        self._buffer.append(batch)
        self._buffered += batch.num_rows
        if self._buffered >= ROW_GROUP_ROWS:
            self._flush(final=False)

    @property
    def pending_rows(self) -> int:
        """Rows accepted so far (written or buffered)."""
        return self.row_count + self._buffered

    def close(self) -> int:
        """Write what is buffered, close the file and fsync it; returns the number of rows written."""
        if self._writer is None:
            raise RuntimeError("ParquetSink.open() must be called before close()")
        self._flush(final=True)
        self._writer.close()
        self._writer = None
        fsync_path(self.path)
        return self.row_count

    def reset(self) -> None:
        """Abandon the file written so far (used before a retry and on failure)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._buffer = []
        self._buffered = 0
        self.row_count = 0
        self.path.unlink(missing_ok=True)

    def _flush(self, *, final: bool) -> None:
        assert self._writer is not None
        if not self._buffer:
            return
        table = pa.Table.from_batches(self._buffer, schema=self._schema)
        while table.num_rows >= ROW_GROUP_ROWS or (final and table.num_rows > 0):
            size = min(ROW_GROUP_ROWS, table.num_rows)
            self._writer.write_table(table.slice(0, size).combine_chunks(), row_group_size=size)
            self.row_count += size
            table = table.slice(size)
        self._buffer = table.to_batches() if table.num_rows else []
        self._buffered = table.num_rows


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file or a directory to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
