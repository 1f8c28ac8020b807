"""Audit-log exports and their offline verifier (`sluice audit verify`).

An export is JSON lines. The first line is a header: the signed checkpoint (C2SP note), the tree size, whether
the export is filtered, and consistency proofs from tree sizes the requester named. Then one line per record,
in sequence order: {"record": {...}} with either "leaf_hash" (a full export: the hash the log stored) or
"proof" (a filtered export: the record's RFC 9162 inclusion proof against the checkpoint).

The verifier trusts only the keys it is given, never one inside the export. A full export is checked by
recomputing the whole tree from the records; a filtered one record by record through its proofs. Every other
checkpoint given must be consistent with the export's, and no checkpoint may be back-dated. The first
altered, missing or reordered entry is named.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from disclosure.checkpoint import Checkpoint, CheckpointError, VerifierKey, verify_checkpoint
from disclosure.merkle import leaf_hash, root_from_leaf_hashes, roots_at, verify_consistency, verify_inclusion
from disclosure.signing import SigningError, canonical_json

EXPORT_TYPE = "sluice.audit-export/v1"


@dataclass
class Report:
    """What the verifier found: `ok` only if every check passed; `problems` in the order found."""

    ok: bool = True
    tree_size: int = 0
    entries: int = 0
    filtered: bool = False
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    first_bad_entry: int | None = None
    first_bad_line: int | None = None

    def fail(self, message: str, *, entry: int | None = None, line: int | None = None) -> None:
        """Record a failed check (the first entry and line named are kept)."""
        self.ok = False
        self.problems.append(message)
        if entry is not None and self.first_bad_entry is None:
            self.first_bad_entry = entry
            self.first_bad_line = line

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "tree_size": self.tree_size, "entries": self.entries, "filtered": self.filtered,
                "first_bad_entry": self.first_bad_entry, "first_bad_line": self.first_bad_line,
                "checkpoints": self.checkpoints, "problems": self.problems}


class _Stop(Exception):
    """Verification cannot go on (e.g. the checkpoint does not verify)."""


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None


def verify_export(data: bytes, keys: Sequence[VerifierKey], extra_checkpoints: Iterable[str] = (),
                  *, origin: str | None = None) -> Report:
    """Verify an export offline against trusted `keys` and any other checkpoints (signed notes) held."""
    report = Report()
    with contextlib.suppress(_Stop):
        _verify(data, list(keys), list(extra_checkpoints), origin, report)
    return report


def _verify(data: bytes, keys: list[VerifierKey], extra: list[str], origin: str | None, report: Report) -> None:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        report.fail("the export is empty")
        raise _Stop
    try:
        header = json.loads(lines[0])
        if not isinstance(header, dict) or header.get("type") != EXPORT_TYPE:
            raise ValueError
    except ValueError:
        report.fail(f"line 1 is not a {EXPORT_TYPE} header")
        raise _Stop from None
    try:
        cp = verify_checkpoint(str(header.get("checkpoint", "")), keys, origin=origin)
    except CheckpointError as exc:
        report.fail(f"the export's checkpoint does not verify: {exc.message}")
        raise _Stop from None
    report.tree_size, report.filtered = cp.size, bool(header.get("filtered"))
    report.checkpoints.append({"size": cp.size, "timestamp": cp.timestamp.isoformat(), "source": "export"})
    entries = _parse_entries(lines[1:], report)
    report.entries = len(entries)
    others = _other_checkpoints(extra, keys, cp, report)
    if report.filtered:
        _verify_filtered(entries, cp, report)
        _consistency_from_header(header, others, cp, report)
    else:
        _verify_full(entries, cp, others, report)


def _parse_entries(lines: list[bytes], report: Report) -> list[tuple[int, int, bytes, dict[str, Any]]]:
    """(line number, seq, recomputed leaf hash, entry) per line; unreadable lines are failures."""
    out = []
    for number, raw in enumerate(lines, start=2):
        try:
            entry = json.loads(raw)
            record = entry["record"]
            seq = record["seq"]
            if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(record, dict):
                raise ValueError
            leaf = leaf_hash(canonical_json(record))
        except (ValueError, KeyError, TypeError, SigningError):
            report.fail(f"line {number} is not a readable record (altered?)", entry=_guess_seq(raw), line=number)
            continue
        out.append((number, seq, leaf, entry))
    return out


def _guess_seq(raw: bytes) -> int | None:
    marker = b'"seq":'
    at = raw.find(marker)
    if at < 0:
        return None
    digits = bytes(c for c in raw[at + len(marker):at + len(marker) + 20] if 48 <= c <= 57)
    return int(digits) if digits else None


def _other_checkpoints(notes: list[str], keys: list[VerifierKey], cp: Checkpoint, report: Report
                       ) -> list[Checkpoint]:
    """Verify the other checkpoints' signatures and that time and size agree (no back-dating)."""
    held = []
    for note in notes:
        try:
            other = verify_checkpoint(note, keys, origin=cp.origin)
        except CheckpointError as exc:
            report.fail(f"a checkpoint given does not verify: {exc.message}")
            continue
        held.append(other)
        report.checkpoints.append({"size": other.size, "timestamp": other.timestamp.isoformat(), "source": "given"})
    ordered = sorted([cp, *held], key=lambda c: (c.size, c.timestamp))
    for a, b in itertools.pairwise(ordered):
        if a.size == b.size and a.root != b.root:
            report.fail(f"two checkpoints of size {a.size} have different roots: the log forked")
        elif a.size < b.size and a.timestamp >= b.timestamp:
            report.fail(f"the checkpoint of size {b.size} is dated {b.timestamp.isoformat()}, not after the "
                        f"smaller checkpoint of size {a.size} ({a.timestamp.isoformat()}): it is back-dated")
    return held


