"""The engines a checked query may run on, and the checked query in each engine's SQL dialect.

DuckDB runs the regenerated SQL that analysis froze. For Spark, that regenerated DuckDB SQL (never the text the
operator submitted) is parsed again and generated as Spark SQL, with the DuckDB-only aggregates the threshold
rewrite uses expressed in Spark's own functions. What cannot be expressed exactly is refused at submission
(`unsupported_on_engine`), so a grant on Spark never approves a query its engine would run differently.
"""

from __future__ import annotations

from typing import Final

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, SqlglotError

from policy.errors import PolicyError

DUCKDB: Final = "duckdb"
SPARK: Final = "spark"
ENGINES: Final = (DUCKDB, SPARK)
DEFAULT_ENGINE: Final = DUCKDB


class UnsupportedOnEngine(PolicyError):
    """The checked query has no exact equivalent in the engine's SQL dialect."""

    code = "unsupported_on_engine"


def check_engine(name: str) -> str:
    """`name` if it is a known engine; raises UnsupportedOnEngine otherwise."""
    if name not in ENGINES:
        raise UnsupportedOnEngine(f"unknown engine {name!r}; engines are {', '.join(ENGINES)}",
                                  code="unknown_engine", engine=name)
    return name


def engine_sql(sql: str, engine: str) -> str:
    """The regenerated, checked DuckDB SQL `sql` in `engine`'s dialect (DuckDB: unchanged)."""
    if check_engine(engine) == DUCKDB:
        return sql
    return to_spark(sql)


def to_spark(sql: str) -> str:
    """Regenerated DuckDB SQL as Spark SQL; parameters become Spark's named markers (`:name`).

    Raises UnsupportedOnEngine when a construct has no exact Spark form, and when the generated text does not
    parse back as exactly one query (defence in depth: Spark must never see a second statement).
    """
    try:
        tree = sqlglot.parse_one(sql, dialect=DUCKDB)
        tree = tree.transform(_spark_node)
        text = tree.sql(dialect=SPARK, comments=False, unsupported_level=ErrorLevel.RAISE)
        back = sqlglot.parse(text, dialect=SPARK)
    except SqlglotError as err:
        raise UnsupportedOnEngine(f"the query has no exact Spark SQL form ({_first_line(err)})",
                                  engine=SPARK) from None
    if len(back) != 1 or not isinstance(back[0], exp.Query):
        raise UnsupportedOnEngine("the Spark SQL form is not exactly one query", engine=SPARK)
    return text


def _spark_node(node: exp.Expr) -> exp.Expr:
    if isinstance(node, exp.Select) and _is_aggregate(node):
        _pin_scalar_subqueries(node)
    return _spark_leaf(node)


def _own(expr: exp.Expr, *, into_aggregates: bool = True) -> list[exp.Expr]:
    """The nodes of `expr` in its own query: nested queries are listed but not entered."""
    out: list[exp.Expr] = []
    stack = [expr]
    while stack:
        node = stack.pop()
        out.append(node)
        if node is not expr and isinstance(node, (exp.Subquery, exp.Query)):
            continue
        if not into_aggregates and isinstance(node, exp.AggFunc):
            continue
        stack.extend(node.iter_expressions())
    return out


def _is_aggregate(select: exp.Select) -> bool:
    return bool(select.args.get("group")) or any(
        isinstance(n, exp.AggFunc) for p in select.expressions for n in _own(p))


def _pin_scalar_subqueries(select: exp.Select) -> None:
    """Spark refuses a correlated scalar subquery beside the aggregates of a grouped SELECT; in an aggregate query
    such a subquery can depend only on group keys, so it is constant per group and any_value() is exact."""
    for projection in select.expressions:
        for node in _own(projection, into_aggregates=False):
            if isinstance(node, exp.Subquery) and not isinstance(node.parent, (exp.In, exp.Exists)):
                node.replace(exp.AnyValue(this=node.copy()))


def _spark_leaf(node: exp.Expr) -> exp.Expr:
    """One node in Spark's terms: DuckDB's top-n `max(x, n)` becomes the n largest of the collected values, the
    rewrite's entity lists `list(e)` keep a NULL entity as index 0 (what output control reads a NULL as), and a
    CTE loses DuckDB's MATERIALIZED hint. Operators cannot call list() or array_agg (sql_allowlist)."""
    if isinstance(node, exp.CTE) and node.args.get("materialized") is not None:
        node.set("materialized", None)  # Spark plans CTEs itself; MATERIALIZED is a DuckDB hint only
        return node
    if isinstance(node, exp.Grouping) and len(node.expressions) > 1:
        # DuckDB's grouping(a, b) is the bitmask grouping(a) * 2 + grouping(b); Spark's grouping_id() would have to
        # name exactly the GROUP BY columns, so the mask is built from one-column grouping() calls.
        n = len(node.expressions)
        terms = [exp.Mul(this=exp.Grouping(expressions=[e.copy()]), expression=exp.Literal.number(1 << (n - 1 - i)))
                 for i, e in enumerate(node.expressions)]
        total: exp.Expr = terms[0]
        for term in terms[1:]:
            total = exp.Add(this=total, expression=term)
        return exp.Paren(this=total)
    if isinstance(node, exp.ArrayAgg):  # the rewrite's entity sets: DuckDB's list keeps NULLs, collect_list drops them
        entity = exp.Coalesce(this=node.this.copy(), expressions=[exp.Literal.number(0)])
        return exp.Anonymous(this="collect_list", expressions=[entity])
    count = node.args.get("count") if isinstance(node, exp.Max) else None
    if count is not None:
        collected = exp.Anonymous(this="collect_list", expressions=[node.this.copy()])
        ordered = exp.Anonymous(this="sort_array", expressions=[collected, exp.false()])
        return exp.Anonymous(this="slice", expressions=[ordered, exp.Literal.number(1), count.copy()])
    return node


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
