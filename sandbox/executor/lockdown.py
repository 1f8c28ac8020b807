"""Open a locked-down DuckDB instance whose only data is a set of prepared inputs, as Arrow views."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from sandbox.executor.errors import InputUnavailable
from sandbox.executor.types import EngineLimits, InputTable

MAX_EXPRESSION_DEPTH: Final = 250
SMALL_INPUT_ROWS: Final = 122_880  # DuckDB's row group (morsel) size: inputs within one morsel scan in one task
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def lockdown_statements(limits: EngineLimits, *, threads: int | None = None) -> tuple[str, ...]:
    """The `SET GLOBAL` statements that lock an instance down, in the order they must run.

    `temp_directory` must be set before external access is turned off; once external access or a file
    system is off it cannot come back; `lock_configuration` goes last, after which SET, RESET and PRAGMA fail.
    `threads` (at most `limits.threads`) overrides the limit's DuckDB thread count (see `instance_threads`).
    """
    threads = limits.threads if threads is None else min(threads, limits.threads)
    return (
        # No spilling: with LocalFileSystem disabled a spill would fail anyway, and an empty value keeps
        # server paths out of duckdb_settings(). Runs that outgrow memory_limit fail with out-of-memory.
        "SET GLOBAL temp_directory = ''",
        "SET GLOBAL allow_persistent_secrets = false",
        "SET GLOBAL secret_directory = ''",
        f"SET GLOBAL memory_limit = '{int(limits.memory_limit_mb)}MiB'",
        f"SET GLOBAL threads = {int(threads)}",
        f"SET GLOBAL max_execution_time = {int(limits.timeout_ms)}",
        f"SET GLOBAL max_expression_depth = {MAX_EXPRESSION_DEPTH}",
        "SET GLOBAL autoinstall_known_extensions = false",
        "SET GLOBAL autoload_known_extensions = false",
        "SET GLOBAL allow_community_extensions = false",
        "SET GLOBAL allow_unsigned_extensions = false",
        "SET GLOBAL python_enable_replacements = false",
        "SET GLOBAL enable_external_access = false",
        "SET GLOBAL disabled_filesystems = 'LocalFileSystem'",
        "SET GLOBAL lock_configuration = true",
    )


@dataclass(frozen=True)
class Instance:
    """A locked DuckDB database holding one set of inputs as views; runs use cursors on `con`."""

    con: duckdb.DuckDBPyConnection
    datasets: tuple[ds.Dataset | pa.Table, ...]


def open_instance(inputs: Sequence[InputTable], limits: EngineLimits) -> Instance:
    """A fresh in-memory DuckDB, locked down, with each input registered as a view over a Parquet dataset.

    The views scan `pyarrow.dataset` objects: no file path appears in view text or settings, and SQL has no
    way to open a file itself.
    """
    names = [checked_name(table.name) for table in inputs]
    if len({name.lower() for name in names}) != len(names):
        raise InputUnavailable("two inputs of a run share a name", code="duplicate_input")
    datasets = tuple(_open_dataset(table) for table in inputs)
    con = duckdb.connect(":memory:")
    try:
        for statement in lockdown_statements(limits, threads=instance_threads(datasets, limits)):
            con.execute(statement)
        for name, dataset in zip(names, datasets, strict=True):
            con.from_arrow(dataset).create_view(name, replace=False)
    except BaseException:
        con.close()
        raise
    return Instance(con=con, datasets=datasets)


def instance_threads(datasets: Sequence[ds.Dataset | pa.Table], limits: EngineLimits) -> int:
    """DuckDB threads for an instance over `datasets`: one when every input is a memory-mapped table and together
    they hold at most SMALL_INPUT_ROWS rows, else `limits.threads`.

    DuckDB splits a scan into tasks of one morsel (SMALL_INPUT_ROWS rows), so a scan of such inputs is one task
    whatever the thread count; a second thread then only adds the scheduler's hand-offs, which cost a small run
    about a fifth of its worker CPU (docs/performance.md). Larger inputs, and Parquet datasets (whose rows are not
    counted here), keep the configured count.
    """
    if limits.threads <= 1:
        return limits.threads
    rows = 0
    for data in datasets:
        if not isinstance(data, pa.Table):
            return limits.threads
        rows += data.num_rows
    return 1 if rows <= SMALL_INPUT_ROWS else limits.threads


def checked_name(name: str) -> str:
    """`name` if it is a plain SQL identifier."""
    if not _NAME.fullmatch(name):
        raise InputUnavailable("an input name must be a plain identifier (letters, digits, underscore)",
                               code="invalid_input_name")
    return name


def _open_dataset(table: InputTable) -> ds.Dataset | pa.Table:
    """The prepared input, exactly its columns, without schema metadata.

    An Arrow IPC file (`.arrow`) is memory-mapped as a zero-copy table: the scan is as fast as native DuckDB
    storage and the pages are shared by every worker through the page cache. A Parquet file is opened as a
    streaming dataset (slower to scan; used for inputs not prepared as IPC).
    """
    try:
        if table.path.suffix == ".arrow":
            mapped = pa.ipc.open_file(pa.memory_map(str(table.path), "r")).read_all()
            return mapped.replace_schema_metadata(None)
        dataset = ds.dataset(str(table.path), format="parquet")
        return dataset.replace_schema(dataset.schema.remove_metadata())
    except (OSError, ValueError, pa.ArrowException) as exc:  # ArrowInvalid is a ValueError
        raise InputUnavailable(f"input {table.name} could not be opened", detail=type(exc).__name__) from None
