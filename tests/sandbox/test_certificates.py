"""Registration certificates: codes, signed documents that fail on any changed byte, QR codes."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import segno

from disclosure.signing import KeyRing, canonical_json
from sandbox.catalogue.certificates import (
    CERTIFICATE_TYPE,
    certificate_body,
    format_code,
    issue,
    kid_for,
    load_public_key_pem,
    parse_code,
    qr_png,
    verify_certificate_document,
)
from sandbox.errors import InvalidInput

ISSUED_AT = datetime(2026, 6, 1, 9, 30, 15, 123456, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def metadata(**overrides: Any) -> dict[str, Any]:
    """Certificate metadata as the registry supplies it, overridden per test."""
    data: dict[str, Any] = {
        "dataset": {"id": "bus_ridership", "version": 3, "title": "公交客流", "domain": "transport"},
        "provider": {"id": "org_1", "name": "市交通运输局"},
        "columns": [{"name": "route", "type": "VARCHAR"}, {"name": "cost", "type": "DECIMAL(10,2)"}],
        "row_count": 1200,
        "byte_size": 40960,
        "source_sha256": "a" * 64,
        "parquet_sha256": "b" * 64,
    }
    data.update(overrides)
    return data


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    ring = KeyRing(tmp_path / "keys")
    for context in ("certificate", "disclosure"):
        ring.ensure(context)
    return ring


def issued(ring: KeyRing, seq: int = 123, **overrides: Any) -> bytes:
    document, _ = issue(ring, code=format_code(2026, seq), issued_at=ISSUED_AT, metadata=metadata(**overrides))
    return document


# --- codes --------------------------------------------------------------------------------------------------


def test_codes_are_slc_year_and_six_digits() -> None:
    assert format_code(2026, 123) == "SLC-2026-000123"
    assert parse_code("SLC-2026-000123") == (2026, 123)
    assert parse_code(format_code(2031, 999_999)) == (2031, 999_999)


@pytest.mark.parametrize("code", ["SLC-2026-123", "slc-2026-000123", "SLC-2026-000000", "SLC-2026-0001234", ""])
def test_malformed_codes_are_refused(code: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_code(code)
    assert info.value.code == "invalid_certificate_code"


@pytest.mark.parametrize(("year", "seq"), [(2026, 0), (2026, 1_000_000), (99, 1)])
def test_codes_out_of_range_are_refused(year: int, seq: int) -> None:
    with pytest.raises(InvalidInput):
        format_code(year, seq)


# --- issuing ------------------------------------------------------------------------------------------------


def test_issued_document_is_canonical_json_of_body_and_signature(ring: KeyRing) -> None:
    document, kid = issue(ring, code="SLC-2026-000123", issued_at=ISSUED_AT, metadata=metadata())
    parsed = json.loads(document)

    assert document.endswith(b"\n")
    assert canonical_json(parsed) + b"\n" == document
    assert parsed["body"] == {
        "type": CERTIFICATE_TYPE,
        "code": "SLC-2026-000123",
        "issued_at": "2026-06-01T09:30:15Z",
        **metadata(),
    }
    assert parsed["signature"]["alg"] == "Ed25519"
    assert parsed["signature"]["context"] == "certificate"
    assert parsed["signature"]["kid"] == kid == ring.active_kid("certificate")


def test_issue_time_is_written_in_utc() -> None:
    shanghai = timezone(timedelta(hours=8))
    body = certificate_body(
        code="SLC-2026-000001", issued_at=datetime(2026, 6, 1, 17, 0, tzinfo=shanghai), metadata=metadata()
    )
    assert body["issued_at"] == "2026-06-01T09:00:00Z"


@pytest.mark.parametrize(
    "bad",
    [
        {"code": "SLC-2026-000999"},
        {"type": "other"},
        {"source_sha256": "A" * 64},
        {"parquet_sha256": "abc"},
        {"dataset": "bus_ridership"},
        {"byte_size": 1.5},
    ],
)
def test_metadata_that_would_confuse_the_body_is_refused(ring: KeyRing, bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        issue(ring, code="SLC-2026-000001", issued_at=ISSUED_AT, metadata=metadata(**bad))
    assert info.value.code == "invalid_certificate_metadata"


# --- verification -------------------------------------------------------------------------------------------


def test_issued_certificate_verifies_with_or_without_its_trailing_newline(ring: KeyRing) -> None:
    document = issued(ring)
    keys = ring.public_keys("certificate")
    for data in (document, document.rstrip(b"\n")):
        check = verify_certificate_document(data, keys)
        assert (check.valid, check.reason, check.code) == (True, "ok", "SLC-2026-000123")
        assert check.body is not None and check.body["dataset"]["title"] == "公交客流"


def test_changing_any_byte_of_the_document_fails_verification(ring: KeyRing) -> None:
    document = issued(ring)
    keys = ring.public_keys("certificate")
    accepted = []
    for position in range(len(document)):
        for mask in (0x01, 0x20, 0x80):
            mutated = bytearray(document)
            mutated[position] ^= mask
            if verify_certificate_document(bytes(mutated), keys).valid:
                accepted.append((position, mask))
    assert accepted == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d + b"\n",
        lambda d: b" " + d,
        lambda d: d[:-2] + b" }\n",
        lambda d: d[:-10],
        lambda d: b"",
        lambda d: json.dumps(json.loads(d), indent=2).encode(),
        lambda d: json.dumps(json.loads(d), sort_keys=True).encode(),
        lambda d: json.dumps(json.loads(d), sort_keys=True, separators=(",", ":")).encode(),
    ],
)
def test_documents_that_are_not_exactly_canonical_fail(ring: KeyRing, mutate: Any) -> None:
    assert not verify_certificate_document(mutate(issued(ring)), ring.public_keys("certificate")).valid


def resigned(ring: KeyRing, signing_context: str, **signature_overrides: str) -> bytes:
    """A document whose body is signed in `signing_context`, with signature fields overridden."""
    body = json.loads(issued(ring))["body"]
    signature = ring.sign(signing_context, canonical_json(body)).to_json()
    signature.update(signature_overrides)
    return canonical_json({"body": body, "signature": signature}) + b"\n"


def test_a_signature_from_another_context_does_not_make_a_certificate(ring: KeyRing) -> None:
    cert_keys = ring.public_keys("certificate")
    all_keys = {**cert_keys, **ring.public_keys("disclosure")}
    assert verify_certificate_document(resigned(ring, "disclosure"), all_keys).reason == "wrong_context"
    relabelled = resigned(ring, "disclosure", context="certificate")
    assert verify_certificate_document(relabelled, cert_keys).reason == "unknown_kid"
    assert verify_certificate_document(relabelled, all_keys).reason == "bad_signature"


def test_unknown_key_and_wrong_algorithm_are_reported(ring: KeyRing, tmp_path: Path) -> None:
    stranger = KeyRing(tmp_path / "other")
    stranger.ensure("certificate")
    check = verify_certificate_document(issued(ring), stranger.public_keys("certificate"))
    assert (check.valid, check.reason, check.kid) == (False, "unknown_kid", ring.active_kid("certificate"))
    assert check.body is None
    wrong_alg = resigned(ring, "certificate", alg="RS256")
    assert verify_certificate_document(wrong_alg, ring.public_keys("certificate")).reason == "wrong_alg"


def test_documents_of_another_type_fail(ring: KeyRing) -> None:
    body = {**json.loads(issued(ring))["body"], "type": "sluice.checkpoint/v1"}
    signature = ring.sign("certificate", canonical_json(body)).to_json()
    document = canonical_json({"body": body, "signature": signature})
    assert verify_certificate_document(document, ring.public_keys("certificate")).reason == "wrong_type"


def test_certificates_signed_before_a_rotation_still_verify(ring: KeyRing) -> None:
    old = issued(ring, seq=1)
    ring.rotate("certificate")
    new = issued(ring, seq=2)
    keys = ring.public_keys("certificate")
    assert verify_certificate_document(old, keys).valid
    assert verify_certificate_document(new, keys).valid
    assert json.loads(old)["signature"]["kid"] != json.loads(new)["signature"]["kid"]


def test_offline_verification_with_a_public_key_file(ring: KeyRing, tmp_path: Path) -> None:
    document = issued(ring)
    pem = ring.public_key_pem("certificate", ring.active_kid("certificate"))
    key = load_public_key_pem(pem)
    assert verify_certificate_document(document, {kid_for(key): key}).valid
    with pytest.raises(InvalidInput) as info:
        load_public_key_pem(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    assert info.value.code == "invalid_public_key"


# --- QR codes -----------------------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_qr_png_encodes_code_and_url_deterministically() -> None:
    url = "https://data.example.gov.cn/v1/certificates/SLC-2026-000123"
    png = qr_png("SLC-2026-000123", url)
    assert png.startswith(PNG_SIGNATURE)
    assert png == qr_png("SLC-2026-000123", url)
    assert png != qr_png("SLC-2026-000124", url.replace("123", "124"))
    expected = segno.make(f"SLC-2026-000123 {url}", error="m", micro=False).symbol_size(scale=4, border=4)
    assert png_size(png) == expected