def _verify_full(entries: list[tuple[int, int, bytes, dict[str, Any]]], cp: Checkpoint, others: list[Checkpoint],
                 report: Report) -> None:
    where = {seq: number for number, seq, _, _ in entries}
    for position, (number, seq, _, _) in enumerate(entries):
        if seq != position:
            if seq > position and position not in where:
                report.fail(f"entry {position} is missing (line {number} holds entry {seq})", entry=position,
                            line=number)
            else:
                report.fail(f"entries are out of order: line {number} holds entry {seq} where entry {position} "
                            "belongs", entry=min(seq, position), line=number)
            break
    if len(entries) < cp.size and report.ok:
        report.fail(f"the export is truncated: it holds {len(entries)} entries, the checkpoint covers {cp.size}; "
                    f"entry {len(entries)} is missing", entry=len(entries), line=len(entries) + 2)
    if len(entries) > cp.size:
        report.fail(f"the export holds {len(entries)} entries, more than the {cp.size} its checkpoint covers",
                    entry=cp.size, line=cp.size + 2)
    if not report.ok:
        return
    leaves = [leaf for _, _, leaf, _ in entries]
    if root_from_leaf_hashes(leaves) == cp.root:
        _check_claimed_leaves(entries, report)
        for other in others:
            _prefix_consistent(leaves, other, report)
        return
    _locate_alteration(entries, leaves, cp, others, report)


def _check_claimed_leaves(entries: list[tuple[int, int, bytes, dict[str, Any]]], report: Report) -> None:
    for number, seq, leaf, entry in entries:
        try:
            claimed = _b64(entry.get("leaf_hash"), "leaf_hash")
        except ValueError:
            claimed = b""
        if claimed != leaf:
            report.fail(f"line {number}: the leaf_hash field of entry {seq} was altered", entry=seq, line=number)
            return


def _prefix_consistent(leaves: list[bytes], other: Checkpoint, report: Report) -> None:
    if other.size > len(leaves):
        report.fail(f"the checkpoint of size {other.size} is newer than the export (size {len(leaves)}); "
                    "export again to check it")
        return
    if roots_at(leaves, [other.size])[other.size] != other.root:
        report.fail(f"the log is not consistent with the checkpoint of size {other.size}: entries before "
                    f"{other.size} differ from what that checkpoint signed")


def _locate_alteration(entries: list[tuple[int, int, bytes, dict[str, Any]]], leaves: list[bytes],
                       cp: Checkpoint, others: list[Checkpoint], report: Report) -> None:
    claimed: list[bytes] = []
    for _, _, _, entry in entries:
        try:
            claimed.append(_b64(entry.get("leaf_hash"), "leaf_hash"))
        except ValueError:
            claimed = []
            break
    if len(claimed) == len(leaves) and root_from_leaf_hashes(claimed) == cp.root:
        for (number, seq, leaf, _), stored in zip(entries, claimed, strict=True):
            if leaf != stored:
                report.fail(f"entry {seq} (line {number}) was altered: its record does not hash to the leaf the "
                            "signed tree holds", entry=seq, line=number)
                return
    good, bad = 0, cp.size
    sizes = sorted({o.size for o in others if 0 < o.size <= len(leaves)})
    roots = roots_at(leaves, sizes)
    for other in sorted(others, key=lambda o: o.size):
        if other.size in roots:
            if roots[other.size] == other.root:
                good = max(good, other.size)
            else:
                bad = min(bad, other.size)
    report.fail(f"the records do not match the signed tree head: an entry in [{good}, {bad}) was altered (the "
                "hashes in the export were altered too, so it cannot be narrowed further)", entry=good,
                line=good + 2)


def _verify_filtered(entries: list[tuple[int, int, bytes, dict[str, Any]]], cp: Checkpoint, report: Report
                     ) -> None:
    previous = -1
    for number, seq, leaf, entry in entries:
        if seq <= previous:
            report.fail(f"entries are out of order: line {number} holds entry {seq} after entry {previous}",
                        entry=seq, line=number)
            return
        previous = seq
        try:
            proof = [_b64(p, "proof") for p in entry.get("proof") or []]
        except ValueError:
            proof = []
        if seq >= cp.size or not verify_inclusion(seq, cp.size, leaf, proof, cp.root):
            report.fail(f"entry {seq} (line {number}) was altered or is not in the log: its inclusion proof "
                        "does not verify", entry=seq, line=number)
            return


def _consistency_from_header(header: dict[str, Any], others: list[Checkpoint], cp: Checkpoint, report: Report
                             ) -> None:
    proofs = {}
    for item in header.get("consistency") or []:
        if isinstance(item, dict) and isinstance(item.get("from"), int):
            try:
                proofs[item["from"]] = [_b64(p, "proof") for p in item.get("proof") or []]
            except ValueError:
                continue
    for other in others:
        if other.size > cp.size:
            report.fail(f"the checkpoint of size {other.size} is newer than the export (size {cp.size})")
        elif other.size not in proofs:
            report.fail(f"the export has no consistency proof from size {other.size}; export with that checkpoint")
        elif not verify_consistency(other.size, cp.size, other.root, cp.root, proofs[other.size]):
            report.fail(f"the log is not consistent with the checkpoint of size {other.size}")
