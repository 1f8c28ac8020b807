"""Checkpoints: C2SP tlog-checkpoint text, C2SP signed-note Ed25519 signatures, and what fails to verify."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from disclosure.checkpoint import (
    CheckpointError,
    VerifierKey,
    load_verifier_key,
    parse_checkpoint,
    parse_verifier_key,
    sign_checkpoint,
    verifier_key,
    verify_checkpoint,
)
from disclosure.merkle import leaf_hash, root_from_leaf_hashes
from disclosure.signing import KeyRing

ORIGIN = "sluice.test/audit-log"
AT = datetime(2026, 6, 1, 9, 0, 0, 123456, tzinfo=UTC)


def ring(tmp_path: Path, name: str = "keys") -> KeyRing:
    keys = KeyRing(tmp_path / name)
    keys.ensure("checkpoint")
    return keys


def trusted(keys: KeyRing) -> VerifierKey:
    return VerifierKey(ORIGIN, next(iter(keys.public_keys("checkpoint").values())))


def test_checkpoint_text_is_the_c2sp_layout(tmp_path: Path) -> None:
    keys = ring(tmp_path)
    root = root_from_leaf_hashes([leaf_hash(b"a"), leaf_hash(b"b")])
    cp = sign_checkpoint(keys, ORIGIN, 2, root, AT)
    body, sig = cp.note.split("\n\n")
    assert body.split("\n") == [ORIGIN, "2", base64.b64encode(root).decode(), "Timestamp: 2026-06-01T09:00:00.123456Z"]
    assert sig.startswith(f"\u2014 {ORIGIN} ") and sig.endswith("\n")


def test_signature_is_plain_ed25519_over_the_note_text_with_the_c2sp_key_hash(tmp_path: Path) -> None:
    keys = ring(tmp_path)
    cp = sign_checkpoint(keys, ORIGIN, 5, b"\x07" * 32, AT)
    public = trusted(keys).key
    raw_key = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    blob = base64.b64decode(cp.note.rsplit(" ", 1)[1])
    assert blob[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + raw_key).digest()[:4]
    public.verify(blob[4:], cp.note.split("\n\n")[0].encode() + b"\n")  # raises if not exactly this text
    vkey = verifier_key(ORIGIN, public)
    assert vkey.startswith(f"{ORIGIN}+{blob[:4].hex()}+")
    assert verify_checkpoint(cp.note, [parse_verifier_key(vkey)]).size == 5


def test_a_verified_checkpoint_reads_back(tmp_path: Path) -> None:
    keys = ring(tmp_path)
    cp = sign_checkpoint(keys, ORIGIN, 7, b"\x01" * 32, AT)
    got = verify_checkpoint(cp.note, [trusted(keys)], origin=ORIGIN)
    assert (got.origin, got.size, got.root, got.timestamp) == (ORIGIN, 7, b"\x01" * 32, AT)


def test_a_checkpoint_signed_by_another_key_fails(tmp_path: Path) -> None:
    mine, theirs = ring(tmp_path, "mine"), ring(tmp_path, "theirs")
    cp = sign_checkpoint(theirs, ORIGIN, 3, b"\x02" * 32, AT)
    with pytest.raises(CheckpointError) as failed:
        verify_checkpoint(cp.note, [trusted(mine)])
    assert failed.value.code == "checkpoint_unknown_key"


@pytest.mark.parametrize("edit", [
    lambda n: n.replace("\n3\n", "\n4\n", 1),
    lambda n: n.replace("2026-06-01T09", "2026-06-01T08", 1),
    lambda n: n.replace(ORIGIN + "\n", ORIGIN + "x\n", 1),
])
def test_an_altered_checkpoint_fails(tmp_path: Path, edit: object) -> None:
    keys = ring(tmp_path)
    note = sign_checkpoint(keys, ORIGIN, 3, b"\x02" * 32, AT).note
    altered = edit(note)  # type: ignore[operator]
    assert altered != note
    with pytest.raises(CheckpointError):
        verify_checkpoint(altered, [trusted(keys)])


def test_a_checkpoint_of_another_log_fails(tmp_path: Path) -> None:
    keys = ring(tmp_path)
    note = sign_checkpoint(keys, ORIGIN, 3, b"\x02" * 32, AT).note
    with pytest.raises(CheckpointError) as failed:
        verify_checkpoint(note, [trusted(keys)], origin="other.test/log")
    assert failed.value.code == "checkpoint_wrong_origin"


@pytest.mark.parametrize("note", ["", "a\n1\nAAAA\n\n", "a\nx\n" + "A" * 44 + "\nTimestamp: 1\n\n\u2014 a AAAA\n",
                                  "a\n1\n" + "A" * 44 + "\n\n\u2014 a AAAAAAAA\n"])
def test_malformed_checkpoints_are_refused(note: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(note)


def test_verifier_keys_load_from_pem_or_c2sp_string(tmp_path: Path) -> None:
    keys = ring(tmp_path)
    kid = keys.active_kid("checkpoint")
    pem = keys.public_key_pem("checkpoint", kid)
    from_pem = load_verifier_key(pem, origin=ORIGIN)
    from_string = load_verifier_key(verifier_key(ORIGIN, from_pem.key).encode())
    assert from_pem.hash == from_string.hash
    with pytest.raises(CheckpointError):
        load_verifier_key(pem)
    with pytest.raises(CheckpointError):
        parse_verifier_key(verifier_key(ORIGIN, from_pem.key).replace(ORIGIN, "other", 1))


def test_rfc3339_writes_an_offset_time_as_its_utc_instant() -> None:
    from datetime import datetime, timedelta, timezone

    from disclosure.checkpoint import rfc3339

    when = datetime(2026, 6, 1, 8, 0, 0, 5, tzinfo=timezone(timedelta(hours=8)))
    assert rfc3339(when) == "2026-06-01T00:00:00.000005Z"
