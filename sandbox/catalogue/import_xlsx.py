"""Excel workbooks (.xlsx): one sheet (the first, or a named one) read with openpyxl and then imported exactly as
CSV, so it gets the same type inference, null markers and line-numbered errors (a sheet row is a CSV line: the
header is line 1)."""

from __future__ import annotations

import csv
import dataclasses
import tempfile
import zipfile
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from sandbox.catalogue.errors import InvalidImportOptions, MalformedFile
from sandbox.catalogue.import_csv import CsvFormat, convert_csv
from sandbox.catalogue.import_sink import Converted, ParquetSink, sha256_file
from sandbox.catalogue.import_text import Progress


def convert_xlsx(source: Path, fmt: CsvFormat, sheet: str | None, sink: ParquetSink, progress: Progress
                 ) -> Converted:
    """Import one sheet of `source` through the CSV path; the recorded source hash is the workbook's."""
    with tempfile.TemporaryDirectory(prefix="sluice-xlsx-") as folder:
        text = Path(folder) / f"{source.stem}.csv"
        _sheet_to_csv(source, sheet, text)
        converted = convert_csv(text, dataclasses.replace(fmt, codec="utf-8", delimiter=","), sink, progress)
    return dataclasses.replace(converted, source_sha256=sha256_file(source), source_bytes=source.stat().st_size)


def _sheet_to_csv(source: Path, sheet: str | None, target: Path) -> None:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(source, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError) as exc:
        raise MalformedFile(f"{source.name!r} is not a readable .xlsx workbook ({type(exc).__name__}).",
                            line=None) from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise InvalidImportOptions(f"{source.name!r} has no sheet {sheet!r}; its sheets are "
                                       f"{', '.join(repr(s) for s in book.sheetnames)}.",
                                       code="sheet_not_found", sheet=sheet, sheets=list(book.sheetnames))
        rows = book[sheet].iter_rows(values_only=True) if sheet else book.worksheets[0].iter_rows(values_only=True)
        with target.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            for row in rows:
                writer.writerow([_text(v) for v in row])
    finally:
        book.close()


def _text(value: Any) -> str:
    """A cell as CSV text: dates without a time stay dates, booleans are true/false, empty cells are empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat(sep=" ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
