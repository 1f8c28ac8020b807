"""The `sluice` CLI: init, migrations, verbs through the API (audited as cli), offline certificate checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sandbox.cli import app

CSV = "station,temp\n" + "".join(f"s{i},{i}.5\n" for i in range(20))


@pytest.fixture
def cli(tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SLUICE_DATABASE_URL", store_url)
    runner = CliRunner()

    def invoke(*args: str, key: str | None = None, code: int = 0) -> Any:
        argv = (["--api-key", key] if key else []) + list(args)
        result = runner.invoke(app, argv)
        assert result.exit_code == code, (argv, result.output)
        return result

    return invoke


def _json(result: Any) -> Any:
    return json.loads(result.stdout)


def test_init_prints_the_bootstrap_key_once_and_is_idempotent(cli) -> None:  # type: ignore[no-untyped-def]
    first = _json(cli("init", "--json"))
    assert first["api_key"].startswith("sk_") and first["created"] is True
    second = _json(cli("init", "--json"))
    assert second["api_key"] is None and second["created"] is False


def test_db_upgrade_twice_is_safe(cli) -> None:  # type: ignore[no-untyped-def]
    assert _json(cli("db", "upgrade", "--json"))["revision"]
    assert _json(cli("db", "upgrade", "--json"))["revision"]


def _registered(cli, tmp_path: Path, dataset_id: str) -> tuple[str, str, dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Through the CLI: init, a provider with a data steward, one weather dataset. (admin, steward, reg)."""
    admin = _json(cli("init", "--json"))["api_key"]
    org = _json(cli("orgs", "create", "Weather Bureau", "--kind", "provider", "--json", key=admin))
    steward = _json(cli("principals", "create", "--org", org["id"], "--name", "wang", "--role", "data_steward",
                        "--json", key=admin))["api_key"]
    data = tmp_path / "weather.csv"
    data.write_text(CSV, "utf-8")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"title": "Weather", "domain": "meteorology", "update_frequency": "daily",
                                "grade": "general"}), "utf-8")
    applied = _json(cli("datasets", "register", str(data), "--meta", str(meta), "--id", dataset_id, "--json",
                        key=steward))
    assert applied["registration_state"] == "applied" and applied["certificate_code"] is None
    reg = _json(cli("registrations", "certify-now", dataset_id, "1", "--reason", "test set-up", "--json", key=admin))
    assert reg["state"] == "certified"
    return admin, steward, reg["metadata"]


