"""Defence in depth for the one statement a run executes: exactly one plain SELECT, parsed by DuckDB."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

import duckdb

from sandbox.executor.errors import StatementRefused

# DuckDB types SUMMARIZE, DESCRIBE and SHOW as SELECT too; SQL analysis only ever emits these openings.
ALLOWED_OPENINGS: Final = frozenset({"SELECT", "WITH", "VALUES", "FROM"})
_SKIP = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.DOTALL)
_WORD = re.compile(r"[A-Za-z_]+")


def single_select(sql: str) -> duckdb.Statement:
    """The one SELECT statement in `sql`, parsed by DuckDB; refuses empty, multiple and non-SELECT SQL."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise StatementRefused("the query could not be parsed", code="parser_error",
                               detail=type(exc).__name__) from None
    if not statements:
        raise StatementRefused("the query is empty", code="empty_statement")
    if len(statements) > 1:
        raise StatementRefused(f"a run executes exactly one statement; this SQL has {len(statements)}",
                               code="multiple_statements")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        raise StatementRefused(f"a run executes only SELECT statements, not {statement.type.name}",
                               code="statement_not_allowed")
    opening = _opening_word(sql)
    if opening not in ALLOWED_OPENINGS:
        raise StatementRefused(f"a run executes only plain SELECT statements, not {opening or 'this form'}",
                               code="statement_not_allowed")
    return statement


@lru_cache(maxsize=256)
def checked_select(sql: str) -> duckdb.Statement:
    """`single_select(sql)`, remembered per SQL text: a worker runs the same few approved statements again and again.

    Only accepted statements are remembered (a refusal raises, and `lru_cache` keeps no exceptions); the check is a
    pure function of the text, so a remembered answer is the answer the check would give again.
    """
    return single_select(sql)


def _opening_word(sql: str) -> str:
    """The first keyword of `sql`, past whitespace, comments and opening parentheses, upper-cased."""
    skipped = _SKIP.match(sql)
    start = skipped.end() if skipped else 0
    word = _WORD.match(sql, start)
    return word.group(0).upper() if word else ""
