"""Dataset file normalization: CSV, Parquet or JSON lines in, one atomically written Parquet file out.

Rules: the file is streamed, never held whole in memory; CSV/JSON-lines problems are reported with their
1-based line in the file, Parquet problems with their 1-based row. Column names must be plain SQL
identifiers: ASCII letters, digits, underscore or CJK ideographs, not starting with a digit, not a
reserved word, distinct regardless of case. The result is written into a temporary sibling folder,
fsynced, then renamed to `dest_dir`; on any failure nothing is left behind.

Types: `column_types` always wins. Otherwise CSV types are inferred by Arrow from the first 4 MiB and
widened (integer -> double -> text) with a re-read if a later value does not fit; numbers with leading
zeros in that sample (postcodes, area codes) stay text. JSON-lines types come from a checking pass over
the whole file; a key holding different kinds of values must be declared VARCHAR.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sandbox.catalogue.errors import (
    DestinationExists,
    EmptyFile,
    FileTooLarge,
    ImportRootNotConfigured,
    InvalidImportOptions,
    PathOutsideImportRoot,
    SourceNotFound,
    UnsupportedFormat,
)
from sandbox.catalogue.import_csv import CsvFormat, convert_csv
from sandbox.catalogue.import_jsonl import convert_jsonl
from sandbox.catalogue.import_parquet import convert_parquet
from sandbox.catalogue.import_sink import Converted, ParquetSink, fsync_path, sha256_file
from sandbox.catalogue.import_text import Progress, ProgressCallback, codec_for
from sandbox.catalogue.import_types import duckdb_type_name
from sandbox.catalogue.import_xlsx import convert_xlsx

PARQUET_NAME = "data.parquet"
FORMATS = ("csv", "parquet", "jsonl", "xlsx")
_FORMAT_ALIASES = {
    "csv": "csv",
    "tsv": "csv",
    "parquet": "parquet",
    "pq": "parquet",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "xlsx": "xlsx",
}
_SUFFIXES = {f".{alias}": name for alias, name in _FORMAT_ALIASES.items()}


@dataclass(frozen=True)
class ImportOptions:
    """How to read a dataset file (null markers, delimiter, header: CSV; encoding: CSV and JSON lines)."""

    format: str | None = None  # 'csv' | 'parquet' | 'jsonl' | 'xlsx'; None: from the suffix
    encoding: str = "utf-8"
    null_markers: tuple[str, ...] = ("",)
    delimiter: str = ","
    header: bool = True
    column_types: Mapping[str, str] | None = None
    sheet: str | None = None  # xlsx: the sheet to read; None: the first


@dataclass(frozen=True)
class ColumnInfo:
    """One column of a normalized dataset, with its DuckDB type name."""

    name: str
    type: str


@dataclass(frozen=True)
class NormalizedFile:
    """The normalized Parquet file of one dataset version and the facts recorded about it."""

    path: Path
    columns: tuple[ColumnInfo, ...]
    arrow_schema: pa.Schema
    row_count: int
    byte_size: int
    source_sha256: str
    source_bytes: int
    parquet_sha256: str

    def schema_json(self) -> list[dict[str, str]]:
        """The schema as [{'name', 'type', 'arrow_type'}], for storage and certificates."""
        return [
            {"name": f.name, "type": c.type, "arrow_type": str(f.type)}
            for f, c in zip(self.arrow_schema, self.columns, strict=True)
        ]


def detect_format(source: Path, options: ImportOptions) -> tuple[str, str]:
    """The format ('csv', 'parquet', 'jsonl') and CSV delimiter for a file; .tsv files default to tabs."""
    delimiter = options.delimiter
    if options.format is not None:
        name = options.format.strip().lower()
        if name not in _FORMAT_ALIASES:
            raise UnsupportedFormat(
                f"Format {options.format!r} is not supported; use one of {', '.join(FORMATS)}.",
                format=options.format,
            )
        if name == "tsv" and delimiter == ",":
            delimiter = "\t"
        return _FORMAT_ALIASES[name], delimiter
    suffix = source.suffix.lower()
    if suffix not in _SUFFIXES:
        raise UnsupportedFormat(
            f"Cannot tell the format of {source.name!r} from its suffix; name it .csv, .tsv, .parquet, .pq, "
            f".jsonl, .ndjson or .xlsx, or pass the format option.",
            suffix=suffix,
        )
    if suffix == ".tsv" and delimiter == ",":
        delimiter = "\t"
    return _SUFFIXES[suffix], delimiter


def _check_delimiter(delimiter: str) -> None:
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise InvalidImportOptions(
            f"Delimiter {delimiter!r} is not valid; use one character other than a quote or a line break.",
            code="invalid_delimiter",
            delimiter=delimiter,
        )


def normalize(
    source: Path,
    dest_dir: Path,
    options: ImportOptions,
    *,
    max_bytes: int | None = None,
    progress: ProgressCallback | None = None,
) -> NormalizedFile:
    """Normalize `source` to `dest_dir`/data.parquet atomically; `dest_dir` must not exist yet."""
    fmt, delimiter = detect_format(source, options)
    codec = codec_for(options.encoding)
    _check_delimiter(delimiter)
    if not source.is_file():
        raise SourceNotFound(
            f"Source file {source} does not exist or is not a regular file.", path=str(source)
        )
    size = source.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise FileTooLarge(
            f"The file is {size} bytes, over the limit of {max_bytes} bytes (SLUICE_MAX_UPLOAD_BYTES).",
            size=size,
            max_bytes=max_bytes,
        )
    if size == 0:
        raise EmptyFile("The file is empty (0 bytes).", reason="no_columns")
    if dest_dir.exists():
        raise DestinationExists(
            f"{dest_dir} exists already; a dataset version is written once.", path=str(dest_dir)
        )
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", suffix=".tmp", dir=dest_dir.parent))
    sink = ParquetSink(temp_dir / PARQUET_NAME)
    try:
        tracker = Progress(progress, size, passes=1 if fmt == "csv" else 2)
        converted = _convert(fmt, source, options, codec, delimiter, sink, tracker)
        parquet_sha256 = sha256_file(sink.path)
        fsync_path(temp_dir)
        tracker.finish()
        if dest_dir.exists():
            raise DestinationExists(f"{dest_dir} appeared during the import.", path=str(dest_dir))
        os.rename(temp_dir, dest_dir)
    except BaseException:
        sink.reset()
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    fsync_path(dest_dir.parent)
    return _normalized_file(
        dest_dir / PARQUET_NAME,
        converted.schema,
        row_count=converted.row_count,
        source_sha256=converted.source_sha256,
        source_bytes=converted.source_bytes,
        parquet_sha256=parquet_sha256,
    )


def _convert(
    fmt: str,
    source: Path,
    options: ImportOptions,
    codec: str,
    delimiter: str,
    sink: ParquetSink,
    progress: Progress,
) -> Converted:
    if fmt == "csv":
        csv_format = CsvFormat(
            codec=codec,
            delimiter=delimiter,
            header=options.header,
            null_markers=tuple(options.null_markers),
            column_types=options.column_types,
        )
        return convert_csv(source, csv_format, sink, progress)
    if fmt == "xlsx":
        xlsx_format = CsvFormat(codec="utf-8", delimiter=",", header=options.header,
                                null_markers=tuple(options.null_markers), column_types=options.column_types)
        return convert_xlsx(source, xlsx_format, options.sheet, sink, progress)
    if fmt == "jsonl":
        return convert_jsonl(source, codec, options.column_types, sink, progress)
    return convert_parquet(source, options.column_types, sink, progress)


def describe_parquet(path: Path, *, source_sha256: str, source_bytes: int) -> NormalizedFile:
    """Describe an already normalized Parquet file (e.g. reused by a metadata-only new version)."""
    with pq.ParquetFile(path) as parquet:
        schema = parquet.schema_arrow.remove_metadata()
        row_count = parquet.metadata.num_rows
    return _normalized_file(
        path,
        schema,
        row_count=row_count,
        source_sha256=source_sha256,
        source_bytes=source_bytes,
        parquet_sha256=sha256_file(path),
    )


def _normalized_file(
    path: Path,
    schema: pa.Schema,
    *,
    row_count: int,
    source_sha256: str,
    source_bytes: int,
    parquet_sha256: str,
) -> NormalizedFile:
    return NormalizedFile(
        path=path,
        columns=tuple(ColumnInfo(f.name, duckdb_type_name(f.type, column=f.name)) for f in schema),
        arrow_schema=schema,
        row_count=row_count,
        byte_size=path.stat().st_size,
        source_sha256=source_sha256,
        source_bytes=source_bytes,
        parquet_sha256=parquet_sha256,
    )


def resolve_import_path(path: str | Path, import_root: Path | None) -> Path:
    """Resolve a server-side path (relative to the root if not absolute); refuse anything outside the root."""
    if import_root is None:
        raise ImportRootNotConfigured(
            "Registering server-side files is disabled; set SLUICE_IMPORT_ROOT to the folder they come from."
        )
    root = import_root.expanduser()
    if not root.is_dir():
        raise ImportRootNotConfigured(
            f"SLUICE_IMPORT_ROOT {import_root} is not an existing folder; fix the setting.",
            import_root=str(root),
        )
    root = root.resolve()
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise PathOutsideImportRoot(
            f"Path {str(path)!r} resolves to outside SLUICE_IMPORT_ROOT ({root}); only files under it can "
            "be registered from the server.",
            path=str(path),
        )
    return resolved
