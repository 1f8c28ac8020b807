"""A report's bytes, hash and signature: the canonical JSON is hashed with SHA-256 and the hash is signed in the
`disclosure` context, so anyone holding the disclosure public keys can verify a report offline."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from disclosure.errors import DisclosureError
from disclosure.signing import KeyRing, Signature, canonical_json, verify

SIGNATURE_TYPE = "sluice.disclosure-signature/v1"
CONTEXT = "disclosure"


class ReportNotVerified(DisclosureError):
    """A report whose bytes, hash or signature do not check out."""

    code = "disclosure_not_verified"


def report_bytes(report: Mapping[str, Any]) -> bytes:
    """The report's canonical JSON: the bytes that are hashed, signed and published."""
    return canonical_json(dict(report))


def sign_report(keyring: KeyRing, data: bytes) -> dict[str, Any]:
    """The detached signature document for a report's bytes."""
    report = json.loads(data)
    digest = hashlib.sha256(data).hexdigest()
    signature = keyring.sign(CONTEXT, digest.encode("ascii"))
    return {"type": SIGNATURE_TYPE, "period": report["period"], "status": report["status"], "sha256": digest,
            "signature": signature.to_json()}


def verify_report(data: bytes, envelope: Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]) -> str:
    """Check a report's bytes against its signature document; returns the key id that signed it."""
    if envelope.get("type") != SIGNATURE_TYPE:
        raise ReportNotVerified("not a disclosure signature document", found=envelope.get("type"))
    digest = hashlib.sha256(data).hexdigest()
    if envelope.get("sha256") != digest:
        raise ReportNotVerified("the report's SHA-256 differs from the signed one", expected=envelope.get("sha256"),
                                actual=digest)
    try:
        report = json.loads(data)
    except ValueError:
        raise ReportNotVerified("the report is not JSON") from None
    if report_bytes(report) != data:
        raise ReportNotVerified("the report is not in canonical JSON")
    if report.get("period") != envelope.get("period") or report.get("status") != envelope.get("status"):
        raise ReportNotVerified("the signature document names another period or status")
    signature = Signature.from_json(envelope.get("signature"))
    if signature.context != CONTEXT or not verify(signature, digest.encode("ascii"), public_keys):
        raise ReportNotVerified("the signature does not verify with the disclosure keys given", kid=signature.kid)
    return signature.kid
