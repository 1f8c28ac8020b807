"""The regulator's interfaces: events with filters and cursors, scoped reads with proofs, checkpoints, proofs,
exports that verify offline (and fail, naming the entry, when altered), and the witness."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from sluice_api import Api

from disclosure.checkpoint import VerifierKey, load_verifier_key, sign_checkpoint, verify_checkpoint
from disclosure.export import verify_export
from disclosure.merkle import leaf_hash, verify_consistency, verify_inclusion
from disclosure.signing import KeyRing, canonical_json
from disclosure.witness import Witness


def _b(items: list[str]) -> list[bytes]:
    return [base64.b64decode(p) for p in items]


@pytest.fixture
def world(api: Api) -> dict[str, Any]:
    op_a, key_a = api.actor("operator", "operator")
    op_b, key_b = api.actor("operator", "operator")
    _, reg = api.actor("regulator", "regulator")
    grant_a = api.grant(op_a)["id"]
    grant_b = api.grant(op_b)["id"]
    api.ok("GET", f"/v1/grants/{grant_a}", key_a)
    api.ok("GET", f"/v1/grants/{grant_b}", key_b)
    api.call("GET", f"/v1/grants/{grant_b}", key_a)  # refused: not theirs
    api.ok("POST", f"/v1/grants/{grant_b}/suspend", api.admin_key, json={"reason": "audit finding 7"})
    return {"op_a": op_a, "key_a": key_a, "op_b": op_b, "key_b": key_b, "reg": reg, "grant_a": grant_a,
            "grant_b": grant_b}


def _key(api: Api) -> VerifierKey:
    vkey = api.ok("GET", "/v1/keys", None)["checkpoint_verifier_keys"]
    return load_verifier_key(next(iter(vkey.values())).encode())


def _export(api: Api, key: str, **params: Any) -> bytes:
    resp = api.call("GET", "/v1/audit/export", key, params=params)
    assert resp.status_code == 200, resp.text
    return bytes(resp.content)


def test_events_are_in_sequence_with_filters_cursor_and_latest(api: Api, world: dict[str, Any]) -> None:
    page = api.ok("GET", "/v1/audit/events", world["reg"], params={"limit": 5})
    assert [e["seq"] for e in page["events"]] == list(range(5)) and page["more"] and page["next_cursor"] == 5
    rest = api.ok("GET", "/v1/audit/events", world["reg"], params={"cursor": page["next_cursor"], "limit": 1000})
    assert rest["events"][0]["seq"] == 5 and not rest["more"]
    latest = api.ok("GET", "/v1/audit/events", world["reg"], params={"latest": 2})
    assert len(latest["events"]) == 2 and latest["more"] and latest["events"][0]["seq"] < latest["events"][1]["seq"]
    suspended = api.ok("GET", "/v1/audit/events", world["reg"], params={"action": "grant:change"})["events"]
    assert [e["detail"]["reason"] for e in suspended] == ["audit finding 7"]
    assert suspended[0]["resource"] == {"name": f"grant/{world['grant_b']}", "org": world["op_b"]}
    denied = api.ok("GET", "/v1/audit/events", world["reg"], params={"decision": "deny", "org": world["op_a"]})
    assert {e["code"] for e in denied["events"]} == {"not_found_or_not_yours"}
    none = api.ok("GET", "/v1/audit/events", world["reg"], params={"since": "2999-01-01T00:00:00Z"})
    assert none["events"] == []
    bad = api.call("GET", "/v1/audit/events", world["reg"], params={"since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_time"


def test_an_operator_reads_only_its_organizations_records_each_with_a_proof(api: Api, world: dict[str, Any]
                                                                            ) -> None:
    page = api.ok("GET", "/v1/audit/events", world["key_a"], params={"limit": 1000})
    events = page["events"]
    assert events and all(world["op_a"] in (e["actor"]["org"], e["resource"]["org"]) for e in events)
    assert not any(e["resource"]["org"] == world["op_b"] and e["actor"]["org"] != world["op_a"] for e in events)
    cp = verify_checkpoint(page["checkpoint"]["note"], [_key(api)])
    for e in events:
        leaf = leaf_hash(canonical_json({k: v for k, v in e.items() if k != "inclusion_proof"}))
        assert verify_inclusion(e["seq"], cp.size, leaf, _b(e["inclusion_proof"]), cp.root)


def test_checkpoint_and_proofs(api: Api, world: dict[str, Any]) -> None:
    first = api.ok("GET", "/v1/audit/checkpoint", world["reg"])
    key = _key(api)
    a = verify_checkpoint(first["note"], [key])
    assert first["tree_size"] == a.size and first["verifier_key"]
    api.ok("GET", "/v1/me", world["key_a"])
    note = api.call("GET", "/v1/audit/checkpoint", world["reg"], params={"format": "note"}).text
    b = verify_checkpoint(note, [key])
    assert b.size > a.size and b.timestamp > a.timestamp
    proof = api.ok("GET", "/v1/audit/proofs/consistency", world["reg"], params={"first": a.size, "second": b.size})
    assert verify_consistency(a.size, b.size, a.root, b.root, _b(proof["proof"]))
    inc = api.ok("GET", "/v1/audit/proofs/inclusion", world["reg"], params={"index": 3, "tree_size": b.size})
    assert verify_inclusion(3, b.size, base64.b64decode(inc["leaf_hash"]), _b(inc["proof"]), b.root)
    beyond = api.call("GET", "/v1/audit/proofs/inclusion", world["reg"], params={"index": 0, "tree_size": 10**6})
    assert beyond.status_code == 409 and beyond.json()["code"] == "tree_size_not_reached"


def test_a_full_export_verifies_offline(api: Api, world: dict[str, Any]) -> None:
    data = _export(api, world["reg"])
    report = verify_export(data, [_key(api)])
    assert report.ok, report.problems
    assert not report.filtered and report.entries == report.tree_size > 10
    exported = [e for e in api.ok("GET", "/v1/audit/events", world["reg"], params={"action": "audit:export"}
                                  )["events"]]
    assert exported and exported[-1]["detail"]["exported"] == report.entries


def _lines(data: bytes) -> list[bytes]:
    return data.rstrip(b"\n").split(b"\n")


def _join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


def test_editing_one_byte_of_one_record_names_that_record(api: Api, world: dict[str, Any]) -> None:
    lines = _lines(_export(api, world["reg"]))
    target = 7
    line = lines[target + 1]
    at = line.index(b'"action":"') + len(b'"action":"')
    lines[target + 1] = line[:at] + bytes([line[at] ^ 0x01]) + line[at + 1:]
    report = verify_export(_join(lines), [_key(api)])
    assert not report.ok and report.first_bad_entry == target and report.first_bad_line == target + 2
    assert f"entry {target}" in report.problems[0] and "altered" in report.problems[0]


def test_deleted_swapped_and_truncated_exports_fail(api: Api, world: dict[str, Any]) -> None:
    lines = _lines(_export(api, world["reg"]))
    key = [_key(api)]
    deleted = verify_export(_join(lines[:5] + lines[6:]), key)
    assert not deleted.ok and deleted.first_bad_entry == 4 and "missing" in deleted.problems[0]
    swapped = verify_export(_join([*lines[:5], lines[6], lines[5], *lines[7:]]), key)
    assert not swapped.ok and swapped.first_bad_entry == 4 and "out of order" in swapped.problems[0]
    truncated = verify_export(_join(lines[:-3]), key)
    assert not truncated.ok and "truncated" in truncated.problems[0]
    assert truncated.first_bad_entry == len(lines) - 4


def test_an_export_altered_with_its_hashes_still_fails(api: Api, world: dict[str, Any]) -> None:
    lines = _lines(_export(api, world["reg"]))
    entry = json.loads(lines[4])
    entry["record"]["reason"] = "nothing to see"
    entry["leaf_hash"] = base64.b64encode(leaf_hash(canonical_json(entry["record"]))).decode()
    lines[4] = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode()
    report = verify_export(_join(lines), [_key(api)])
    assert not report.ok and "was altered" in report.problems[0]


def test_a_filtered_export_carries_proofs_and_an_altered_record_is_named(api: Api, world: dict[str, Any]) -> None:
    data = _export(api, world["key_a"])
    key = [_key(api)]
    report = verify_export(data, key)
    assert report.ok and report.filtered and 0 < report.entries < report.tree_size
    lines = _lines(data)
    victim = json.loads(lines[2])
    victim["record"]["decision"] = "deny"
    lines[2] = json.dumps(victim, separators=(",", ":")).encode()
    bad = verify_export(_join(lines), key)
    assert not bad.ok and bad.first_bad_entry == victim["record"]["seq"] and bad.first_bad_line == 3


def test_other_checkpoints_must_be_consistent_and_not_back_dated(api: Api, world: dict[str, Any]) -> None:
    key = _key(api)
    early = api.ok("GET", "/v1/audit/checkpoint", world["reg"])["note"]
    api.ok("GET", "/v1/me", world["key_a"])
    full = _export(api, world["reg"])
    assert verify_export(full, [key], [early]).ok
    filtered = _export(api, world["reg"], action="grant:", consistency_from=[verify_checkpoint(early, [key]).size])
    assert verify_export(filtered, [key], [early]).ok
    no_proof = _export(api, world["reg"], action="grant:")
    assert "no consistency proof" in verify_export(no_proof, [key], [early]).problems[0]
    # the same log key signing a different tree of the same size, dated later: a fork
    ring = KeyRing(api.settings.keys_dir)
    cp = verify_checkpoint(early, [key])
    forged = sign_checkpoint(ring, cp.origin, cp.size, b"\x00" * 32, cp.timestamp).note
    assert any("forked" in p or "not consistent" in p for p in verify_export(full, [key], [forged]).problems)
    big = verify_checkpoint(api.ok("GET", "/v1/audit/checkpoint", world["reg"])["note"], [key])
    backdated = sign_checkpoint(ring, cp.origin, big.size + 5, big.root, cp.timestamp).note
    report = verify_export(full, [key], [backdated])
    assert not report.ok and any("back-dated" in p for p in report.problems)


def test_a_checkpoint_signed_by_another_key_fails(api: Api, world: dict[str, Any], tmp_path: Path) -> None:
    data = _export(api, world["reg"])
    other = KeyRing(tmp_path / "other")
    other.ensure("checkpoint")
    stranger = VerifierKey(_key(api).name, next(iter(other.public_keys("checkpoint").values())))
    report = verify_export(data, [stranger])
    assert not report.ok and "trusted key" in report.problems[0]
    header = json.loads(_lines(data)[0])
    cp = verify_checkpoint(header["checkpoint"], [_key(api)])
    header["checkpoint"] = sign_checkpoint(other, cp.origin, cp.size, cp.root, cp.timestamp).note
    resigned = _join([json.dumps(header).encode(), *_lines(data)[1:]])
    assert not verify_export(resigned, [_key(api)]).ok  # a key inside the export is never trusted


def test_the_witness_accepts_consistent_growth_and_refuses_the_rest(api: Api, world: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    key = _key(api)
    witness = Witness(tmp_path / "witness.json", [key])
    first = api.ok("GET", "/v1/audit/checkpoint", world["reg"])["note"]
    assert witness.accept(first, []).accepted
    api.ok("GET", "/v1/me", world["key_a"])
    second = api.ok("GET", "/v1/audit/checkpoint", world["reg"])["note"]
    a, b = verify_checkpoint(first, [key]), verify_checkpoint(second, [key])
    proof = _b(api.ok("GET", "/v1/audit/proofs/consistency", world["reg"],
                      params={"first": a.size, "second": b.size})["proof"])
    assert not witness.accept(second, proof[:-1]).accepted  # a proof that does not verify
    assert witness.accept(second, proof).accepted and witness.last() == b
    assert not witness.accept(first, []).accepted  # an older head: the log would have shrunk
    ring = KeyRing(api.settings.keys_dir)
    replayed = sign_checkpoint(ring, b.origin, b.size, b.root, a.timestamp).note
    refused = witness.accept(replayed, [])
    assert not refused.accepted and "back-dated" in refused.reason
    forked = sign_checkpoint(ring, b.origin, b.size + 1, b"\x01" * 32, b.timestamp.replace(year=2100)).note
    assert "not consistent" in witness.accept(forked, proof).reason
