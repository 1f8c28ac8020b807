"""Checkpoints: signed tree heads in the C2SP tlog-checkpoint format, signed as C2SP signed notes (Ed25519).

    <origin>
    <tree size>
    <base64 root hash>
    Timestamp: <RFC 3339 UTC time>

    — <origin> <base64(4-byte key hash || 64-byte Ed25519 signature)>

The signature covers the note text (every line above the blank line, each with its newline) and nothing else:
no Sluice context prefix, so any C2SP verifier or witness accepts it. The key hash is the first four bytes of
SHA-256(name || 0x0A || 0x01 || public key). The checkpoint key signs nothing but checkpoints
(`KeyRing.sign` refuses the checkpoint context; only `KeyRing.sign_note` uses it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from disclosure.errors import DisclosureError
from disclosure.merkle import HASH_BYTES
from disclosure.signing import KeyRing, load_public_key_pem

SIG_PREFIX = "\u2014 "  # em dash and a space start every signature line
ED25519_TYPE = b"\x01"
TIMESTAMP_KEY = "Timestamp: "


class CheckpointError(DisclosureError):
    """A checkpoint that cannot be parsed or does not verify; `code` says which check failed."""

    code = "checkpoint_invalid"


def rfc3339(when: datetime) -> str:
    """An aware time as RFC 3339 UTC with microseconds: 2026-06-01T09:00:00.000000Z."""
    if when.tzinfo is None:
        raise CheckpointError("times must be aware (UTC)", code="naive_time")
    utc = when.astimezone(UTC) if when.utcoffset() else when
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}" \
           f".{utc.microsecond:06d}Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse the RFC 3339 UTC form `rfc3339` writes."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        raise CheckpointError(f"not an RFC 3339 UTC time: {text!r}", code="checkpoint_malformed") from None


def key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The C2SP signed-note key hash: SHA-256(name || '\\n' || 0x01 || key)[:4]."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_TYPE + raw).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The C2SP verifier key string: <name>+<hex key hash>+<base64(0x01 || key)>."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{name}+{key_hash(name, public_key).hex()}+{base64.b64encode(ED25519_TYPE + raw).decode('ascii')}"


@dataclass(frozen=True)
class VerifierKey:
    """A public key with the name it signs under."""

    name: str
    key: Ed25519PublicKey

    @property
    def hash(self) -> bytes:
        return key_hash(self.name, self.key)


def parse_verifier_key(text: str) -> VerifierKey:
    """Read a C2SP verifier key string (`name+hash+base64key`)."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise CheckpointError("a verifier key is <name>+<hex hash>+<base64 key>", code="invalid_public_key")
    name, hash_hex, b64 = parts
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("the verifier key's key part is not base64", code="invalid_public_key") from None
    if len(raw) != 33 or raw[:1] != ED25519_TYPE:
        raise CheckpointError("only Ed25519 verifier keys (type 0x01) are supported", code="invalid_public_key")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    vk = VerifierKey(name, key)
    if vk.hash.hex() != hash_hex.lower():
        raise CheckpointError("the verifier key's hash does not match its name and key", code="invalid_public_key")
    return vk


