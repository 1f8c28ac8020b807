"""Write a controlled result as Parquet, atomically, and fingerprint it with SHA-256."""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.executor.errors import ResultWriteFailed

COMPRESS_FROM_BYTES = 64 * 1024  # smaller results are stored uncompressed: zstd saved ~2 % of a 5-row file's bytes


@dataclass(frozen=True)
class WrittenResult:
    """A result file: where, its SHA-256, its row count and its size in bytes."""

    path: Path
    sha256: str
    rows: int
    bytes: int


def write_result(table: pa.Table, path: Path) -> WrittenResult:
    """Serialize `table` to Parquet in memory, hash the bytes, then write them to a temp file and rename.

    The SHA-256 is of exactly the bytes stored: the download's `X-Result-Parquet-SHA256` and the audit record's
    `result_sha256` are this digest.
    """
    try:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=result_compression(table))
        data = sink.getvalue()
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise ResultWriteFailed("the result has a column type Parquet cannot store (INTERVAL, UNION); "
                                "cast that column to VARCHAR",
                                code="result_type_unsupported", detail=type(exc).__name__) from None
    digest = hashlib.sha256(memoryview(data)).hexdigest()
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        try:
            _write_new(tmp, data)
        except FileNotFoundError:  # the first result in this directory: make it (checking on every run cost a syscall)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write_new(tmp, data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ResultWriteFailed("the result could not be written", detail=type(exc).__name__) from None
    return WrittenResult(path=path, sha256=digest, rows=table.num_rows, bytes=data.size)


def result_compression(table: pa.Table) -> str:
    """The Parquet codec for a result: zstd, except for small results, where it costs more than it saves."""
    return "zstd" if table.nbytes >= COMPRESS_FROM_BYTES else "none"


def _write_new(name: str, data: pa.Buffer) -> None:
    """Write `data` to a new file `name` (replacing a leftover of the same name)."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
