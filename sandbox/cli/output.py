"""How the CLI prints: JSON with --json, otherwise readable tables."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True)


def emit(data: Any, as_json: bool, *, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print `data` as JSON or as a table / key-value list."""
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
        return
    if isinstance(data, list):
        cols = list(columns or (list(data[0].keys()) if data else []))
        table = Table(title=title)
        for c in cols:
            table.add_column(c)
        for row in data:
            table.add_row(*[_cell(row.get(c)) for c in cols])
        out.print(table)
    elif isinstance(data, dict):
        table = Table(show_header=False, title=title)
        table.add_column("field", style="bold")
        table.add_column("value")
        for k, v in data.items():
            table.add_row(str(k), _cell(v))
        out.print(table)
    else:
        out.print(data)


def _cell(value: Any) -> str:
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return "" if value is None else str(value)
