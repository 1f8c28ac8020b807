"""Snapshots of a population's audit state under SLUICE_HOME, so that a restart replays only what came after.

The store is the truth: `release_cells` rows are append-only with increasing ids within a population. A snapshot
holds the in-memory `PopulationAudit` (ledgers, history), the entity sets by digest, and a fingerprint of the
ledger rows it reflects (SHA-256 over `id, measure, digest` in id order, up to `last_cell`). It is used only when
the store's rows up to `last_cell` have the same fingerprint and its k is not above the store's; otherwise it is
ignored and the ledger is rebuilt from the store. A snapshot is a cache: losing or corrupting one costs a replay,
never a decision. It is written (atomically, under the population's lock, after a commit) once at least
`SNAPSHOT_EVERY` ledger cells were added since the last one. Like the control store under SQLite, the folder must
only be writable by Sluice: snapshots are Python pickles.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pyroaring import BitMap

from policy.release_audit import PopulationAudit

SNAPSHOT_EVERY = 2000
FORMAT = 2  # 2: ledgers modulo a prime, strict mode


@dataclass
class Snapshot:
    """A population's audit state as of ledger row `last_cell`."""

    population: str
    last_cell: int
    fingerprint: str
    audit: PopulationAudit
    operators: set[str] = field(default_factory=set)
    bitmaps: dict[str, BitMap] = field(default_factory=dict)
    format: int = FORMAT


class Fingerprint:
    """SHA-256 over ledger rows (id, measure, digest), fed in id order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, rows: Iterable[tuple[int, str, str]]) -> Fingerprint:
        """Add rows."""
        for cell_id, measure, digest in rows:
            self._hash.update(f"{cell_id}\x1f{measure}\x1f{digest}\x1e".encode())
        return self

    def copy(self) -> Fingerprint:
        """An independent copy."""
        other = Fingerprint()
        other._hash = self._hash.copy()
        return other

    def hexdigest(self) -> str:
        """The fingerprint so far."""
        return self._hash.hexdigest()


def path_for(home: Path, population: str) -> Path:
    """Where a population's snapshot lives."""
    return home / "ledgers" / f"{hashlib.sha256(population.encode()).hexdigest()[:32]}.pickle"


def save(home: Path, snapshot: Snapshot) -> None:
    """Write atomically (a temporary file, then a rename)."""
    path = path_for(home, snapshot.population)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        pickle.dump(snapshot, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(temporary, path)


def load(home: Path, population: str) -> Snapshot | None:
    """The population's snapshot, or None when there is none or it cannot be read."""
    path = path_for(home, population)
    try:
        with open(path, "rb") as handle:
            snapshot = pickle.load(handle)  # a cache in SLUICE_HOME, written only by Sluice
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
        return None
    if not isinstance(snapshot, Snapshot) or snapshot.format != FORMAT or snapshot.population != population:
        return None
    return snapshot
