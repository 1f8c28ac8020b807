"""Server instances: each API process holds a lease for as long as it lives, so another process can tell whether a
`running` run is still in flight somewhere or was interrupted by a crash.

A lease is a lock that the operating system or the database releases when its holder dies:
- PostgreSQL: a session-level advisory lock on a dedicated connection (`pg_advisory_lock`); a crashed process's
  connection closes and the lock goes with it. Another process tests it with `pg_try_advisory_xact_lock`, which
  also keeps two recovering processes from recovering the same instance at once.
- SQLite (one server per store, see `sluice serve`): an exclusive `flock` on `SLUICE_HOME/instances/<id>.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from sandbox.store.types import new_id


def lease_key(instance: str) -> int:
    """The advisory-lock key of an instance (a signed 64-bit integer)."""
    return int.from_bytes(hashlib.sha256(f"sluice.instance.{instance}".encode()).digest()[:8], "big", signed=True)


class ServerLease:
    """This process's instance id and the lock that proves it is alive."""

    def __init__(self, engine: Engine, home: Path) -> None:
        self.engine = engine
        self.home = home
        self.id = new_id("srv")
        self._connection: Connection | None = None
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()

    def acquire(self) -> ServerLease:
        """Take the lease (idempotent)."""
        with self._lock:
            if self._connection is not None or self._file is not None:
                return self
            if self.engine.dialect.name == "postgresql":
                connection = self.engine.connect()
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lease_key(self.id)})
                connection.commit()
                self._connection = connection
            else:
                folder = self.home / "instances"
                folder.mkdir(parents=True, exist_ok=True)
                handle = open(folder / f"{self.id}.lock", "a+b")  # noqa: SIM115 - held for the process's life
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                handle.write(f"{os.getpid()}\n".encode())
                handle.flush()
                self._file = handle
        return self

    def release(self) -> None:
        """Give the lease up (at shutdown)."""
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    self._connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lease_key(self.id)})
                    self._connection.commit()
                with contextlib.suppress(Exception):
                    self._connection.close()
                self._connection = None
            if self._file is not None:
                path = Path(self._file.name)
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
                self._file.close()
                self._file = None
                path.unlink(missing_ok=True)


def claim_if_gone(session: Session, home: Path, instance: str | None) -> bool:
    """True when `instance` no longer runs (or is unknown), so its `running` runs were interrupted.

    On PostgreSQL the instance's lock is then held by this transaction until it commits, so a second process
    recovering at the same moment sees the instance as alive and leaves its runs to this one.
    """
    if instance is None:
        return True
    if session.get_bind().dialect.name == "postgresql":
        return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lease_key(instance)}))
    path = home / "instances" / f"{instance}.lock"
    if not path.exists():
        return True
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    path.unlink(missing_ok=True)
    return True
