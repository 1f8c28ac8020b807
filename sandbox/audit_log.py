"""The audit log in the control store: the sequencer, the stored Merkle tiles, checkpoints and proofs.

Requests commit audit records with no sequence number. `AuditLog.integrate` (the sequencer) locks the one
`audit_log_state` row (a row lock on PostgreSQL, the write lock on SQLite, so any number of API processes may
run it), takes committed records without a `seq` in id order, gives them the next gapless numbers, appends
their canonical JSON to the tree and stores the tiles that changed, all in one transaction.
`checkpoint` integrates everything committed, then signs the tree head, so every record committed before a
checkpoint is made is in it. The tree is stored as tiles (disclosure.tiles: levels 0, 4, 8, … sixteen hashes to a
row); proofs read O(log n) tiles in one query (`SqlNodes.reads` counts them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from disclosure.checkpoint import Checkpoint, sign_checkpoint
from disclosure.merkle import EMPTY_ROOT, leaf_hash
from disclosure.proofs import (
    ProofError,
    append_leaves,
    consistency_plan,
    evaluate,
    frontier_keys,
    inclusion_plan,
    node_id,
    node_key,
)
from disclosure.signing import KeyRing
from disclosure.tiles import TiledNodes, TileKey, changed_tiles
from metering.metrics import Metrics
from sandbox.audit import leaf_record
from sandbox.audit_sequence import leaf_bytes, number_pending
from sandbox.clock import Clock
from sandbox.errors import Conflict, InvalidInput
from sandbox.store.models import AuditCheckpoint, AuditEvent, AuditLogState, AuditLogTile

log = logging.getLogger("sluice.audit_log")
STATE_ID = 1
_EVENTS = AuditEvent.__table__
_TILES = AuditLogTile.__table__
_STATE = cast(Table, AuditLogState.__table__)


class SqlNodes(TiledNodes):
    """Reads stored nodes from their tiles with one `IN` query per proof, counting tiles read and queries (tests
    check both)."""

    def __init__(self, session: Session) -> None:
        super().__init__(self)
        self.session = session
        self.reads = 0
        self.queries = 0

    def read_tiles(self, keys: Sequence[TileKey]) -> Mapping[TileKey, bytes]:
        """The stored tiles among `keys`."""
        self.reads += len(keys)
        self.queries += 1
        ids = [node_id(level, index) for level, index in keys]
        rows = self.session.execute(select(_TILES.c.id, _TILES.c.hashes).where(_TILES.c.id.in_(ids)))
        return {node_key(i): bytes(h) for i, h in rows}


@dataclass(frozen=True)
class TreeHead:
    """The integrated tree: size and root."""

    size: int
    root: bytes


class AuditLog:
    """The sequencer and proof service over the control store; one per process, safe across processes."""

    def __init__(self, sessions: sessionmaker[Session], keyring: KeyRing, origin: str, clock: Clock, *,
                 batch: int = 5000) -> None:
        self.sessions = sessions
        self.keyring = keyring
        self.origin = origin
        self.clock = clock
        self.batch = batch
        self._local = threading.Lock()  # one integrating thread per process; other processes wait on the row

    # --- sequencing ------------------------------------------------------------------------------------

    def integrate(self) -> int:
        """Sequence and append every committed record that has no `seq` yet; returns how many.

        With nothing pending it only reads: an idle server's ticks neither lock the log-state row nor write.
        """
        if not self._any_pending():
            return 0
        total = 0
        with self._local:
            while True:
                done = self._retrying(self._integrate_batch)
                total += done
                if done < self.batch:
                    return total

    def _any_pending(self) -> bool:
        """True if some committed record has no `seq` yet (one indexed read, no lock)."""
        with self.sessions() as session:
            return session.scalar(select(_EVENTS.c.id).where(_EVENTS.c.seq.is_(None)).limit(1)) is not None

    def _retrying(self, step: Any) -> Any:
        for attempt in range(3):
            try:
                with self.sessions.begin() as session:
                    return step(session)
            except IntegrityError:  # two processes created the state row at once: the loser retries
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _integrate_batch(self, session: Session) -> int:
        head = lock_state(session, self.clock.now())
        pending = number_pending(session.connection(), head.size, self.batch)
        if not pending:
            return 0
        stored = SqlNodes(session)
        border = stored.read_nodes(frontier_keys(head.size))
        missing = [key for key in frontier_keys(head.size) if key not in border]
        if missing:
            raise ProofError(f"the log store lacks node(s) {missing[:3]} of the tree's right border")
        frontier = {level: border[(level, index)] for level, index in frontier_keys(head.size)}
        done = append_leaves(head.size, frontier, [leaf_hash(leaf_bytes(row)) for row in pending])
        _store_tiles(session, changed_tiles(done.nodes, stored.tiles))
        session.execute(update(_STATE).where(_STATE.c.id == STATE_ID)
                        .values(size=done.size, root=done.root, updated_at=self.clock.now()))
        return len(pending)

    def head(self) -> TreeHead:
        """The integrated tree as it stands (no lock)."""
        with self.sessions() as session:
            state = session.get(AuditLogState, STATE_ID)
            return TreeHead(state.size, bytes(state.root)) if state else TreeHead(0, EMPTY_ROOT)

    def pending(self) -> int:
        """Committed records not yet in the tree."""
        from sqlalchemy import func

        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(_EVENTS).where(_EVENTS.c.seq.is_(None)))
                       or 0)

    # --- checkpoints -----------------------------------------------------------------------------------

    def checkpoint(self, reason: str = "on demand", *, force: bool = False) -> AuditCheckpoint:
        """Integrate everything committed, then sign a checkpoint if the tree grew (or `force`).

        The timestamp is the clock's, or 1 µs after the previous checkpoint's if the clock is behind it, so
        each checkpoint is later than the last.
        """
        self.integrate()
        with self._local:
            return self._retrying(lambda s: self._checkpoint(s, reason[:200], force))

    def _checkpoint(self, session: Session, reason: str, force: bool) -> AuditCheckpoint:
        head = lock_state(session, self.clock.now())
        last = latest_checkpoint(session)
        if last is not None and last.size == head.size and not force:
            return last
        now = self.clock.now()
        if last is not None and now <= last.timestamp:
            now = last.timestamp + timedelta(microseconds=1)
        signed = sign_checkpoint(self.keyring, self.origin, head.size, head.root, now)
        row = AuditCheckpoint(size=head.size, root=head.root, timestamp=now,
                              kid=self.keyring.active_kid("checkpoint"), note=signed.note, reason=reason)
        session.add(row)
        session.flush()
        return row

    def latest(self) -> AuditCheckpoint | None:
        """The newest stored checkpoint."""
        with self.sessions() as session:
            return latest_checkpoint(session)

    # --- proofs ----------------------------------------------------------------------------------------

    def inclusion(self, session: Session, index: int, size: int) -> list[bytes]:
        """The inclusion proof of entry `index` in the tree of `size` (reads O(log n) nodes, one query)."""
        self._check_size(session, size)
        try:
            return evaluate(inclusion_plan(index, size), SqlNodes(session))
        except ProofError as exc:
            raise InvalidInput(str(exc), code="invalid_proof_request") from None

    def consistency(self, session: Session, first: int, second: int) -> list[bytes]:
        """The consistency proof from the tree of size `first` to the tree of size `second`."""
        self._check_size(session, second)
        try:
            return evaluate(consistency_plan(first, second), SqlNodes(session))
        except ProofError as exc:
            raise InvalidInput(str(exc), code="invalid_proof_request") from None

    def _check_size(self, session: Session, size: int) -> None:
        state = session.get(AuditLogState, STATE_ID)
        current = state.size if state else 0
        if size > current:
            raise Conflict(f"the log holds {current} records; tree size {size} does not exist yet",
                           code="tree_size_not_reached", tree_size=current)


def _store_tiles(session: Session, tiles: Mapping[TileKey, bytes]) -> None:
    """Write the tiles a batch changed (new ones inserted, the partial ones it extended replaced) in one statement.

    Plain DB-API calls skip SQLAlchemy's per-row processing. PostgreSQL gets the ids and lengths as arrays and the
    hashes as one concatenated bytea that the server slices (escaping a bytea array element by element costs
    more than the write); SQLite, in process, takes executemany.
    """
    ids = [node_id(*key) for key in tiles]
    blobs = list(tiles.values())
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        starts, at = [], 1
        for blob in blobs:
            starts.append(at)
            at += len(blob)
        connection.exec_driver_sql(
            "INSERT INTO audit_log_tiles (id, hashes) SELECT t.id, substring(%s::bytea FROM t.start FOR t.length) "
            "FROM unnest(%s::bigint[], %s::int[], %s::int[]) AS t(id, start, length) "
            "ON CONFLICT (id) DO UPDATE SET hashes = EXCLUDED.hashes",
            (b"".join(blobs), ids, starts, [len(b) for b in blobs]))
        return
    connection.exec_driver_sql("INSERT INTO audit_log_tiles (id, hashes) VALUES (?, ?) "
                               "ON CONFLICT (id) DO UPDATE SET hashes = excluded.hashes",
                               list(zip(ids, blobs, strict=True)))


def lock_state(session: Session, now: datetime) -> TreeHead:
    """Lock the log-state row (creating it for an empty log) and return the tree it describes."""
    state = session.execute(update(_STATE).where(_STATE.c.id == STATE_ID).values(size=_STATE.c.size)
                            .returning(_STATE.c.size, _STATE.c.root)).first()
    if state is None:
        session.add(AuditLogState(id=STATE_ID, size=0, root=EMPTY_ROOT, updated_at=now))
        session.flush()
        return TreeHead(0, EMPTY_ROOT)
    return TreeHead(int(state.size), bytes(state.root))


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    """The newest checkpoint row."""
    return session.scalar(select(AuditCheckpoint).order_by(AuditCheckpoint.timestamp.desc()).limit(1))


def checkpoint_of(row: AuditCheckpoint) -> Checkpoint:
    """A stored checkpoint as the disclosure type."""
    return Checkpoint(origin=row.note.split("\n", 1)[0], size=row.size, root=bytes(row.root),
                      timestamp=row.timestamp, note=row.note)


def records(session: Session, seqs: Sequence[int]) -> Iterator[dict[str, Any]]:
    """Leaf records for the given sequence numbers, in order."""
    rows = session.execute(select(_EVENTS).where(_EVENTS.c.seq.in_(list(seqs))).order_by(_EVENTS.c.seq)).mappings()
    for row in rows:
        yield leaf_record(row, int(row["seq"]))


class LogScheduler:
    """`sluice serve`'s background sequencer: integrates every `integrate_ms` and signs a checkpoint every
    `checkpoint_seconds` when the log grew. Failures are logged and kept in `last_error` (see /healthz); the
    records stay committed and are integrated on the next tick, and no checkpoint omits a committed record."""

    def __init__(self, log_: AuditLog, *, integrate_ms: int, checkpoint_seconds: float,
                 metrics: Metrics | None = None) -> None:
        self.log = log_
        self.metrics = metrics
        self._observed = float("-inf")
        self.integrate_s = max(integrate_ms, 10) / 1000.0
        self.checkpoint_s = checkpoint_seconds
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the background thread."""
        self._thread = threading.Thread(target=self._run, name="sluice-audit-sequencer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current tick, then integrate what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._tick(checkpoint=False)

    def _run(self) -> None:
        import time

        next_checkpoint = time.monotonic() + self.checkpoint_s
        while not self._stop.wait(self.integrate_s):
            due = self.checkpoint_s > 0 and time.monotonic() >= next_checkpoint
            self._tick(checkpoint=due)
            if due:
                next_checkpoint = time.monotonic() + self.checkpoint_s

    def _tick(self, *, checkpoint: bool) -> None:
        try:
            if checkpoint:
                self.log.checkpoint("schedule")
            else:
                self.log.integrate()
            self.last_error = None
            self._observe()
        except Exception as exc:  # keep serving; the records are durable and integrate on a later tick
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.exception("audit log sequencing failed")
            if self.metrics is not None:
                self.metrics.log_sequencing_failures.inc()

    def _observe(self) -> None:
        """Export how far the signed checkpoints lag the log (for the checkpoint-staleness alert)."""
        import time

        if self.metrics is None or time.monotonic() < self._observed + 5.0:
            return
        self._observed = time.monotonic()
        latest = self.log.latest()
        size = self.log.head().size
        self.metrics.log_pending.set(size - (latest.size if latest else 0))
        if latest is not None:
            stamp = latest.timestamp if latest.timestamp.tzinfo else latest.timestamp.replace(tzinfo=UTC)
            self.metrics.checkpoint_timestamp.set(stamp.timestamp())
