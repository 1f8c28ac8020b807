"""Registration certificates (一证一码): codes, signed certificate documents, offline verification, QR codes.

A certificate document is the canonical JSON of {"body": {...}, "signature": {...}} (one trailing newline
allowed). The body is {"type": "sluice.certificate/v1", "code", "issued_at", ...metadata}; the signature is
Ed25519 in the `certificate` context over the canonical JSON of the body. See docs/certificates.md.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from disclosure.signing import (
    ALG,
    KeyRing,
    Signature,
    SigningError,
    canonical_json,
    kid_for,
    verify,
)
from disclosure.signing import load_public_key_pem as _load_public_key_pem
from sandbox.errors import InvalidInput

CERTIFICATE_TYPE = "sluice.certificate/v1"
CONTEXT = "certificate"
CODE_PATTERN = re.compile(r"^SLC-(\d{4})-(\d{6})$")
MAX_SEQ = 999_999
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RESERVED_FIELDS = ("type", "code", "issued_at")

__all__ = [
    "CERTIFICATE_TYPE",
    "CertificateCheck",
    "certificate_body",
    "format_code",
    "issue",
    "kid_for",
    "load_public_key_pem",
    "parse_code",
    "qr_png",
    "verify_certificate_document",
]


def format_code(year: int, seq: int) -> str:
    """The human-readable certificate code, e.g. format_code(2026, 123) == 'SLC-2026-000123'."""
    if not 1000 <= year <= 9999 or not 1 <= seq <= MAX_SEQ:
        raise InvalidInput(
            f"A certificate code needs a 4-digit year and a sequence number 1-{MAX_SEQ}; got {year}, {seq}.",
            code="invalid_certificate_code",
            year=year,
            seq=seq,
        )
    return f"SLC-{year:04d}-{seq:06d}"


def parse_code(code: str) -> tuple[int, int]:
    """The (year, sequence number) of a certificate code such as 'SLC-2026-000123'."""
    match = CODE_PATTERN.match(code)
    if match is None or int(match.group(2)) == 0:
        raise InvalidInput(
            f"{code!r} is not a certificate code; codes look like SLC-2026-000123.",
            code="invalid_certificate_code",
        )
    return int(match.group(1)), int(match.group(2))


def load_public_key_pem(data: bytes) -> Ed25519PublicKey:
    """Load the Ed25519 public key (PEM) a certificate is verified with, e.g. from `sluice certificates`."""
    try:
        return _load_public_key_pem(data)
    except SigningError as exc:
        raise InvalidInput(exc.message, code=exc.code) from None


def _issued_at_text(issued_at: datetime) -> str:
    if issued_at.tzinfo is None:
        raise InvalidInput("issued_at must be an aware datetime (UTC).", code="invalid_issued_at")
    return issued_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def certificate_body(*, code: str, issued_at: datetime, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The signed body: type, code, issue time (UTC, seconds) and the caller's canonical metadata.

    The metadata must hold a `dataset` object and the lowercase hex `source_sha256` and `parquet_sha256`.
    """
    parse_code(code)
    clash = [name for name in _RESERVED_FIELDS if name in metadata]
    if clash:
        raise InvalidInput(
            f"Certificate metadata may not set {', '.join(clash)}; those fields are set by the issuer.",
            code="invalid_certificate_metadata",
        )
    if not isinstance(metadata.get("dataset"), dict):
        raise InvalidInput("Certificate metadata needs a 'dataset' object.", code="invalid_certificate_metadata")
    for name in ("source_sha256", "parquet_sha256"):
        if not isinstance(metadata.get(name), str) or not _HEX64.match(metadata[name]):
            raise InvalidInput(
                f"Certificate metadata needs {name} as 64 lowercase hex digits.",
                code="invalid_certificate_metadata",
                field=name,
            )
    body = {"type": CERTIFICATE_TYPE, "code": code, "issued_at": _issued_at_text(issued_at), **metadata}
    try:
        canonical_json(body)
    except SigningError as exc:
        raise InvalidInput(
            f"Certificate metadata is not canonical JSON: {exc.message}", code="invalid_certificate_metadata"
        ) from None
    return body


def issue(keyring: KeyRing, *, code: str, issued_at: datetime, metadata: Mapping[str, Any]) -> tuple[bytes, str]:
    """Sign a certificate; returns the certificate document (canonical JSON + newline) and the key id."""
    body = certificate_body(code=code, issued_at=issued_at, metadata=metadata)
    signature = keyring.sign(CONTEXT, canonical_json(body))
    document = canonical_json({"body": body, "signature": signature.to_json()}) + b"\n"
    return document, signature.kid


@dataclass(frozen=True)
class CertificateCheck:
    """The outcome of verifying a certificate document; `body` is given only when it is valid."""

    valid: bool
    reason: str
    code: str | None = None
    kid: str | None = None
    body: dict[str, Any] | None = None


class _NotCanonical(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _NotCanonical(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_floats(text: str) -> Any:
    raise _NotCanonical(f"non-integer number {text}")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_float=_no_floats, parse_constant=_no_floats)


def verify_certificate_document(data: bytes, public_keys: Mapping[str, Ed25519PublicKey]) -> CertificateCheck:
    """Verify a certificate file byte for byte: canonical form, type, code, key, context and signature."""
    text_bytes = data[:-1] if data.endswith(b"\n") else data
    try:
        document = _DECODER.decode(text_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return CertificateCheck(False, "not_json")
    if not isinstance(document, dict) or set(document) != {"body", "signature"}:
        return CertificateCheck(False, "bad_structure")
    body = document["body"]
    try:
        signature = Signature.from_json(document["signature"])
        canonical = canonical_json(document)
    except SigningError:
        return CertificateCheck(False, "bad_structure")
    if canonical != text_bytes:
        return CertificateCheck(False, "not_canonical")
    code = body.get("code") if isinstance(body, dict) else None
    code = code if isinstance(code, str) else None
    failure = _body_failure(body, code)
    if failure is None:
        failure = _signature_failure(signature, body, public_keys)
    if failure is not None:
        return CertificateCheck(False, failure, code=code, kid=signature.kid)
    return CertificateCheck(True, "ok", code=code, kid=signature.kid, body=body)


def _body_failure(body: Any, code: str | None) -> str | None:
    if not isinstance(body, dict) or body.get("type") != CERTIFICATE_TYPE:
        return "wrong_type"
    if code is None or CODE_PATTERN.match(code) is None:
        return "bad_code"
    return None


def _signature_failure(
    signature: Signature, body: dict[str, Any], public_keys: Mapping[str, Ed25519PublicKey]
) -> str | None:
    if signature.alg != ALG:
        return "wrong_alg"
    if signature.context != CONTEXT:
        return "wrong_context"
    if signature.kid not in public_keys:
        return "unknown_kid"
    if not verify(signature, canonical_json(body), public_keys):
        return "bad_signature"
    return None


def qr_png(code: str, verify_url: str, *, scale: int = 4) -> bytes:
    """A PNG QR code holding '<code> <verify_url>' (error correction M), for printing on the certificate."""
    qr = segno.make(f"{code} {verify_url}", error="m", micro=False)
    buffer = io.BytesIO()
    qr.save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()
