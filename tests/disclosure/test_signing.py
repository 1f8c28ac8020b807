"""Signing keys: key ids, files, rotation, domain-separated contexts, strict verification, canonical JSON."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from disclosure.signing import (
    CONTEXTS,
    KeyRing,
    Signature,
    SigningError,
    canonical_json,
    domain_prefix,
    kid_for,
    load_public_key_pem,
    verify,
)

PAYLOAD = b'{"hello":"world"}'


def keyring(tmp_path: Path, *contexts: str) -> KeyRing:
    """A key ring in tmp_path/keys with the given contexts ensured."""
    ring = KeyRing(tmp_path / "keys")
    for context in contexts:
        ring.ensure(context)
    return ring


def with_value(signature: Signature, **overrides: Any) -> Signature:
    """A copy of `signature` with fields replaced."""
    fields = {"kid": signature.kid, "context": signature.context, "alg": signature.alg}
    fields["value_b64"] = signature.value_b64
    fields.update(overrides)
    return Signature(**fields)


# --- keys ---------------------------------------------------------------------------------------------------


def test_kid_is_the_first_16_hex_of_sha256_of_the_raw_public_key(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "certificate")
    kid, key = next(iter(ring.public_keys("certificate").items()))
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw) == 32
    assert kid == kid_for(key) == hashlib.sha256(raw).hexdigest()[:16]


def test_ensure_generates_the_first_key_once(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    kid = ring.ensure("certificate")
    assert ring.ensure("certificate") == kid
    assert KeyRing(tmp_path / "keys").ensure("certificate") == kid
    assert list(ring.public_keys("certificate")) == [kid]


def test_key_files_are_pkcs8_pem_with_private_mode_and_an_active_pointer(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    kid = ring.ensure("checkpoint")
    folder = tmp_path / "keys" / "checkpoint"
    private = folder / f"{kid}.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (folder / f"{kid}.pub.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert (folder / "active").read_text().strip() == kid
    assert ring.public_key_pem("checkpoint", kid) == (folder / f"{kid}.pub.pem").read_bytes()


def test_each_context_has_its_own_key(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    kids = {context: ring.ensure(context) for context in CONTEXTS}
    assert len(set(kids.values())) == len(CONTEXTS)


def test_rotation_makes_a_new_active_key_and_keeps_the_old_for_verification(tmp_path: Path) -> None:
    ring = keyring(tmp_path)
    old = ring.ensure("certificate")
    old_signature = ring.sign("certificate", PAYLOAD)
    new = ring.rotate("certificate")

    assert new != old
    assert ring.active_kid("certificate") == new
    assert ring.sign("certificate", PAYLOAD).kid == new
    keys = ring.public_keys("certificate")
    assert set(keys) == {old, new}
    assert verify(old_signature, PAYLOAD, keys)


def test_signing_without_a_key_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SigningError) as info:
        keyring(tmp_path).sign("disclosure", PAYLOAD)
    assert info.value.code == "no_signing_key"
    assert "sluice init" in info.value.message


def test_unknown_context_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningError) as info:
        keyring(tmp_path).ensure("payments")
    assert info.value.code == "unknown_signing_context"


def test_public_key_pem_refuses_unknown_or_path_like_kids(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "certificate")
    for kid in ("0123456789abcdef", "../checkpoint/x", "active"):
        with pytest.raises(SigningError) as info:
            ring.public_key_pem("certificate", kid)
        assert info.value.code == "unknown_kid"


def test_a_swapped_public_key_file_is_detected(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "certificate", "checkpoint")
    cert_kid = ring.active_kid("certificate")
    other = ring.public_key_pem("checkpoint", ring.active_kid("checkpoint"))
    (tmp_path / "keys" / "certificate" / f"{cert_kid}.pub.pem").write_bytes(other)
    with pytest.raises(SigningError) as info:
        ring.public_keys("certificate")
    assert info.value.code == "key_file_mismatch"


def test_load_public_key_pem_accepts_ed25519_and_refuses_other_keys(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "certificate")
    kid = ring.active_kid("certificate")
    assert kid_for(load_public_key_pem(ring.public_key_pem("certificate", kid))) == kid
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for data in (ec_pem, b"not a key"):
        with pytest.raises(SigningError) as info:
            load_public_key_pem(data)
        assert info.value.code == "invalid_public_key"


# --- signatures ---------------------------------------------------------------------------------------------


def test_signature_verifies_over_its_payload_only(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "certificate")
    signature = ring.sign("certificate", PAYLOAD)
    keys = ring.public_keys("certificate")
    assert (signature.alg, signature.context) == ("Ed25519", "certificate")
    assert verify(signature, PAYLOAD, keys)
    assert not verify(signature, PAYLOAD + b" ", keys)


def test_signature_covers_the_domain_prefix_then_the_payload(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "disclosure")
    signature = ring.sign("disclosure", PAYLOAD)
    key = ring.public_keys("disclosure")[signature.kid]
    raw = base64.b64decode(signature.value_b64)
    assert domain_prefix("disclosure") == b"sluice/disclosure/v1\x00"
    key.verify(raw, b"sluice/disclosure/v1\x00" + PAYLOAD)
    with pytest.raises(InvalidSignature):
        key.verify(raw, PAYLOAD)


@pytest.mark.parametrize("other", ["checkpoint", "disclosure"])
def test_a_certificate_signature_never_verifies_in_another_context(tmp_path: Path, other: str) -> None:
    ring = keyring(tmp_path, "certificate")
    signature = ring.sign("certificate", PAYLOAD)
    keys = ring.public_keys("certificate")  # even when the verifier trusts the same key
    assert not verify(with_value(signature, context=other), PAYLOAD, keys)


def test_verification_refuses_unknown_kid_wrong_alg_and_mislabelled_keys(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "certificate", "disclosure")
    signature = ring.sign("certificate", PAYLOAD)
    keys = ring.public_keys("certificate")
    other_key = next(iter(ring.public_keys("disclosure").values()))
    assert not verify(signature, PAYLOAD, ring.public_keys("disclosure"))
    assert not verify(with_value(signature, alg="EdDSA"), PAYLOAD, keys)
    assert not verify(signature, PAYLOAD, {signature.kid: other_key})
    assert not verify(with_value(signature, kid="0" * 16), PAYLOAD, {"0" * 16: keys[signature.kid]})


def test_verification_accepts_only_the_canonical_base64_of_64_bytes(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "certificate")
    signature = ring.sign("certificate", PAYLOAD)
    keys = ring.public_keys("certificate")
    value = signature.value_b64
    assert value.endswith("==") and len(value) == 88
    last = value[-3]
    same_bytes = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twin = next(  # differs only in the unused low bits of the last character
        c for c in same_bytes if c != last and same_bytes.index(c) >> 4 == same_bytes.index(last) >> 4
    )
    mangled = value[:-3] + twin + "=="
    assert base64.b64decode(mangled) == base64.b64decode(value)
    for bad in (mangled, value.rstrip("="), value[:-4] + "====", " " + value, value[:-8] + "AAAA===="):
        assert not verify(with_value(signature, value_b64=bad), PAYLOAD, keys), bad


def test_signature_json_round_trips_and_refuses_extra_fields() -> None:
    signature = Signature(kid="0123456789abcdef", context="disclosure", alg="Ed25519", value_b64="AA==")
    assert Signature.from_json(signature.to_json()) == signature
    with pytest.raises(SigningError):
        Signature.from_json({**signature.to_json(), "x": "y"})
    with pytest.raises(SigningError):
        Signature.from_json({**signature.to_json(), "kid": 7})


# --- canonical JSON -----------------------------------------------------------------------------------------


def test_canonical_json_sorts_keys_drops_whitespace_and_keeps_utf8() -> None:
    data = {"b": 1, "a": [True, None, "中文"], "c": {"z": -2, "y": ""}}
    assert canonical_json(data) == '{"a":[true,null,"中文"],"b":1,"c":{"y":"","z":-2}}'.encode()


_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]))
_PLAIN = st.recursive(st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | _TEXT,
                      lambda inner: st.lists(inner) | st.dictionaries(_TEXT, inner), max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(_PLAIN)
def test_canonical_json_bytes_are_those_of_sorted_compact_utf8_json_dumps(value: Any) -> None:
    # Leaves logged before canonical_json moved to orjson must hash the same: the bytes never change.
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert canonical_json(value) == expected.encode("utf-8")


def test_canonical_json_escapes_controls_and_quotes_as_json_dumps_does() -> None:
    assert canonical_json({"k": "\x1f\"\\\n\u2028/"}) == b'{"k":"\\u001f\\"\\\\\\n\xe2\x80\xa8/"}'


def test_canonical_json_refuses_lone_surrogates() -> None:
    with pytest.raises(SigningError) as info:
        canonical_json({"v": "\ud800"})
    assert info.value.code == "not_canonical_json"


@pytest.mark.parametrize(
    "value",
    [1.5, float("nan"), float("inf"), (1, 2), {1: "x"}, 2**53, b"bytes", {"nested": [0.1]}],
)
def test_canonical_json_refuses_anything_but_plain_json_values(value: Any) -> None:
    with pytest.raises(SigningError) as info:
        canonical_json({"v": value})
    assert info.value.code == "not_canonical_json"


def test_signing_module_does_not_import_sandbox() -> None:
    source = Path(__file__).resolve().parents[2] / "disclosure" / "signing.py"
    tree = ast.parse(source.read_text("utf-8"))
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names]
    assert [m for m in modules if m.split(".")[0] == "sandbox"] == []


def test_the_checkpoint_key_signs_nothing_but_notes(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "checkpoint")
    with pytest.raises(SigningError) as refused:
        ring.sign("checkpoint", PAYLOAD)
    assert refused.value.code == "checkpoint_key_reserved"
    signature, public = ring.sign_note(b"origin\n1\n" + PAYLOAD)
    public.verify(signature, b"origin\n1\n" + PAYLOAD)  # C2SP: over the note text itself, no prefix


def test_a_prepared_key_is_inactive_until_activated_and_can_be_discarded(tmp_path: Path) -> None:
    ring = keyring(tmp_path, "disclosure")
    old = ring.active_kid("disclosure")
    new = ring.prepare("disclosure")
    assert ring.active_kid("disclosure") == old and new in ring.public_keys("disclosure")
    ring.activate("disclosure", new)
    assert ring.active_kid("disclosure") == new
    spare = ring.prepare("disclosure")
    ring.discard("disclosure", spare)
    assert spare not in ring.public_keys("disclosure")
    with pytest.raises(SigningError):
        ring.discard("disclosure", new)