def test_verbs_act_through_the_api_and_are_audited_as_cli(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    admin, steward, reg = _registered(cli, tmp_path, "weather")
    assert reg["row_count"] == 20
    listed = _json(cli("datasets", "list", "--json", key=steward))
    assert [d["id"] for d in listed] == ["weather"]
    audit = _json(cli("audit", "list", "--json", "--limit", "200", key=admin))["events"]
    assert {a["actor"]["via"] for a in audit if a["action"] == "dataset:create"} == {"cli"}
    # refusals: wrong role, problem code on stdout with --json, exit 1
    refused = cli("orgs", "create", "X", "--kind", "operator", "--json", key=steward, code=1)
    assert _json(refused)["error"]["code"] == "permission_denied"
    cli("orgs", "list", key="sk_0123456789ab_" + "A" * 43, code=1)


def test_certificate_verifies_offline_and_one_changed_byte_fails(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, steward, reg = _registered(cli, tmp_path, "w")
    code = reg["certificate_code"]
    doc, pem = tmp_path / "cert.json", tmp_path / "cert.pub.pem"
    cli("certificates", "fetch", code, "-o", str(doc), "--json", key=steward)
    cli("certificates", "public-key", "-o", str(pem), "--json", key=steward)
    ok = _json(cli("certificates", "verify", str(doc), "--public-key", str(pem), "--json"))
    assert ok["valid"] is True and ok["code"] == code
    raw = bytearray(doc.read_bytes())
    raw[40] = ord("X") if raw[40] != ord("X") else ord("Y")
    doc.write_bytes(bytes(raw))
    bad = _json(cli("certificates", "verify", str(doc), "--public-key", str(pem), "--json", code=1))
    assert bad["valid"] is False


def test_typos_in_cli_json_files_are_refused_with_the_nearest_field(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    admin, steward, _ = _registered(cli, tmp_path, "weather")
    data = tmp_path / "weather2.csv"
    data.write_text(CSV, "utf-8")
    meta = tmp_path / "typo.json"
    meta.write_text(json.dumps({"title": "Weather", "domain": "meteorology", "update_frequency": "daily",
                                "grade": "general", "colums": {"temp": {"constraint": "hidden"}}}), "utf-8")
    refused = _json(cli("datasets", "register", str(data), "--meta", str(meta), "--id", "w2", "--json",
                        key=steward, code=1))
    assert refused["error"]["code"] == "invalid_metadata" and "did you mean `columns`?" in refused["error"]["detail"]
    op = _json(cli("orgs", "create", "Op", "--kind", "operator", "--json", key=admin))
    grant = tmp_path / "grant.json"
    grant.write_text(json.dumps({"operator_org_id": op["id"], "scope": "whole", "purpose_class": "industry",
                                 "valid_until": "2030-01-01T00:00:00Z",
                                 "column_overides": {"weather": {"temp": "hidden"}}}), "utf-8")
    refused = _json(cli("grants", "create", str(grant), "--json", key=admin, code=1))
    assert "did you mean `column_overrides`?" in refused["error"]["detail"]


def test_registration_and_quality_verbs_with_json(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    admin = _json(cli("init", "--json"))["api_key"]
    me = _json(cli("whoami", "--json", key=admin))
    org = _json(cli("orgs", "create", "Bureau", "--kind", "provider", "--json", key=admin))["id"]
    steward = _json(cli("principals", "create", "--org", org, "--name", "s", "--role", "data_steward", "--json",
                        key=admin))["api_key"]
    reviewer = _json(cli("principals", "create", "--org", me["org_id"], "--name", "r", "--role", "reviewer",
                         "--json", key=admin))["api_key"]
    (tmp_path / "w.csv").write_text(CSV, "utf-8")
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"title": "Weather", "domain": "meteorology", "update_frequency": "daily",
                                "grade": "general", "expectations": [{"kind": "range", "column": "temp",
                                                                      "max": 10}]}), "utf-8")
    cli("datasets", "register", str(tmp_path / "w.csv"), "--meta", str(meta), "--id", "w", "--json", key=steward)
    assert [r["state"] for r in _json(cli("registrations", "list", "--json", key=admin))] == ["applied"]
    assert _json(cli("registrations", "accept", "w", "1", "--json", key=admin))["state"] == "accepted"
    review = _json(cli("registrations", "start-review", "w", "1", "--json", key=reviewer))
    assert [f["code"] for f in review["findings"]] == ["expectation_failed"]
    refused = _json(cli("registrations", "approve", "w", "1", "--comment", "ok", "--json", key=reviewer, code=1))
    assert refused["error"]["code"] == "findings_not_acknowledged"
    done = _json(cli("registrations", "approve", "w", "1", "--comment", "ok", "--acknowledge-findings", "--json",
                     key=reviewer))
    assert done["state"] == "in_public_notice"
    assert [n["dataset"] for n in _json(cli("registrations", "notices", "--json"))] == ["w"]
    profile = _json(cli("quality", "profile", "w", "1", "--json", key=steward))["quality"]
    assert profile["expectations"][0]["failing_rows"] == 10  # 10.5 ... 19.5
    assert _json(cli("quality", "stats", "--json", key=admin))["filed"] == 0


def test_audit_verbs_list_export_verify_and_witness(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    admin, steward, _ = _registered(cli, tmp_path, "wx")
    listed = cli("audit", "list", "--latest", "3", key=admin)
    assert "more records exist" in listed.stderr
    created = _json(cli("audit", "list", "--action", "dataset:", "--json", key=admin))["events"]
    assert [(e["action"], e["resource"]["name"]) for e in created] == [("dataset:create", "dataset/wx")]
    page = _json(cli("audit", "list", "--decision", "deny", "--json", key=admin))
    assert page["events"] == [] and page["more"] is False
    cli("audit", "list", "--action", "org:", key=steward, code=1)  # a data steward may not read the log
    key, first = tmp_path / "log.vkey", tmp_path / "first.txt"
    cli("audit", "public-key", "-o", str(key), "--json", key=admin)
    cli("audit", "checkpoint", "-o", str(first), key=admin)
    state = tmp_path / "witness.json"
    assert _json(cli("audit", "witness", "--state", str(state), "--public-key", str(key), "--json",
                     key=admin))["accepted"] is True
    export = tmp_path / "audit.jsonl"
    cli("audit", "export", "-o", str(export), "--checkpoint", str(first), "--json", key=admin)
    verified = _json(cli("audit", "verify", str(export), "--public-key", str(key), "--checkpoint", str(first),
                         "--json"))
    assert verified["ok"] and verified["tree_size"] > 5
    grown = _json(cli("audit", "witness", "--state", str(state), "--public-key", str(key), "--json", key=admin))
    assert grown["accepted"] and grown["size"] > grown["previous_size"]
    lines = export.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"via":"cli"', b'"via":"api"', 1)
    export.write_bytes(b"\n".join(lines))
    failed = _json(cli("audit", "verify", str(export), "--public-key", str(key), "--json", code=1))
    assert failed["first_bad_entry"] == 2 and failed["first_bad_line"] == 4
    other = tmp_path / "other.vkey"
    other.write_text(key.read_text("utf-8").replace("+", "x", 1), "utf-8")
    cli("audit", "verify", str(export), "--public-key", str(other), code=3)  # Exit.INPUT_FILE (docs/cli.md)
