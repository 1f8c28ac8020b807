"""The run path's hot statements, compiled once and sent straight to the driver (docs/performance.md).

`Connection.execute` spends, for every call, about as much Python as the run path's whole statement needs: it
generates and hashes the statement's cache key (for a wide SELECT, the largest part), looks the compiled form up,
constructs the parameters, processes them, and sets up a result with its metadata. A `Prepared` statement does the
compile once per dialect and parameter key set and keeps the SQL text and SQLAlchemy's own bind and result
processors; a call then only processes the values and runs the DBAPI cursor of the caller's `Connection`, in the
caller's transaction. The SQL text, the driver parameters and the values read back are those `Connection.execute`
would send and return, and DBAPI errors are raised wrapped in the same SQLAlchemy exceptions.

It takes the ordinary path whenever that could differ: a statement with Python-side defaults to compute,
RETURNING, post-compile or escaped parameters, and a connection with event listeners, echo or execution options.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler

_MISSING: Any = object()
Processor = Callable[[Any], Any]


class _Plan(NamedTuple):
    """A statement compiled for one dialect and parameter key set: its SQL text, whether the driver takes
    positional parameters, and for each rendered parameter (in the driver's order) its key in the caller's
    parameters, its fixed value when the caller gives none, and SQLAlchemy's bind processor for it; and the types
    of the columns it returns (a SELECT's)."""

    sql: str
    positional: bool
    binds: tuple[tuple[str, str, Any, Processor | None], ...]
    result_types: tuple[Any, ...]

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for one call, processed as `Connection.execute` would process them."""
        values = []
        for _, key, fixed, process in self.binds:
            value = params.get(key, fixed)
            if value is _MISSING:
                raise KeyError(f"a value is required for bind parameter {key!r}")
            values.append(value if process is None else process(value))
        if self.positional:
            return tuple(values)
        return {name: value for (name, _, _, _), value in zip(self.binds, values, strict=True)}


class Prepared:
    """A Core statement compiled once per dialect and parameter key set, run on a Connection's DBAPI cursor."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._plans: weakref.WeakKeyDictionary[Dialect, dict[tuple[str, ...], _Plan | None]] = \
            weakref.WeakKeyDictionary()
        self._readers: weakref.WeakKeyDictionary[Dialect, tuple[Processor | None, ...]] = \
            weakref.WeakKeyDictionary()

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> int | None:
        """Run the statement (an INSERT or UPDATE) once; the number of rows it matched."""
        plan = self.plan(connection, tuple(params))
        if plan is None:
            return getattr(connection.execute(self.statement, dict(params)), "rowcount", None)
        args = plan.args(params)
        cursor = connection.connection.cursor()
        try:
            cursor.execute(plan.sql, args)
            return int(cursor.rowcount)
        except Exception as exc:
            connection._handle_dbapi_exception(exc, plan.sql, args, cursor, None)
        finally:
            cursor.close()

    def executemany(self, connection: Connection, many: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set (all with the same keys) in one driver call."""
        keys = tuple(many[0])
        plan = self.plan(connection, keys)
        if plan is None or any(tuple(params) != keys for params in many):
            connection.execute(self.statement, [dict(params) for params in many])
            return
        args: Any = [plan.args(params) for params in many]
        cursor = connection.connection.cursor()
        try:
            cursor.executemany(plan.sql, args)
        except Exception as exc:
            connection._handle_dbapi_exception(exc, plan.sql, args, cursor, None)
        finally:
            cursor.close()

    def first(self, connection: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run the statement (a SELECT) and return its first row, its values processed as a Core result's, or
        None when it has no row."""
        plan = self.plan(connection, tuple(params))
        if plan is None or not plan.result_types:
            row = connection.execute(self.statement, dict(params)).first()
            return None if row is None else tuple(row)
        args = plan.args(params)
        cursor = connection.connection.cursor()
        try:
            cursor.execute(plan.sql, args)
            raw = cursor.fetchone()
            description = cursor.description
        except Exception as exc:
            connection._handle_dbapi_exception(exc, plan.sql, args, cursor, None)
        finally:
            cursor.close()
        readers = self._readers.get(connection.dialect)
        if readers is None:
            readers = self._readers[connection.dialect] = _readers(plan, connection.dialect, description)
        if raw is None:
            return None
        return tuple(value if read is None else read(value) for value, read in zip(raw, readers, strict=True))

    def plan(self, connection: Connection, keys: tuple[str, ...]) -> _Plan | None:
        """The compiled plan for `connection` and parameter `keys`, or None when the ordinary path must run."""
        if connection._has_events or connection.engine._has_events or connection.dialect._has_events or \
                connection._echo or connection._execution_options:
            return None
        plans = self._plans.get(connection.dialect)
        if plans is None:
            plans = self._plans[connection.dialect] = {}
        if keys not in plans:
            plans[keys] = _compile(self.statement, connection.dialect, keys)
        return plans[keys]


def _compile(statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Plan | None:
    """The plan of `statement` for `dialect` given parameter `keys`; None when it needs the ordinary path."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
    if not isinstance(compiled, SQLCompiler) or compiled.insert_prefetch or compiled.update_prefetch or \
            compiled.effective_returning or compiled.literal_execute_params or compiled.post_compile_params or \
            compiled.escaped_bind_names:
        return None
    processors = compiled._bind_processors
    by_name: dict[str, tuple[str, str, Any, Processor | None]] = {}
    for bind, name in compiled.bind_names.items():
        process = processors.get(name)
        if bind.callable is not None or not (process is None or callable(process)):
            return None
        by_name[name] = (name, bind.key, _MISSING if bind.required else bind.value, process)
    order = compiled.positiontup if compiled.positional else list(by_name)
    if order is None or any(name not in by_name for name in order):
        return None
    result_types = tuple(entry.type for entry in compiled._result_columns)  # a SELECT's columns, in order
    return _Plan(compiled.string, bool(compiled.positional), tuple(by_name[name] for name in order), result_types)


def _readers(plan: _Plan, dialect: Dialect, description: Any) -> tuple[Processor | None, ...]:
    """Each result column's processor, as a Core result finds it (by the column's type and the driver's type
    code for it)."""
    if description is None or len(description) != len(plan.result_types):
        raise RuntimeError("the driver's result columns do not match the compiled statement's")
    return tuple(kind._cached_result_processor(dialect, column[1])
                 for kind, column in zip(plan.result_types, description, strict=True))
