"""A witness: keeps the last checkpoint it accepted and accepts a new one only if it is consistent with it.

Like a C2SP witness it checks, for each new checkpoint: the signature by a trusted key, the same origin, a
tree at least as large, a timestamp later than the last (no back-dating, no replay of an older head), and an
RFC 9162 consistency proof from the old tree to the new one. The state file is replaced atomically, so a
crash leaves the old or the new checkpoint, never neither.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from disclosure.checkpoint import Checkpoint, CheckpointError, VerifierKey, verify_checkpoint
from disclosure.merkle import verify_consistency


@dataclass(frozen=True)
class WitnessResult:
    """What the witness did: accepted (and the new head), or refused with a reason."""

    accepted: bool
    reason: str
    previous: Checkpoint | None
    current: Checkpoint | None


class Witness:
    """A witness over one state file (JSON: the origin and the last accepted signed note)."""

    def __init__(self, state_file: Path, keys: Sequence[VerifierKey]) -> None:
        self.state_file = state_file
        self.keys = list(keys)

    def last(self) -> Checkpoint | None:
        """The last accepted checkpoint, re-verified against the trusted keys."""
        if not self.state_file.exists():
            return None
        data = json.loads(self.state_file.read_text("utf-8"))
        return verify_checkpoint(data["note"], self.keys, origin=data["origin"])

    def accept(self, note: str, proof: Sequence[bytes]) -> WitnessResult:
        """Accept `note` if it is signed, later and consistent with the last accepted checkpoint."""
        previous = self.last()
        try:
            new = verify_checkpoint(note, self.keys, origin=previous.origin if previous else None)
        except CheckpointError as exc:
            return WitnessResult(False, exc.message, previous, None)
        if previous is not None:
            if new.note == previous.note:
                return WitnessResult(True, "already accepted", previous, new)
            if new.size < previous.size:
                return WitnessResult(False, f"the log shrank from {previous.size} to {new.size} entries",
                                     previous, new)
            if new.timestamp <= previous.timestamp:
                return WitnessResult(False, f"the checkpoint is dated {new.timestamp.isoformat()}, not after the "
                                     f"last accepted one ({previous.timestamp.isoformat()}): back-dated or replayed",
                                     previous, new)
            if new.size == previous.size and new.root != previous.root:
                return WitnessResult(False, f"two different trees of size {new.size}: the log forked",
                                     previous, new)
            if new.size > previous.size and not verify_consistency(previous.size, new.size, previous.root,
                                                                   new.root, list(proof)):
                return WitnessResult(False, f"the tree of size {new.size} is not consistent with the accepted "
                                     f"tree of size {previous.size}: entries were altered or removed",
                                     previous, new)
        self._store(new)
        return WitnessResult(True, "first checkpoint (trusted on first use)" if previous is None
                             else f"consistent with size {previous.size}", previous, new)

    def _store(self, cp: Checkpoint) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps({"origin": cp.origin, "size": cp.size, "note": cp.note}), "utf-8")
        os.replace(temp, self.state_file)
