"""Populations: each one's dense entity index, built from the raw entity ids when inputs are prepared.

A population is an entity id space declared at registration (`residents` and `clinic_visits` share `person_id`,
so they share `city_person`). The release audit represents every released cell's entity set as a Roaring bitmap
over a dense index of the population's entities, so the index must be the same for every grant (hash masks differ
per grant, so it is built from the raw ids, before masking), every dataset version and every restart.

The index is an append-only list of Arrow IPC chunk files under `SLUICE_HOME/populations/<population>/`: entity
`i` of the concatenated chunks has index `i + 1`; 0 stands for "no entity" (a NULL id). New ids are appended
under an exclusive file lock (processes preparing inputs at the same time see one consistent list), each chunk
written to a temporary name, fsynced and renamed into place. Ids are compared by their text form.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from sandbox.errors import InvalidInput

POPULATION_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
NO_ENTITY = 0
_CHUNK = re.compile(r"^ids-(\d{6})\.arrow$")


def check_population_name(name: str) -> str:
    """A population name: `^[a-z][a-z0-9_]{0,62}$`."""
    if not POPULATION_RE.match(name):
        raise InvalidInput("population must match ^[a-z][a-z0-9_]{0,62}$", code="invalid_population",
                           population=name)
    return name


def id_text(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """Entity ids as text (binary ids as hex), the form the index compares."""
    chunked = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
    if pa.types.is_binary(chunked.type) or pa.types.is_large_binary(chunked.type) or pa.types.is_fixed_size_binary(
            chunked.type):
        return pa.chunked_array([pa.array([None if v is None else v.hex() for v in chunked.to_pylist()],
                                          type=pa.string())])
    return pc.cast(chunked, pa.string())


class EntityIndex:
    """The dense entity indexes of every population under one SLUICE_HOME."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._known: dict[str, tuple[int, pa.Array]] = {}  # population -> (chunks read, ids)

    def indexes(self, population: str, ids: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
        """The dense index (UINT32, 0 for NULL) of each raw id, adding ids the population has not seen yet."""
        check_population_name(population)
        text = id_text(ids)
        with self._lock, self._locked(population):
            known = self._load(population)
            fresh = pc.unique(text).drop_null()
            if len(known):
                fresh = fresh.filter(pc.invert(pc.is_in(fresh, value_set=known)))
            if len(fresh):
                known = self._append(population, fresh, known)
        position = pc.index_in(text, value_set=known)
        return pc.cast(pc.fill_null(pc.add(position, 1), NO_ENTITY), pa.uint32())

    def size(self, population: str) -> int:
        """Entities indexed so far."""
        with self._lock, self._locked(population):
            return len(self._load(population))

    def _folder(self, population: str) -> Path:
        return self.root / population

    @contextmanager
    def _locked(self, population: str) -> Iterator[None]:
        folder = self._folder(population)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _chunks(self, population: str) -> list[Path]:
        folder = self._folder(population)
        return sorted(p for p in folder.iterdir() if _CHUNK.match(p.name))

    def _load(self, population: str) -> pa.Array:
        """(Caller holds the locks.) Every id of the population, in index order."""
        chunks = self._chunks(population)
        read, ids = self._known.get(population, (0, pa.array([], type=pa.string())))
        if read < len(chunks):
            more = [pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all().column(0)
                    for path in chunks[read:]]
            ids = pa.concat_arrays([ids, *(c.combine_chunks() for c in more)])
            self._known[population] = (len(chunks), ids)
        return ids

    def _append(self, population: str, fresh: pa.Array, known: pa.Array) -> pa.Array:
        folder = self._folder(population)
        number = len(self._chunks(population)) + 1
        path = folder / f"ids-{number:06d}.arrow"
        tmp = folder / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        table = pa.table({"id": fresh.cast(pa.string())})
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        ids = pa.concat_arrays([known, table.column(0).combine_chunks()])
        self._known[population] = (number, ids)
        return ids
