"""The fixture loader refuses what it would otherwise drop silently."""

from __future__ import annotations

from pathlib import Path

import pytest
from casebook import load_cases

BOOK = '''schema = "city"

[[case]]
title = "a count by district"
sql = "SELECT district, count(*) AS n FROM residents GROUP BY district"
verdict = "accepted"
{extra}
'''


def test_a_case_with_a_misspelt_key_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "book.toml").write_text(BOOK.format(extra="audit_supressed = 2"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown keys \['audit_supressed'\]"):
        load_cases(tmp_path)


def test_a_case_with_known_keys_loads(tmp_path: Path) -> None:
    (tmp_path / "book.toml").write_text(BOOK.format(extra="audit_suppressed = 2"), encoding="utf-8")
    [case] = load_cases(tmp_path)
    assert (case.title, case.audit_suppressed) == ("a count by district", 2)
