"""CSV to Parquet, streamed by Arrow, with types widened on retry and failures traced to their line."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from sandbox.catalogue.errors import EmptyFile, MalformedFile, WrongDelimiter
from sandbox.catalogue.import_sink import Converted, ParquetSink
from sandbox.catalogue.import_text import Progress, SourceStream, TextLines
from sandbox.catalogue.import_types import check_column_names, resolve_column_types, storage_type

# Arrow infers column types from the first block; a bigger block sees more of the file before deciding.
BLOCK_BYTES = 4 << 20
_ROW = re.compile(r"Row #(\d+)")
_COLUMN = re.compile(r"In CSV column #(\d+)")
_EXPECTED = re.compile(r"Expected (\d+) columns, got (\d+)")
_LEADING_ZERO = r"^[+-]?0[0-9]"


@dataclass(frozen=True)
class CsvFormat:
    """How to read one CSV file."""

    codec: str
    delimiter: str
    header: bool
    null_markers: tuple[str, ...]
    column_types: Mapping[str, str] | None


@dataclass(frozen=True)
class _Widen:
    column: str
    wider: pa.DataType


def convert_csv(source: Path, fmt: CsvFormat, sink: ParquetSink, progress: Progress) -> Converted:
    """Stream a CSV file into `sink`; refuses it with the 1-based line of the first problem."""
    arrow_names, names = _peek_columns(source, fmt)
    _refuse_other_delimiter(names, fmt)
    check_column_names(names)
    explicit = resolve_column_types(fmt.column_types, names)
    overrides = {name: pa.string() for name in _leading_zero_columns(source, fmt, arrow_names, names)}
    overrides.update(explicit)
    for _attempt in range(2 * len(names) + 2):
        outcome = _attempt_convert(source, fmt, sink, progress, arrow_names, names, explicit, overrides)
        if isinstance(outcome, Converted):
            return outcome
        overrides[outcome.column] = outcome.wider
    raise MalformedFile("Column types kept changing while reading the file; pass column_types.", line=None)


OTHER_DELIMITERS = (";", "\t", "|")


def _refuse_other_delimiter(names: list[str], fmt: CsvFormat) -> None:
    """A header read as one column that holds `;` (or tab, `|`) means the file uses that delimiter: say so."""
    if not fmt.header:
        return
    for candidate in OTHER_DELIMITERS:
        if candidate != fmt.delimiter and any(candidate in name for name in names):
            shown = "\\t" if candidate == "\t" else candidate
            raise WrongDelimiter(
                f"The header {names[0][:60]!r} looks {shown!r}-separated, not {fmt.delimiter!r}-separated: pass "
                f"--delimiter '{shown}' (metadata \"delimiter\": \"{shown}\").",
                column=names[0], delimiter=candidate)


def _read_options(fmt: CsvFormat) -> pacsv.ReadOptions:
    # use_threads=False makes Arrow report the record number of a failing row.
    return pacsv.ReadOptions(
        use_threads=False,
        block_size=BLOCK_BYTES,
        autogenerate_column_names=not fmt.header,
    )


def _parse_options(fmt: CsvFormat) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(delimiter=fmt.delimiter, newlines_in_values=True)


def _peek_columns(source: Path, fmt: CsvFormat) -> tuple[list[str], list[str]]:
    """Arrow's column names and the dataset's column names (header, or column0, column1, ...)."""
    stream = SourceStream(source, fmt.codec)
    try:
        reader = pacsv.open_csv(stream, read_options=_read_options(fmt), parse_options=_parse_options(fmt))
        arrow_names = list(reader.schema.names)
        reader.close()
    except pa.ArrowInvalid as exc:
        raise _malformed(source, fmt, exc, arrow_names=None) from None
    finally:
        stream.close()
    names = arrow_names if fmt.header else [f"column{i}" for i in range(len(arrow_names))]
    return arrow_names, names


def _leading_zero_columns(source: Path, fmt: CsvFormat, arrow_names: list[str], names: list[str]) -> list[str]:
    """Columns whose first block holds numbers with leading zeros (codes such as 010000): kept as text."""
    stream = SourceStream(source, fmt.codec)
    convert_options = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in arrow_names},
        null_values=list(fmt.null_markers),
        strings_can_be_null=True,
    )
    try:
        reader = pacsv.open_csv(
            stream, read_options=_read_options(fmt), parse_options=_parse_options(fmt), convert_options=convert_options
        )
        batch = reader.read_next_batch()
        reader.close()
    except (pa.ArrowInvalid, StopIteration):
        return []  # the conversion pass reports the problem with its line
    finally:
        stream.close()
    return [
        name
        for name, column in zip(names, batch.columns, strict=True)
        if pc.any(pc.match_substring_regex(column, _LEADING_ZERO)).as_py()
    ]


def _attempt_convert(
    source: Path,
    fmt: CsvFormat,
    sink: ParquetSink,
    progress: Progress,
    arrow_names: list[str],
    names: list[str],
    explicit: dict[str, pa.DataType],
    overrides: dict[str, pa.DataType],
) -> Converted | _Widen:
    stream = SourceStream(source, fmt.codec, on_bytes=progress.for_pass(0))
    convert_options = pacsv.ConvertOptions(
        column_types={arrow_names[names.index(name)]: t for name, t in overrides.items()},
        null_values=list(fmt.null_markers),
        strings_can_be_null=True,
    )
    read_types: list[pa.DataType] = []
    try:
        reader = pacsv.open_csv(
            stream,
            read_options=_read_options(fmt),
            parse_options=_parse_options(fmt),
            convert_options=convert_options,
        )
        read_types = [field.type for field in reader.schema]
        schema = pa.schema([pa.field(n, storage_type(n, t)) for n, t in zip(names, read_types, strict=True)])
        sink.open(schema)
        for batch in reader:
            sink.write(pa.RecordBatch.from_arrays(batch.columns, names=names))
        stream.drain()
        if stream.quotes % 2:
            _refuse_unclosed_quote(source, fmt)
    except pa.ArrowInvalid as exc:
        sink.reset()
        widen = _widening(str(exc), names, read_types, explicit)
        if widen is not None:
            return widen
        raise _malformed(source, fmt, exc, arrow_names=arrow_names) from None
    except BaseException:
        sink.reset()
        raise
    finally:
        stream.close()
    rows = sink.close()
    if rows == 0:
        raise EmptyFile("The file has a header but no rows; a dataset needs at least one row.", reason="no_rows")
    return Converted(schema=schema, row_count=rows, source_sha256=stream.sha256, source_bytes=stream.bytes_read)


def _wider_type(t: pa.DataType) -> pa.DataType | None:
    if pa.types.is_string(t):
        return None
    if pa.types.is_int64(t):
        return pa.float64()
    if pa.types.is_date32(t):
        return pa.timestamp("s")
    return pa.string()


def _widening(
    message: str, names: list[str], read_types: list[pa.DataType], explicit: dict[str, pa.DataType]
) -> _Widen | None:
    """A conversion error in an inferred (not declared) column means Arrow guessed too narrow a type."""
    column = _COLUMN.search(message)
    if column is None or "conversion error" not in message or not read_types:
        return None
    index = int(column.group(1))
    if index >= len(names) or names[index] in explicit:
        return None
    wider = _wider_type(read_types[index])
    return None if wider is None else _Widen(names[index], wider)


def _malformed(source: Path, fmt: CsvFormat, exc: pa.ArrowInvalid, arrow_names: list[str] | None) -> Exception:
    message = str(exc)
    if "Empty CSV file" in message:
        return EmptyFile("The file has no header and no rows.", reason="no_columns")
    if "straddling object" in message:
        _refuse_unclosed_quote(source, fmt)
    record = _ROW.search(message)
    expected = _EXPECTED.search(message)
    line = _locate(source, fmt, int(record.group(1)) if record else None, expected)
    column = _COLUMN.search(message)
    context: dict[str, Any] = {"line": line, "detail": message}
    where = f"Line {line}" if line is not None else "The file"
    if expected is not None:
        got, want = int(expected.group(2)), int(expected.group(1))
        del context["detail"]  # Arrow's message quotes the whole row; keep data values out of errors
        context.update(expected_fields=want, fields=got)
        text = f"{where} has {got} fields where the header has {want}; check delimiters and quotes on that line."
    elif column is not None and arrow_names is not None and int(column.group(1)) < len(arrow_names):
        index = int(column.group(1))
        name = arrow_names[index] if fmt.header else f"column{index}"
        context["column"] = name
        detail = message.split(": ", 2)[-1]
        text = f"{where}: column {name!r} cannot be read as its type ({detail}). Fix the value or the type."
    elif "straddling object" in message:
        text = f"{where} starts a record longer than {BLOCK_BYTES >> 20} MiB, which Sluice does not read."
    else:
        text = f"{where} cannot be parsed as CSV ({message})."
    return MalformedFile(text, **context)


def _locate(source: Path, fmt: CsvFormat, record: int | None, expected: re.Match[str] | None) -> int | None:
    """The 1-based line where CSV record `record` starts (Arrow numbers records, skipping empty lines).

    Without a record number, the start line of the first record with a wrong field count or a CSV error.
    """
    want_fields = int(expected.group(1)) if expected else None
    lines = TextLines(source, fmt.codec)
    reader = csv.reader((text for _, text in lines), delimiter=fmt.delimiter, quotechar='"', doublequote=True)
    count = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return None
        except csv.Error:
            return start
        if not row:
            continue
        count += 1
        if record is not None and count == record:
            return start
        if record is None and want_fields is not None and count > 1 and len(row) != want_fields:
            return start


def _refuse_unclosed_quote(source: Path, fmt: CsvFormat) -> None:
    """Raise if a quoted field is never closed (Arrow would take the rest of the file as its value)."""
    line = _unclosed_quote_line(source, fmt)
    if line is not None:
        raise MalformedFile(
            f'Line {line} opens a quoted field that is never closed; add the closing quote (").', line=line
        )


def _unclosed_quote_line(source: Path, fmt: CsvFormat) -> int | None:
    """The line where a quoted field opens that is still open at the end of the file, if any."""
    open_since: int | None = None
    for number, text in TextLines(source, fmt.codec):
        pos = 0
        while True:
            if open_since is not None:
                end = text.find('"', pos)
                if end < 0:
                    break
                if text.startswith('"', end + 1):  # "" is an escaped quote inside the field
                    pos = end + 2
                    continue
                open_since, pos = None, end + 1
                continue
            start = text.find('"', pos)
            if start < 0:
                break
            if start == 0 or text[start - 1] == fmt.delimiter:  # a quote opens a field only at its start
                open_since = number
            pos = start + 1
    return open_since
