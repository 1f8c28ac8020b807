"""Column rules of imported datasets: name checks, DuckDB type names and the Arrow types they map to."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import pyarrow as pa

from sandbox.catalogue.errors import (
    DuplicateColumn,
    EmptyFile,
    InvalidColumnName,
    InvalidImportOptions,
    UnsupportedColumnType,
)

# A column name must be usable unquoted in DuckDB and sqlglot: ASCII letters, digits and underscore, plus
# CJK ideographs (Chinese column names are common in public data); it must not start with a digit.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
COLUMN_NAME_PATTERN = re.compile(rf"^[A-Za-z_{_CJK}][A-Za-z0-9_{_CJK}]*$")
MAX_COLUMN_NAME_LENGTH = 128

# Words that DuckDB 2.0 or sqlglot refuse as an unquoted column name (measured on keyword lists).
_RESERVED_TEXT = """
    all alter analyse analyze and anti any array as asc asof asymmetric at authorization between binary both
    by case cast check collate collation column concurrently constraint create cross cube default deferrable
    desc describe distinct do drop else end except false fetch for force foreign freeze from full glob grant
    group having ilike in initially inner insert install intersect into is isnull join lambda lateral leading
    left like limit lock map natural not notnull null offset on only or order outer overlaps pivot
    pivot_longer pivot_wider placing positional primary qualify references returning revoke right rollback
    rollup select semi show similar some summarize symmetric table tablesample then to trailing true union
    unique unpack unpivot using variadic verbose when where window with
"""
RESERVED_WORDS = frozenset(_RESERVED_TEXT.split())

_SIMPLE_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),
}
_DECIMAL_TYPE = re.compile(r"^DECIMAL\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)$", re.IGNORECASE)
ACCEPTED_TYPE_NAMES = (*_SIMPLE_TYPES, "DECIMAL(p,s)")


def check_column_names(names: Sequence[str]) -> None:
    """Refuse no columns, empty, non-identifier, reserved or duplicate (case-insensitive) column names."""
    if not names:
        raise EmptyFile("The file has no columns; a dataset needs at least one column.", reason="no_columns")
    seen: dict[str, str] = {}
    for name in names:
        if not COLUMN_NAME_PATTERN.match(name) or len(name) > MAX_COLUMN_NAME_LENGTH:
            raise InvalidColumnName(
                f"Column name {name!r} is not allowed: a name starts with a letter, underscore or Chinese "
                "character, goes on with letters, digits, underscores or Chinese characters, and has at "
                f"most {MAX_COLUMN_NAME_LENGTH} characters. Rename the column in the file.",
                column=name,
            )
        if name.lower() in RESERVED_WORDS:
            raise InvalidColumnName(
                f"Column name {name!r} is a reserved SQL word and cannot be used unquoted; rename it.",
                column=name,
            )
        if name.lower() in seen:
            raise DuplicateColumn(
                f"Column {name!r} appears twice (as {seen[name.lower()]!r} and {name!r}); SQL names are "
                "case-insensitive, so every column needs a distinct name.",
                column=name,
                other=seen[name.lower()],
            )
        seen[name.lower()] = name


def arrow_type_for(type_name: str) -> pa.DataType:
    """The Arrow type of a DuckDB-style type name from `column_types` (e.g. 'DECIMAL(10,2)')."""
    key = type_name.strip().upper()
    if key in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[key]
    match = _DECIMAL_TYPE.match(key)
    if match:
        precision, scale = int(match.group(1)), int(match.group(2))
        if 1 <= precision <= 38 and 0 <= scale <= precision:
            return pa.decimal128(precision, scale)
    raise InvalidImportOptions(
        f"Column type {type_name!r} is not supported in column_types; use one of "
        f"{', '.join(ACCEPTED_TYPE_NAMES)} (DECIMAL precision 1-38, 0 <= scale <= precision).",
        code="invalid_column_type",
        type=type_name,
    )


def resolve_column_types(
    column_types: Mapping[str, str] | None, names: Sequence[str]
) -> dict[str, pa.DataType]:
    """Map `column_types` to Arrow types, refusing columns that the file does not have."""
    if not column_types:
        return {}
    unknown = sorted(set(column_types) - set(names))
    if unknown:
        raise InvalidImportOptions(
            f"column_types names columns the file does not have: {', '.join(unknown)}. "
            f"The file's columns are: {', '.join(names)}.",
            code="unknown_column",
            columns=unknown,
        )
    return {name: arrow_type_for(type_name) for name, type_name in column_types.items()}


def storage_type(column: str, arrow_type: pa.DataType) -> pa.DataType:
    """The type a column is stored as in normalized Parquet (all-null becomes VARCHAR, nested is refused)."""
    t = arrow_type
    if pa.types.is_dictionary(t):
        return storage_type(column, t.value_type)
    if pa.types.is_null(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_timestamp(t) and t.unit in ("s", "ms"):
        return pa.timestamp("us", tz=t.tz)
    if pa.types.is_float16(t):
        return pa.float32()
    duckdb_type_name(t, column=column)  # refuses what DuckDB cannot take as a flat column
    return t


def duckdb_type_name(arrow_type: pa.DataType, *, column: str = "") -> str:
    """The DuckDB name of a flat Arrow type (VARCHAR, BIGINT, DECIMAL(10,2), ...)."""
    t = arrow_type
    if pa.types.is_decimal(t) and t.precision <= 38:
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        if t.tz is not None:
            return "TIMESTAMP WITH TIME ZONE"
        return {"s": "TIMESTAMP_S", "ms": "TIMESTAMP_MS", "us": "TIMESTAMP", "ns": "TIMESTAMP_NS"}[t.unit]
    for predicate, name in _NAMED_TYPES:
        if predicate(t):
            return name
    raise UnsupportedColumnType(
        f"Column {column!r} has type {t}, which Sluice does not store; datasets are flat tables of text, "
        "numbers, decimals, booleans, dates, times and timestamps. Flatten or convert the column.",
        column=column,
        arrow_type=str(t),
    )


_NAMED_TYPES = (
    (pa.types.is_boolean, "BOOLEAN"),
    (pa.types.is_int8, "TINYINT"),
    (pa.types.is_int16, "SMALLINT"),
    (pa.types.is_int32, "INTEGER"),
    (pa.types.is_int64, "BIGINT"),
    (pa.types.is_uint8, "UTINYINT"),
    (pa.types.is_uint16, "USMALLINT"),
    (pa.types.is_uint32, "UINTEGER"),
    (pa.types.is_uint64, "UBIGINT"),
    (pa.types.is_float32, "FLOAT"),
    (pa.types.is_float64, "DOUBLE"),
    (pa.types.is_string, "VARCHAR"),
    (pa.types.is_large_string, "VARCHAR"),
    (pa.types.is_binary, "BLOB"),
    (pa.types.is_large_binary, "BLOB"),
    (pa.types.is_fixed_size_binary, "BLOB"),
    (pa.types.is_date, "DATE"),
    (pa.types.is_time, "TIME"),
)