def load_verifier_key(data: bytes, origin: str | None = None) -> VerifierKey:
    """A verifier key from a PEM public key (named `origin`) or a C2SP verifier key string."""
    text = data.decode("utf-8", errors="replace").strip()
    if text.startswith("-----BEGIN"):
        if origin is None:
            raise CheckpointError("a PEM key needs the log's origin as its name", code="invalid_public_key")
        return VerifierKey(origin, load_public_key_pem(data))
    return parse_verifier_key(text)


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, size, root hash and timestamp; `note` is the signed text it was read from."""

    origin: str
    size: int
    root: bytes
    timestamp: datetime
    note: str = ""

    def body(self) -> str:
        """The note text the signature covers."""
        return (f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode('ascii')}\n"
                f"{TIMESTAMP_KEY}{rfc3339(self.timestamp)}\n")

    @property
    def root_b64(self) -> str:
        return base64.b64encode(self.root).decode("ascii")


def sign_checkpoint(keyring: KeyRing, origin: str, size: int, root: bytes, timestamp: datetime) -> Checkpoint:
    """Sign a tree head with the active checkpoint key; returns the checkpoint with its signed note."""
    _check_origin(origin)
    cp = Checkpoint(origin, size, root, timestamp)
    body = cp.body()
    signature, public_key = keyring.sign_note(body.encode("utf-8"))
    blob = base64.b64encode(key_hash(origin, public_key) + signature).decode("ascii")
    return Checkpoint(origin, size, root, timestamp, note=f"{body}\n{SIG_PREFIX}{origin} {blob}\n")


def parse_checkpoint(note: str) -> tuple[Checkpoint, list[tuple[str, bytes, bytes]]]:
    """Split a signed checkpoint into the checkpoint and its signature lines (name, key hash, signature)."""
    if not note.endswith("\n"):
        raise CheckpointError("a signed note ends with a newline", code="checkpoint_malformed")
    body, sep, sigs = note.partition("\n\n")
    if not sep or not sigs:
        raise CheckpointError("a signed note has a blank line, then signature lines", code="checkpoint_malformed")
    lines = body.split("\n")
    if len(lines) < 3:
        raise CheckpointError("a checkpoint has an origin, a size and a root hash", code="checkpoint_malformed")
    origin, size_text, root_text, *extensions = lines
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError(f"tree size {size_text!r} is not a decimal number", code="checkpoint_malformed")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("the root hash is not base64", code="checkpoint_malformed") from None
    if len(root) != HASH_BYTES:
        raise CheckpointError("the root hash is not 32 bytes", code="checkpoint_malformed")
    stamps = [e[len(TIMESTAMP_KEY):] for e in extensions if e.startswith(TIMESTAMP_KEY)]
    if len(stamps) != 1:
        raise CheckpointError("a Sluice checkpoint carries exactly one Timestamp line", code="checkpoint_malformed")
    signatures = []
    for line in sigs.rstrip("\n").split("\n"):
        if not line.startswith(SIG_PREFIX):
            raise CheckpointError(f"not a signature line: {line[:40]!r}", code="checkpoint_malformed")
        name, _, blob_text = line[len(SIG_PREFIX):].rpartition(" ")
        try:
            blob = base64.b64decode(blob_text, validate=True)
        except (binascii.Error, ValueError):
            raise CheckpointError("a signature is not base64", code="checkpoint_malformed") from None
        if len(blob) < 5:
            raise CheckpointError("a signature is too short", code="checkpoint_malformed")
        signatures.append((name, blob[:4], blob[4:]))
    cp = Checkpoint(origin, int(size_text), root, parse_rfc3339(stamps[0]), note=note)
    return cp, signatures


def verify_checkpoint(note: str, keys: Iterable[VerifierKey], *, origin: str | None = None) -> Checkpoint:
    """Parse and verify a signed checkpoint against trusted keys; raises CheckpointError naming the failure."""
    cp, signatures = parse_checkpoint(note)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint is for log {cp.origin!r}, not {origin!r}", code="checkpoint_wrong_origin")
    body = note.partition("\n\n")[0] + "\n"
    trusted = list(keys)
    for name, hash_, signature in signatures:
        for vk in trusted:
            if vk.name == name and vk.hash == hash_:
                try:
                    vk.key.verify(signature, body.encode("utf-8"))
                except InvalidSignature:
                    raise CheckpointError("the checkpoint signature does not verify: the note was altered",
                                          code="checkpoint_bad_signature") from None
                if cp.origin != name:
                    raise CheckpointError("the checkpoint is signed under another name than its origin",
                                          code="checkpoint_wrong_origin")
                return cp
    raise CheckpointError("no signature on the checkpoint is by a trusted key (signed by another key?)",
                          code="checkpoint_unknown_key")


def _check_origin(origin: str) -> None:
    if not origin or any(c.isspace() for c in origin) or "+" in origin:
        raise CheckpointError(f"log origin {origin!r} must be non-empty, without spaces or '+'",
                              code="invalid_origin")
