"""A stored run result (Parquet) encoded for the caller: JSON, CSV, Parquet or an Arrow IPC stream.

Used by the result download and by a run POST that asks for its result inline; both send exactly these bytes and
record their SHA-256.
"""

from __future__ import annotations

import csv
import io
import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


class ResultFormat(StrEnum):
    """The formats a result can be downloaded in."""

    JSON = "json"
    CSV = "csv"
    PARQUET = "parquet"
    ARROW = "arrow"


MEDIA_TYPES = {ResultFormat.JSON: "application/json", ResultFormat.CSV: "text/csv; charset=utf-8",
               ResultFormat.PARQUET: "application/vnd.apache.parquet",
               ResultFormat.ARROW: "application/vnd.apache.arrow.stream"}


def encode_result(path: Path, fmt: ResultFormat, *, bom: bool = False) -> bytes:
    """The result file at `path` in `fmt` (`bom`: CSV for Excel); Parquet is the stored file itself."""
    if fmt == ResultFormat.PARQUET:
        return path.read_bytes()
    import pyarrow as pa  # here, not at import: the CLI imports ResultFormat and should start fast
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if fmt == ResultFormat.JSON:
        return json.dumps(table.to_pylist(), ensure_ascii=False, default=str).encode("utf-8")
    if fmt == ResultFormat.CSV and bom:
        return excel_csv(table)
    if fmt == ResultFormat.CSV:
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        return buf.getvalue()
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def excel_csv(table: pa.Table) -> bytes:
    """CSV that Excel on Chinese Windows opens correctly: UTF-8 with a byte-order mark, CRLF line ends."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow(["" if row[c] is None else row[c] for c in table.column_names])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")
