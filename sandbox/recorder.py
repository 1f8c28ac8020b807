"""Group commit for the run path: concurrent runs' records and audit rows share one transaction."""

from __future__ import annotations

import logging
import threading
import time
from _thread import allocate_lock as _allocate_lock
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
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


class Pending:
    """One call's rows in the recorder, until a leader has committed them (or failed to).

    Its waiter is a bare lock, held from creation and released once by the leader: no Condition (a `Future`
    waits and is notified through one: its RLock, a new waiter lock and deque entry per wait, `notify_all`)."""

    __slots__ = ("_done", "committed_at", "error", "rows")

    def __init__(self, rows: Sequence[Write]) -> None:
        self.rows = rows
        self.error: BaseException | None = None
        self.committed_at = 0.0  # time.perf_counter() when its batch committed (or failed)
        self._done = _allocate_lock()
        self._done.acquire()

    def done(self) -> bool:
        """Whether its batch has committed or failed."""
        return self.committed_at != 0.0

    def wait(self, timeout: float = 60.0) -> None:
        """Block until committed; raise the error that failed it. Only a caller that knows a leader will take it
        (one is leading, or it led itself) may wait: see `Recorder.submit`."""
        if not self.committed_at:
            if not self._done.acquire(timeout=timeout):
                raise TimeoutError("the group commit did not finish in time")
            self._done.release()  # done: later waits return at once
        if self.error is not None:
            raise self.error

    def _finish(self, error: BaseException | None) -> None:
        self.error = error
        self.committed_at = time.perf_counter()
        self._done.release()


class Recorder:
    """Leader-follower group commit. A caller that finds no commit in progress commits its own rows and then
    whatever other callers queued meanwhile; callers that arrive during a commit wait for the next batch.
    A single client pays no thread hand-off; concurrent runs share transactions. A batch that fails is
    retried one call at a time, so one bad call (e.g. a duplicate Idempotency-Key) fails alone.

    `submit` queues rows without waiting when a leader is at work (it commits them before it stops leading), and
    leads otherwise: a run's start record costs no wait and no wake-up while other runs are committing."""

    def __init__(self, sessions: sessionmaker[Session], *, max_batch: int = 256) -> None:
        self._sessions = sessions
        self._engine: Engine | None = getattr(sessions, "kw", {}).get("bind")  # for batches of statements only
        self._max_batch = max_batch
        self._pending: list[Pending] = []
        self._lock = threading.Lock()
        self._leading = False
        self._held: Connection | None = None  # the leaders' connection between batches (one leader at a time)
        self.batches = 0
        self.items = 0

    def record(self, rows: Sequence[Write], session: Session | None = None, timeout: float = 60.0) -> None:
        """Commit `rows` (new objects, or statements run in order) durably, together with concurrent callers'.

        A leader commits the batch in `session` (the caller's own, so a lone run costs one transaction, as
        without batching); without one, or when the session has no transaction open and the batch is statements
        only, it opens a connection (or a session, for ORM rows).
        """
        self.submit(Pending(rows), session).wait(timeout)

    def submit(self, call: Pending, session: Session | None = None) -> Pending:
        """Queue `call` (a `Pending` made for it, submitted once) for the group commit and return at once when a
        leader is at work (it commits it before it stops leading, so it is durable soon, without this thread);
        otherwise lead now, in this thread, and return once it is committed. `call.wait()` blocks until it is, and
        raises its error."""
        with self._lock:
            self._pending.append(call)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead(session)
        return call

    def join(self, call: Pending) -> bool:
        """Queue `call` behind the commit in progress, if there is one (its leader commits it before it stops
        leading), and say so; with none in progress do nothing and return False (submit it then)."""
        with self._lock:
            if not self._leading:
                return False
            self._pending.append(call)
            return True

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

    def _commit(self, batch: list[Pending], session: Session | None = None) -> None:
        try:
            calls = [call.rows for call in batch]
            if session is not None and session.bind is self._engine and not session.in_transaction() and \
                    _statements_only(calls):
                session = None  # the session holds nothing to commit with them: a plain connection suffices
            if session is None and self._engine is not None and _statements_only(calls):
                self._on_connection(self._engine, calls)  # e.g. run starts: no ORM session needed
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
            for call in batch:
                call._finish(None)
            return
        except SQLAlchemyError as exc:
            if len(batch) == 1:
                batch[0]._finish(exc)
                return
            log.info("batch of %d failed (%s); committing one by one", len(batch), type(exc).__name__)
        except BaseException as exc:  # pragma: no cover - unexpected; fail every waiter rather than hang
            for call in batch:
                call._finish(exc)
            return
        for call in batch:
            _forget_generated_keys(call.rows)
        for call in batch:
            self._commit([call])

    def _on_connection(self, engine: Engine, calls: Sequence[Sequence[Write]]) -> None:
        """Commit statements on the connection the leaders keep between batches (a pool checkout, return and, on
        PostgreSQL, pre-ping per transaction cost about as much as a small batch's statements); a connection
        that failed is closed, and one found disconnected before the COMMIT was sent (so nothing of the batch can
        have been committed) is replaced once and the batch sent again."""
        for attempt in (0, 1):
            connection, self._held = self._held, None
            if connection is None or connection.closed or connection.invalidated:
                connection = engine.connect()
            applied = False
            try:
                with connection.begin():
                    _apply(connection, calls)
                    applied = True
            except DBAPIError as exc:
                connection.close()
                if attempt == 0 and exc.connection_invalidated and not applied:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            self._held = connection
            return

    def close(self) -> None:
        """Return the leaders' connection to the pool (at shutdown, before the engine is disposed)."""
        with self._lock:
            connection, self._held = self._held, None
        if connection is not None:
            connection.close()


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
