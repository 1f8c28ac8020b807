"""JSON lines to Parquet: a checking pass infers the schema with exact line numbers, a second converts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson

from sandbox.catalogue.errors import DuplicateColumn, EmptyFile, MalformedFile, UnsupportedColumnType
from sandbox.catalogue.import_sink import Converted, ParquetSink
from sandbox.catalogue.import_text import Progress, SourceStream, TextLines
from sandbox.catalogue.import_types import check_column_names, duckdb_type_name, resolve_column_types

BATCH_ROWS = 65_536
ARROW_BLOCK_BYTES = 4 << 20
_JSON_WHITESPACE = " \t\r\n"
_CONVERSION_ERRORS = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    ValueError,
    TypeError,
    OverflowError,
    InvalidOperation,
)


@dataclass
class _ColumnScan:
    """What the checking pass learned about one key: where each kind of value first appeared."""

    name: str
    kinds: dict[str, int] = field(default_factory=dict)


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def convert_jsonl(
    source: Path, codec: str, column_types: Mapping[str, str] | None, sink: ParquetSink, progress: Progress
) -> Converted:
    """Convert a JSON-lines file (one object per line) into `sink`, refusing it with the failing line."""
    columns, rows, source_sha256, source_bytes = _scan(source, codec, progress)
    names = list(columns)
    check_column_names(names)
    if rows == 0:
        raise EmptyFile("The file has no JSON objects; a dataset needs at least one row.", reason="no_rows")
    explicit = resolve_column_types(column_types, names)
    schema = pa.schema([pa.field(name, _column_type(columns[name], explicit.get(name))) for name in names])
    sink.open(schema)
    written = None
    if all(_arrow_reads(columns[f.name], f.type) for f in schema):
        written = _write_with_arrow(source, codec, schema, sink, progress)
    if written is None or written != (rows, source_sha256):
        sink.open(schema)
        written = _write(source, codec, schema, sink, progress)
    if written != (rows, source_sha256):
        raise MalformedFile("The file changed while it was being imported; upload it again.", line=None)
    return Converted(
        schema=schema, row_count=sink.close(), source_sha256=source_sha256, source_bytes=source_bytes
    )


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant, object_pairs_hook=_pairs)
_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    Decimal: "number",
    str: "string",
}
_ARTICLE = {"integer": "an integer", "number": "a number", "boolean": "a boolean", "string": "a string"}


def _parse(text: str, line: int) -> dict[str, Any] | None:
    """The object on one line, or None for a blank line."""
    stripped = text.strip(_JSON_WHITESPACE)
    if not stripped:
        return None
    try:
        value = _DECODER.decode(stripped)
    except _DuplicateKey as exc:
        raise DuplicateColumn(
            f"Line {line} has the key {exc.key!r} twice; every key of an object must be distinct.",
            column=exc.key,
            line=line,
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise MalformedFile(f"Line {line} is not valid JSON ({reason}).", line=line) from None
    if not isinstance(value, dict):
        raise MalformedFile(
            f"Line {line} holds a JSON {type(value).__name__}; each line must hold one JSON object.",
            line=line,
        )
    return value


def _scan(source: Path, codec: str, progress: Progress) -> tuple[dict[str, _ColumnScan], int, str, int]:
    """Check every line; return the columns in first-seen order, the row count, SHA-256 and size."""
    lines = TextLines(source, codec, on_bytes=progress.for_pass(0))
    columns: dict[str, _ColumnScan] = {}
    rows = 0
    for number, text in lines:
        obj = _parse(text, number)
        if obj is None:
            continue
        rows += 1
        for key, value in obj.items():
            column = columns.get(key)
            if column is None:
                column = columns[key] = _ColumnScan(key)
            kind = _KINDS.get(type(value), "nested")
            if kind not in column.kinds:
                if kind == "nested":
                    raise UnsupportedColumnType(
                        f"Line {number}: column {key!r} holds a nested {type(value).__name__}; Sluice "
                        "datasets are flat tables. Flatten it into separate keys or encode it as a string.",
                        column=key,
                        line=number,
                    )
                column.kinds[kind] = number
    return columns, rows, lines.sha256, lines.bytes_read


_ACCEPTS: tuple[tuple[Any, frozenset[str]], ...] = (
    (pa.types.is_string, frozenset({"string", "integer", "number", "boolean"})),
    (pa.types.is_integer, frozenset({"integer"})),
    (pa.types.is_floating, frozenset({"integer", "number"})),
    (pa.types.is_decimal, frozenset({"integer", "number", "string"})),
    (pa.types.is_date, frozenset({"string"})),
    (pa.types.is_timestamp, frozenset({"string"})),
    (pa.types.is_boolean, frozenset({"boolean"})),
)
_INFERRED = {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_(), "string": pa.string()}


def _column_type(column: _ColumnScan, declared: pa.DataType | None) -> pa.DataType:
    """The declared type if every value fits it, else the type the values agree on."""
    seen = sorted(((line, kind) for kind, line in column.kinds.items() if kind != "null"))
    if declared is not None:
        accepted = next(kinds for predicate, kinds in _ACCEPTS if predicate(declared))
        for line, kind in seen:
            if kind not in accepted:
                raise MalformedFile(
                    f"Line {line}: column {column.name!r} holds {_ARTICLE[kind]}, which cannot be read as "
                    f"the declared {duckdb_type_name(declared)}. Fix the value or column_types.",
                    line=line,
                    column=column.name,
                )
        return declared
    current: str | None = None
    for line, kind in seen:
        if current is None or current == kind or {current, kind} == {"integer", "number"}:
            current = "number" if {current, kind} == {"integer", "number"} else kind
            continue
        raise MalformedFile(
            f"Line {line}: column {column.name!r} holds {_ARTICLE[kind]} but earlier lines hold "
            f"{_ARTICLE[current]}. Make the values consistent or declare "
            f"column_types={{{column.name!r}: 'VARCHAR'}}.",
            line=line,
            column=column.name,
        )
    return _INFERRED[current] if current is not None else pa.string()


def _arrow_reads(column: _ColumnScan, target: pa.DataType) -> bool:
    """Whether Arrow's JSON reader itself converts every kind of value seen in the column to `target`."""
    kinds = set(column.kinds) - {"null"}
    if pa.types.is_floating(target):
        return kinds <= {"integer", "number"}
    if pa.types.is_integer(target):
        return kinds <= {"integer"}
    if pa.types.is_boolean(target):
        return kinds <= {"boolean"}
    return kinds <= {"string"}


