"""Type facts that decide whether DuckDB can fail on a value (and report it in the error)."""

from __future__ import annotations

from sqlglot import exp

from policy import sql_allowlist as A

_T = exp.DataType.Type
_INTEGERS = (_T.TINYINT, _T.SMALLINT, _T.INT, _T.BIGINT, _T.INT128)
NUMERIC_TYPES = frozenset({*_INTEGERS, _T.UTINYINT, _T.USMALLINT, _T.UINT, _T.UBIGINT, _T.DECIMAL, _T.FLOAT, _T.DOUBLE})


def cast_can_fail(cast: exp.Cast) -> bool:
    """Whether a CAST may raise a conversion error (and so report the value it failed on)."""
    target = cast.to.this
    source = cast.this.type.this if cast.this.type else _T.UNKNOWN
    if target in A.NEVER_FAILING_CAST_TARGETS or source == _T.NULL:
        return False
    if source == target and cast.this.type is not None and cast.this.type.sql() == cast.to.sql():
        return False
    if target in (_T.DOUBLE, _T.FLOAT) and (source in NUMERIC_TYPES or source == _T.BOOLEAN):
        return False
    if source == _T.BOOLEAN and target in NUMERIC_TYPES:
        return False
    if source in _INTEGERS and target in _INTEGERS and _INTEGERS.index(source) <= _INTEGERS.index(target):
        return False
    return not (source == _T.DATE and target in (_T.TIMESTAMP, _T.TIMESTAMPNTZ, _T.TIMESTAMPTZ))


TEXT_TYPES = frozenset({_T.TEXT, _T.VARCHAR, _T.CHAR})
_UNTYPED = frozenset({_T.NULL, _T.UNKNOWN})


def implicitly_cast_text(node: exp.Expr) -> list[exp.Expr]:
    """The text operands of a comparison that DuckDB would cast to a non-text type (empty when none)."""
    operands = [node.this, *(node.expressions if isinstance(node, exp.In) else []),
                *(node.args[k] for k in ("expression", "low", "high") if node.args.get(k) is not None)]
    query = node.args.get("query") if isinstance(node, exp.In) else None
    if query is not None and isinstance(query.unnest(), exp.Select) and len(query.unnest().expressions) == 1:
        operands.append(query.unnest().expressions[0])
    typed = [(o, o.type.this if o.type else _T.UNKNOWN) for o in operands]
    if not any(t not in TEXT_TYPES and t not in _UNTYPED for _, t in typed):
        return []
    return [operand for operand, dtype in typed if dtype in TEXT_TYPES]
