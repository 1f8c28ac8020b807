"""`make mutants-known` stays runnable: every recorded mutant still finds its original line, exactly once."""

from __future__ import annotations

import pytest
from known_mutants import MUTANTS, ROOT


@pytest.mark.parametrize(("what", "path", "original"), [(m[0], m[1], m[2]) for m in MUTANTS],
                         ids=[m[0] for m in MUTANTS])
def test_each_known_mutant_still_finds_the_line_it_mutates(what: str, path: str, original: str) -> None:
    assert (ROOT / path).read_text("utf-8").count(original) == 1, f"{what}: update tests/known_mutants.py"
