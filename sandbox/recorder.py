"""Group commit for the run path: concurrent runs' records and audit rows share one transaction."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.sql import Executable

from sandbox.prepared import Prepared
from sandbox.store.models import Base

log = logging.getLogger("sluice.recorder")


class Execute(NamedTuple):
    """A statement to run in the batch with its parameters (e.g. the UPDATE that ends a started run).

    With `expect_rows`, a different row count fails the call (StaleDataError): a conditional UPDATE such as
    `... WHERE status = 'running'` that matched nothing means another process changed the row first.

    With `grouped`, an INSERT that nothing else in the batch depends on (an audit row, a usage event) is held back
    and sent after the batch's other writes, together with the same statement's rows from every call in the batch:
    one multi-row INSERT per statement and transaction, with no ORM unit of work.
    """

    statement: Executable | Prepared
    params: dict[str, Any]
    expect_rows: int | None = None
    grouped: bool = False


Write = Base | Executable | Execute
"""A new row to insert, or a statement to execute in the batch."""
_Item = tuple[Sequence[Write], "Future[None]"]


class Recorder:
    """Leader-follower group commit. A caller that finds no commit in progress commits its own rows and then
    whatever other callers queued meanwhile; callers that arrive during a commit wait for the next batch.
    A single client pays no thread hand-off; concurrent runs share transactions. A batch that fails is
    retried one call at a time, so one bad call (e.g. a duplicate Idempotency-Key) fails alone."""

    def __init__(self, sessions: sessionmaker[Session], *, max_batch: int = 256) -> None:
        self._sessions = sessions
        self._engine: Engine | None = getattr(sessions, "kw", {}).get("bind")  # for batches of statements only
        self._max_batch = max_batch
        self._pending: list[_Item] = []
        self._lock = threading.Lock()
        self._leading = False
        self.batches = 0
        self.items = 0

    def record(self, rows: Sequence[Write], session: Session | None = None, timeout: float = 60.0) -> None:
        """Commit `rows` (new objects, or statements run in order) durably, together with concurrent callers'.

        A leader commits the batch in `session` (the caller's own, so a lone run costs one transaction, as
        without batching); without one, or when the session has no transaction open and the batch is statements
        only, it opens a connection (or a session, for ORM rows).
        """
        done: Future[None] = Future()
        with self._lock:
            self._pending.append((rows, done))
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead(session)
        done.result(timeout=timeout)

    def _lead(self, session: Session | None) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                if not batch:
                    self._leading = False
                    return
            self._commit(batch, session)
            session = None  # later batches get a fresh session

    def _commit(self, batch: list[_Item], session: Session | None = None) -> None:
        try:
            calls = [rows for rows, _ in batch]
            if session is not None and session.bind is self._engine and not session.in_transaction() and \
                    _statements_only(calls):
                session = None  # the session holds nothing to commit with them: a plain connection suffices
            if session is None and self._engine is not None and _statements_only(calls):
                with self._engine.begin() as connection:  # e.g. run starts: no ORM session needed
                    _apply(connection, calls)
            elif session is None:
                with self._sessions.begin() as fresh:
                    _apply(fresh, calls)
            else:
                try:
                    _apply(session, calls)
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
            self.batches += 1
            self.items += len(batch)
            for _, done in batch:
                done.set_result(None)
            return
        except SQLAlchemyError as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.info("batch of %d failed (%s); committing one by one", len(batch), type(exc).__name__)
        except BaseException as exc:  # pragma: no cover - unexpected; fail every waiter rather than hang
            for _, done in batch:
                done.set_exception(exc)
            return
        for rows, _ in batch:
            _forget_generated_keys(rows)
        for item in batch:
            self._commit([item])


def _statements_only(calls: Sequence[Sequence[Write]]) -> bool:
    return all(isinstance(row, Execute | Executable) for rows in calls for row in rows)


def _apply(session: Session | Connection, calls: Sequence[Sequence[Write]]) -> None:
    """Apply every call's writes in order; grouped INSERTs last, one executemany per statement and column set.
    A Connection takes statements only. `Prepared` statements run on the session's connection, in its
    transaction."""
    grouped: dict[tuple[Executable | Prepared, tuple[str, ...]], list[dict[str, Any]]] = {}
    for rows in calls:
        for row in rows:
            if isinstance(row, Execute):
                if row.grouped:
                    grouped.setdefault((row.statement, tuple(row.params)), []).append(row.params)
                    continue
                if isinstance(row.statement, Prepared):
                    count = row.statement.execute(_connection(session), row.params)
                else:
                    count = getattr(session.execute(row.statement, row.params), "rowcount", None)
                if row.expect_rows is not None and count != row.expect_rows:
                    raise StaleDataError(f"expected {row.expect_rows} row(s) to change, {count} did: the row was "
                                         "changed concurrently")
            elif isinstance(row, Executable):
                session.execute(row)
            else:
                assert isinstance(session, Session), "ORM rows need a session"
                session.add(row)
    for (statement, _), params in grouped.items():
        if isinstance(statement, Prepared):
            if len(params) == 1:
                statement.execute(_connection(session), params[0])
            else:
                statement.executemany(_connection(session), params)
        else:
            session.execute(statement, params[0] if len(params) == 1 else params)


def _connection(session: Session | Connection) -> Connection:
    """The connection to run a prepared statement on; a session first flushes its pending ORM rows, as
    `Session.execute` does (autoflush), so the statements see them in the same order."""
    if isinstance(session, Connection):
        return session
    if session.autoflush:
        session.flush()
    return session.connection()


def _forget_generated_keys(rows: Sequence[Write]) -> None:
    """After a rolled-back batch, let the database assign autoincrement keys again."""
    for row in rows:
        if isinstance(row, Execute | Executable):
            continue
        for column in inspect(type(row)).primary_key:
            auto = column.autoincrement is True or (column.autoincrement == "auto" and column.type.python_type is int)
            if auto and column.key:
                setattr(row, column.key, None)
