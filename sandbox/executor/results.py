"""Write a controlled result as Parquet, atomically, and fingerprint it with SHA-256."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.executor.errors import ResultWriteFailed


@dataclass(frozen=True)
class WrittenResult:
    """A result file: where, its SHA-256, its row count and its size in bytes."""

    path: Path
    sha256: str
    rows: int
    bytes: int


def write_result(table: pa.Table, path: Path) -> WrittenResult:
    """Serialize `table` to Parquet in memory, hash the bytes, then write them to a temp file and rename."""
    try:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue()
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise ResultWriteFailed("the result has a column type Parquet cannot store (INTERVAL, UNION); "
                                "cast that column to VARCHAR",
                                code="result_type_unsupported", detail=type(exc).__name__) from None
    digest = hashlib.sha256(memoryview(data)).hexdigest()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(memoryview(data))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ResultWriteFailed("the result could not be written", detail=type(exc).__name__) from None
    return WrittenResult(path=path, sha256=digest, rows=table.num_rows, bytes=data.size)
