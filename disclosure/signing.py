"""Ed25519 signing keys per context (certificate, checkpoint, disclosure), key ids, rotation, canonical JSON.

Every `sign` signature covers b"sluice/<context>/v1\\x00" + payload, so a signature made in one context never
verifies in another. The checkpoint key is the exception by design: it signs C2SP signed notes exactly as that
specification says (no prefix, see `disclosure.checkpoint`), through `sign_note` only, and signs nothing else.
Keys live in `keys_dir/<context>/<kid>.pem` (PKCS#8, mode 0600) with the public half in
`<kid>.pub.pem`; the file `active` names the key that signs. Old keys stay so old signatures still verify.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from disclosure.errors import DisclosureError

ALG = "Ed25519"
CONTEXTS = ("certificate", "checkpoint", "disclosure")
NOTE_CONTEXT = "checkpoint"
KID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
SIGNATURE_BYTES = 64
# Integers beyond this are not exactly representable in every JSON implementation (I-JSON, RFC 7493).
MAX_JSON_INT = 2**53 - 1


class SigningError(DisclosureError):
    """A signing or key problem: a stable `code`, a message naming what to fix, and context."""

    code = "signing_error"


def domain_prefix(context: str) -> bytes:
    """The domain-separation prefix a signature in `context` covers before the payload."""
    _check_context(context)
    return b"sluice/" + context.encode("ascii") + b"/v1\x00"


def kid_for(public_key: Ed25519PublicKey) -> str:
    """Key id: the first 16 hex characters of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key_pem(data: bytes) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM (SubjectPublicKeyInfo); refuses other key types."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"Not a PEM public key ({exc}).", code="invalid_public_key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(
            f"The public key is {type(key).__name__}, not Ed25519; Sluice signs with Ed25519 only.",
            code="invalid_public_key",
        )
    return key


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """PEM (SubjectPublicKeyInfo) of a public key."""
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Signature:
    """A detached Ed25519 signature in one context, made by the key `kid`."""

    kid: str
    context: str
    alg: str
    value_b64: str

    def to_json(self) -> dict[str, str]:
        """The signature as stored in documents: {'alg', 'context', 'kid', 'value'}."""
        return {"alg": self.alg, "context": self.context, "kid": self.kid, "value": self.value_b64}

    @classmethod
    def from_json(cls, data: Any) -> Signature:
        """Read a signature object; refuses anything but exactly four string fields."""
        fields = ("alg", "context", "kid", "value")
        if not isinstance(data, dict) or set(data) != set(fields) or not all(isinstance(data[f], str) for f in fields):
            raise SigningError(
                "A signature must be an object with exactly the string fields alg, context, kid and value.",
                code="malformed_signature",
            )
        return cls(kid=data["kid"], context=data["context"], alg=data["alg"], value_b64=data["value"])


