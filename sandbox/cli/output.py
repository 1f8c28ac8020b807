"""How the CLI prints: JSON with --json, otherwise readable tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console()
err = Console(stderr=True)


def emit(data: Any, as_json: bool, *, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print `data` as JSON or as a table / key-value list; `columns` entries are `key` or `key:header`."""
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
        return
    if isinstance(data, list):
        specs = [c.partition(":") for c in (columns or (list(data[0].keys()) if data else []))]
        cols = [(key, header or key) for key, _, header in specs]
        table = Table(title=escape(title) if title else None)
        for key, header in cols:
            if is_id(key):  # ids are copied by people: never cut or wrapped; other columns give way
                width = max([len(header)] + [len(_cell(row.get(key))) for row in data])
                table.add_column(escape(header), no_wrap=True, min_width=width, overflow="ignore")
            else:
                table.add_column(escape(header), overflow="fold")
        for row in data:
            table.add_row(*[escape(_cell(row.get(key), short_time=key.endswith(("_at", "_until", "_from"))))
                            for key, _ in cols])
        out.print(table)
    elif isinstance(data, dict):
        table = Table(show_header=False, title=escape(title) if title else None)
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        for k, v in data.items():
            table.add_row(escape(str(k)), escape(_cell(v)))
        out.print(table)
    else:
        out.print(escape(str(data)), soft_wrap=True)


def is_id(column: str) -> bool:
    """Whether a column holds ids (`id`, `job_id`, ...), which a table never truncates."""
    return column == "id" or column.endswith("_id") or column in ("code", "certificate_code")


def write_output(output: Path, data: bytes | str) -> str:
    """Write a download to `output`, or to stdout when it is `-`; returns where it went."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if str(output) == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
        return "-"
    from sandbox.cli.errors import CliFailure, Exit

    try:
        output.write_bytes(raw)
    except OSError as exc:
        raise CliFailure("output_unwritable", f"cannot write {output}: {exc.strerror}",
                         "check the folder exists and is writable", Exit.INPUT_FILE) from None
    return str(output)


def _cell(value: Any, short_time: bool = False) -> str:
    if short_time and isinstance(value, str) and len(value) >= 16 and value[10:11] == "T":
        return value[:16].replace("T", " ")  # minutes are enough in a table; --json has the full time
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return "" if value is None else str(value)
