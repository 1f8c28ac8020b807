"""Imports point one way: sandbox -> policy, metering, disclosure; disclosure may read metering."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "policy": {"sandbox", "metering", "disclosure"},
    "metering": {"sandbox", "policy", "disclosure"},
    "disclosure": {"sandbox", "policy"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_the_architecture_allows(package: str) -> None:
    offenders = {}
    for path in (ROOT / package).rglob("*.py"):
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_every_package_has_a_readme_stating_invariants() -> None:
    for package in ("sandbox", "policy", "metering", "disclosure"):
        text = (ROOT / package / "README.md").read_text("utf-8")
        assert "Invariants" in text, package