def _write_with_arrow(
    source: Path, codec: str, schema: pa.Schema, sink: ParquetSink, progress: Progress
) -> tuple[int, str] | None:
    """The fast path: Arrow's JSON reader with the checked schema; None (nothing kept) if Arrow objects."""
    stream = SourceStream(source, codec, on_bytes=progress.for_pass(1))
    try:
        reader = pajson.open_json(
            stream,
            read_options=pajson.ReadOptions(use_threads=False, block_size=ARROW_BLOCK_BYTES),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
        )
        for batch in reader:
            sink.write(batch)
        stream.drain()
        return sink.pending_rows, stream.sha256
    except pa.ArrowException:
        sink.reset()
        return None
    finally:
        stream.close()


def _write(
    source: Path, codec: str, schema: pa.Schema, sink: ParquetSink, progress: Progress
) -> tuple[int, str]:
    """Convert every object into record batches of the schema (exact lines for values that do not fit)."""
    lines = TextLines(source, codec, on_bytes=progress.for_pass(1))
    names = schema.names
    values: dict[str, list[Any]] = {name: [] for name in names}
    line_numbers: list[int] = []
    for number, text in lines:
        obj = _parse(text, number)
        if obj is None:
            continue
        if not obj.keys() <= values.keys():
            raise MalformedFile("The file changed while it was being imported; upload it again.", line=number)
        line_numbers.append(number)
        for name in names:
            values[name].append(obj.get(name))
        if len(line_numbers) >= BATCH_ROWS:
            _flush(schema, values, line_numbers, sink)
    _flush(schema, values, line_numbers, sink)
    return sink.pending_rows, lines.sha256


def _flush(
    schema: pa.Schema, values: dict[str, list[Any]], line_numbers: list[int], sink: ParquetSink
) -> None:
    if not line_numbers:
        return
    arrays = [_column_array(f.name, values[f.name], f.type, line_numbers) for f in schema]
    sink.write(pa.RecordBatch.from_arrays(arrays, schema=schema))
    for column in values.values():
        column.clear()
    line_numbers.clear()


def _column_array(name: str, column: list[Any], target: pa.DataType, line_numbers: list[int]) -> pa.Array:
    try:
        return _convert(column, target)
    except _CONVERSION_ERRORS:
        pass
    for index, value in enumerate(column):
        try:
            _convert([value], target)
        except _CONVERSION_ERRORS as exc:
            line = line_numbers[index]
            raise MalformedFile(
                f"Line {line}: value {value!r} of column {name!r} does not fit {duckdb_type_name(target)} "
                f"({exc}). Fix the value or column_types.",
                line=line,
                column=name,
            ) from None
    raise MalformedFile(f"Column {name!r} could not be converted.", line=None, column=name)


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _convert(column: list[Any], target: pa.DataType) -> pa.Array:
    """One column of a batch as an Arrow array of `target` (raises if a value does not fit)."""
    if pa.types.is_string(target):
        return pa.array([_as_text(v) for v in column], pa.string())
    if pa.types.is_floating(target):
        return pa.array([None if v is None else float(v) for v in column], target)
    if pa.types.is_decimal(target):
        return pa.array([Decimal(v) if isinstance(v, str) else v for v in column], target)
    if pa.types.is_date(target) or pa.types.is_timestamp(target):
        return pa.array(column, pa.string()).cast(target)
    return pa.array(column, target)