def _decode_signature(value_b64: str) -> bytes | None:
    """The 64 signature bytes, only if `value_b64` is their one canonical base64 spelling."""
    try:
        raw = base64.b64decode(value_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    if len(raw) != SIGNATURE_BYTES or base64.b64encode(raw).decode("ascii") != value_b64:
        return None
    return raw


def verify(signature: Signature, payload: bytes, public_keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """True only if `signature` is a valid Ed25519 signature over `payload` in its context by a known key."""
    if signature.alg != ALG or signature.context not in CONTEXTS:
        return False
    key = public_keys.get(signature.kid)
    raw = _decode_signature(signature.value_b64)
    if key is None or raw is None or kid_for(key) != signature.kid:
        return False
    try:
        key.verify(raw, domain_prefix(signature.context) + payload)
    except InvalidSignature:
        return False
    return True


def canonical_json(obj: Any, *, checked: bool = False) -> bytes:
    """Canonical JSON: keys sorted by code point, no spaces, UTF-8; only str/int/bool/None/list/dict.

    `checked=True` skips the value check for data the caller built from canonical-safe values (the audit
    sequencer's records); the bytes are the same either way.
    """
    if not checked and not _plainly_canonical(obj):
        _check_canonical(obj, "$")  # the slow walk: accepts subclasses, or names the offending path
    try:  # orjson's bytes equal json.dumps(sort_keys, compact, ensure_ascii=False) for these values (tested)
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        raise SigningError("Canonical JSON cannot hold lone surrogate characters.", code="not_canonical_json") from None


def _plainly_canonical(obj: Any) -> bool:
    """Fast check (no paths, exact types only) that `obj` holds only canonical-JSON values."""
    stack = [obj]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if -MAX_JSON_INT <= item <= MAX_JSON_INT:
                continue
            return False
        if kind is dict:
            for key, value in item.items():
                if type(key) is not str:
                    return False
                push(value)
            continue
        if kind is list:
            extend(item)
            continue
        return False
    return True


def _check_canonical(obj: Any, where: str) -> None:
    if obj is None or isinstance(obj, str | bool):
        return
    if isinstance(obj, int):
        if abs(obj) > MAX_JSON_INT:
            raise SigningError(
                f"{where}: integer {obj} is outside ±(2**53-1); encode it as a string.", code="not_canonical_json"
            )
        return
    if isinstance(obj, list):
        for index, item in enumerate(obj):
            _check_canonical(item, f"{where}[{index}]")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise SigningError(f"{where}: object keys must be strings, not {key!r}.", code="not_canonical_json")
            _check_canonical(value, f"{where}.{key}")
        return
    raise SigningError(
        f"{where}: {type(obj).__name__} values are not allowed in signed JSON; use str, int, bool, None, "
        "list or dict (decimals and times as strings).",
        code="not_canonical_json",
    )


def _check_context(context: str) -> None:
    if context not in CONTEXTS:
        raise SigningError(
            f"Unknown signing context {context!r}; use one of {', '.join(CONTEXTS)}.",
            code="unknown_signing_context",
            context=context,
        )


class KeyRing:
    """The signing keys of one Sluice home, one folder per context; safe to share between processes."""

    def __init__(self, keys_dir: Path) -> None:
        self.keys_dir = keys_dir
        self._private: dict[tuple[str, str], Ed25519PrivateKey] = {}

    def ensure(self, context: str) -> str:
        """The active key id of `context`, generating the first key if there is none."""
        with self._locked(context):
            active = self._read_active(context)
            return active if active is not None else self._generate(context)

    def rotate(self, context: str) -> str:
        """Generate a new key and make it active; older keys are kept for verification."""
        with self._locked(context):
            return self._generate(context)

    def active_kid(self, context: str) -> str:
        """The key id that signs in `context` now."""
        active = self._read_active(context)
        if active is None:
            raise SigningError(
                f"No signing key for context {context!r} in {self.keys_dir}; run `sluice init`.",
                code="no_signing_key",
                context=context,
            )
        return active

    def sign(self, context: str, payload: bytes) -> Signature:
        """Sign `payload` in `context` with its active key (never the checkpoint key: see `sign_note`)."""
        if context == NOTE_CONTEXT:
            raise SigningError("The checkpoint key signs only checkpoints (KeyRing.sign_note).",
                               code="checkpoint_key_reserved")
        kid = self.active_kid(context)
        key = self._private_key(context, kid)
        value = key.sign(domain_prefix(context) + payload)
        return Signature(kid=kid, context=context, alg=ALG, value_b64=base64.b64encode(value).decode("ascii"))

    def sign_note(self, text: bytes) -> tuple[bytes, Ed25519PublicKey]:
        """Sign a C2SP signed note's text with the active checkpoint key, exactly as C2SP says (no prefix).

        Returns the 64-byte signature and the public key that verifies it.
        """
        kid = self.active_kid(NOTE_CONTEXT)
        key = self._private_key(NOTE_CONTEXT, kid)
        return key.sign(text), key.public_key()

    def prepare(self, context: str) -> str:
        """Generate a key for `context` without making it active (rotation: audit first, then `activate`)."""
        with self._locked(context):
            return self._generate(context, activate=False)

    def activate(self, context: str, kid: str) -> None:
        """Make the prepared key `kid` the active key of `context`."""
        with self._locked(context):
            folder = self._folder(context)
            if not KID_PATTERN.match(kid) or not (folder / f"{kid}.pem").is_file():
                raise SigningError(f"No key {kid!r} in context {context!r}.", code="unknown_kid", kid=kid)
            _write_atomically(folder / "active", f"{kid}\n".encode("ascii"), 0o644)

    def discard(self, context: str, kid: str) -> None:
        """Remove a prepared key that never became active (a rotation that could not be audited)."""
        with self._locked(context):
            if self._read_active(context) == kid or not KID_PATTERN.match(kid):
                raise SigningError(f"Key {kid!r} is active or invalid; it cannot be discarded.", code="key_active")
            folder = self._folder(context)
            for name in (f"{kid}.pem", f"{kid}.pub.pem"):
                (folder / name).unlink(missing_ok=True)
            self._private.pop((context, kid), None)

    def public_keys(self, context: str) -> dict[str, Ed25519PublicKey]:
        """Every public key of `context` (active and retired-but-kept), by key id."""
        folder = self._folder(context)
        keys: dict[str, Ed25519PublicKey] = {}
        if not folder.is_dir():
            return keys
        for path in sorted(folder.glob("*.pub.pem")):
            kid = path.name.removesuffix(".pub.pem")
            key = load_public_key_pem(path.read_bytes())
            if kid_for(key) != kid:
                raise SigningError(
                    f"Key file {path} does not hold key {kid}; the keys folder was altered.",
                    code="key_file_mismatch",
                    path=str(path),
                )
            keys[kid] = key
        return keys

    def public_key_pem(self, context: str, kid: str) -> bytes:
        """The PEM of one public key of `context`."""
        path = self._folder(context) / f"{kid}.pub.pem"
        if not KID_PATTERN.match(kid) or not path.is_file():
            raise SigningError(f"No key {kid!r} in context {context!r}.", code="unknown_kid", kid=kid)
        return path.read_bytes()

    def _folder(self, context: str) -> Path:
        _check_context(context)
        return self.keys_dir / context

    @contextmanager
    def _locked(self, context: str) -> Iterator[None]:
        folder = self._folder(context)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read_active(self, context: str) -> str | None:
        path = self._folder(context) / "active"
        if not path.is_file():
            return None
        kid = path.read_text("ascii").strip()
        if not KID_PATTERN.match(kid) or not (path.parent / f"{kid}.pem").is_file():
            raise SigningError(
                f"{path} names {kid!r}, which is not a key in that folder; restore the key or rotate.",
                code="no_signing_key",
                context=context,
            )
        return kid

    def _generate(self, context: str, *, activate: bool = True) -> str:
        folder = self._folder(context)
        key = Ed25519PrivateKey.generate()
        kid = kid_for(key.public_key())
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_atomically(folder / f"{kid}.pem", private_pem, 0o600)
        _write_atomically(folder / f"{kid}.pub.pem", public_key_pem(key.public_key()), 0o644)
        if activate:
            _write_atomically(folder / "active", f"{kid}\n".encode("ascii"), 0o644)
        self._private[(context, kid)] = key
        return kid

    def _private_key(self, context: str, kid: str) -> Ed25519PrivateKey:
        cached = self._private.get((context, kid))
        if cached is not None:
            return cached
        path = self._folder(context) / f"{kid}.pem"
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey) or kid_for(key.public_key()) != kid:
            raise SigningError(f"{path} is not the Ed25519 key {kid}.", code="key_file_mismatch", path=str(path))
        self._private[(context, kid)] = key
        return key


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write a file via a temporary sibling, fsync, chmod and rename, then fsync the folder."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    folder_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
