"""End to end: the demo flow, then the regulator exports the log and verifies it offline with the CLI; the
untouched export verifies, one changed byte names its record, deleted or swapped lines fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.demo.run import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("demo") / "home"
    return run_demo(home, as_json=True)


def _verify(export: Path, key: str, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["audit", "verify", str(export), "--public-key", key, "--json", *extra])
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.slow
def test_the_demo_ends_with_a_verified_checkpoint(demo: dict[str, Any]) -> None:
    audit = demo["audit"]
    assert audit["verified"] and audit["tampered_detected"] and audit["tree_size"] > 30
    assert audit["checkpoint"].split("\n")[1] == str(audit["tree_size"])


@pytest.mark.slow
def test_the_demo_export_verifies_and_every_alteration_fails(demo: dict[str, Any], tmp_path: Path) -> None:
    files = demo["audit"]["files"]
    code, report = _verify(Path(files["export"]), files["public_key"], "--checkpoint", files["checkpoint"])
    assert code == 0 and report["ok"] and report["entries"] == demo["audit"]["tree_size"]
    lines = Path(files["export"]).read_bytes().rstrip(b"\n").split(b"\n")

    def variant(name: str, new: list[bytes]) -> Path:
        path = tmp_path / name
        path.write_bytes(b"\n".join(new) + b"\n")
        return path

    target = 20  # entry 20 is on line 22 (line 1 is the header)
    line = lines[target + 1]
    at = line.index(b'"reason":"') + len(b'"reason":"') + 1
    edited = [*lines[: target + 1], line[:at] + bytes([line[at] ^ 0x20]) + line[at + 1:], *lines[target + 2:]]
    code, report = _verify(variant("edited.jsonl", edited), files["public_key"])
    assert code == 1 and report["first_bad_entry"] == target and report["first_bad_line"] == target + 2
    code, report = _verify(variant("deleted.jsonl", lines[:10] + lines[11:]), files["public_key"])
    assert code == 1 and report["first_bad_entry"] == 9 and "missing" in report["problems"][0]
    swapped = [*lines[:10], lines[11], lines[10], *lines[12:]]
    code, report = _verify(variant("swapped.jsonl", swapped), files["public_key"])
    assert code == 1 and report["first_bad_entry"] == 9 and "out of order" in report["problems"][0]
    code, report = _verify(variant("truncated.jsonl", lines[:-1]), files["public_key"])
    assert code == 1 and "truncated" in report["problems"][0]
