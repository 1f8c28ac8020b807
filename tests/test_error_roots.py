"""Each package has one error root; the repeated `__init__` is deliberate (the layers stay apart) and said so."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOTS = {"sandbox": "SluiceError", "policy": "PolicyError", "metering": "MeteringError",
         "disclosure": "DisclosureError"}


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_each_error_root_stands_alone_and_its_readme_says_why(package: str) -> None:
    root = getattr(importlib.import_module(f"{package}.errors"), ROOTS[package])
    assert root.__bases__ == (Exception,)
    error = root("what happened", code="some_code", detail=1)
    assert (error.message, error.code, error.context) == ("what happened", "some_code", {"detail": 1})
    readme = (ROOT / package / "README.md").read_text("utf-8")
    assert f"`{ROOTS[package]}`" in readme and "deliberate" in readme
