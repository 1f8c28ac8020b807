"""An LRU-bounded cache of locked instances, one per instance key, rebuilt when its inputs change."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from sandbox.executor.errors import InputUnavailable
from sandbox.executor.lockdown import Instance, open_instance
from sandbox.executor.types import EngineLimits, InputTable

Signature = tuple[tuple[str, str, int, int], ...]


@dataclass(frozen=True)
class _Entry:
    signature: Signature
    instance: Instance


class InstanceCache:
    """Locked instances keyed by instance key; at most `max_instances`, least recently used evicted first."""

    def __init__(self, limits: EngineLimits, *, max_instances: int) -> None:
        if max_instances < 1:
            raise ValueError("max_instances must be at least 1")
        self._limits = limits
        self._max = max_instances
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.opened = 0

    def get(self, key: str, inputs: Sequence[InputTable]) -> Instance:
        """The instance for `key`, opened (or reopened, if its input files changed) as needed."""
        signature = input_signature(inputs)
        entry = self._entries.get(key)
        if entry is not None and entry.signature == signature:
            self._entries.move_to_end(key)
            return entry.instance
        if entry is not None:
            self._drop(key)
        instance = open_instance(inputs, self._limits)
        self.opened += 1
        self._entries[key] = _Entry(signature, instance)
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))
        return instance

    def keys(self) -> list[str]:
        """Cached instance keys, least recently used first."""
        return list(self._entries)

    def close(self) -> None:
        """Close every cached instance."""
        for key in list(self._entries):
            self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        entry.instance.con.close()


def input_signature(inputs: Sequence[InputTable]) -> Signature:
    """Name, path, size and modification time of each input: a changed file means a new instance."""
    out = []
    for table in inputs:
        try:
            st = os.stat(table.path)
        except OSError as exc:
            raise InputUnavailable(f"input {table.name} could not be opened",
                                   detail=type(exc).__name__) from None
        out.append((table.name, str(table.path), st.st_size, st.st_mtime_ns))
    return tuple(out)
