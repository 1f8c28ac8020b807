"""Parsing and the structural allowlist: one query statement, of bounded size, built only from allowed nodes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from policy import sql_allowlist as A
from policy import sql_findings as F
from policy.sql_findings import Finding, Positions

MAX_DEPTH = 120
MAX_NODES = 20_000
_DIGITS = re.compile(r"^\d+$")
_ALLOWED_JOIN_KINDS = frozenset({"", "INNER", "OUTER", "CROSS"})
_ALLOWED_JOIN_SIDES = frozenset({"", "LEFT", "RIGHT", "FULL"})
# Select arguments that carry no node of their own but change meaning (SELECT AS STRUCT, INTO, ...).
_SELECT_ARGS = frozenset({"expressions", "from_", "joins", "where", "group", "having", "qualify", "order",
                          "limit", "offset", "with_", "distinct"})
_SET_OP_ARGS = frozenset({"this", "expression", "distinct", "order", "limit", "offset", "with_"})


@dataclass
class Parsed:
    """The outcome of parsing: the query tree (None when refused) and the findings that refuse it."""

    tree: exp.Query | None
    findings: list[Finding] = field(default_factory=list)
    parameters: set[str] = field(default_factory=set)


def parse_query(sql: str, positions: Positions, *, max_sql_length: int) -> Parsed:
    """Parse `sql` as exactly one DuckDB query statement of bounded length and depth."""
    if len(sql) > max_sql_length:
        return Parsed(None, [Finding(F.SQL_TOO_LONG, f"SQL is {len(sql)} characters; the limit is "
                                                     f"{max_sql_length}")])
    try:
        statements = [s for s in sqlglot.parse(sql, dialect="duckdb") if s is not None]
    except RecursionError:
        return Parsed(None, [Finding(F.QUERY_TOO_DEEP, "query is nested too deeply to analyse")])
    except ParseError as err:
        first = err.errors[0] if err.errors else {}
        return Parsed(None, [Finding(F.SYNTAX_ERROR, f"syntax error: {first.get('description', err)}",
                                     first.get("line"), first.get("col"))])
    except TokenError as err:
        return Parsed(None, [Finding(F.SYNTAX_ERROR, f"syntax error: {err}")])
    if not statements:
        return Parsed(None, [Finding(F.EMPTY_QUERY, "no statement found")])
    if len(statements) > 1:
        return Parsed(None, [Finding(F.MULTIPLE_STATEMENTS,
                                     f"{len(statements)} statements found; submit exactly one query")])
    root: exp.Expr = statements[0]
    while isinstance(root, exp.Subquery) and set(k for k, v in root.args.items() if v) == {"this"}:
        root = root.this
    if not isinstance(root, (exp.Select, exp.SetOperation)):
        kind = root.key.upper() if not isinstance(root, exp.Command) else str(root.this).upper()
        return Parsed(None, [positions.finding(F.STATEMENT_NOT_ALLOWED,
                                               f"{kind} is not a query; only SELECT, set operations and WITH "
                                               "queries may run", root)])
    shape = _check_size(root)
    if shape:
        return Parsed(None, [shape])
    parsed = Parsed(root)
    _check_nodes(root, positions, parsed)
    return parsed


def _check_size(root: exp.Expr) -> Finding | None:
    """Refuse trees too deep (recursion in later passes) or too large (analysis time)."""
    stack: list[tuple[exp.Expr, int]] = [(root, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            return Finding(F.QUERY_TOO_DEEP, f"query nests deeper than {MAX_DEPTH} levels")
        if count > MAX_NODES:
            return Finding(F.QUERY_TOO_LARGE, f"query has more than {MAX_NODES} syntax nodes")
        stack.extend((child, depth + 1) for child in node.iter_expressions())
    return None


def check_nodes(root: exp.Expr, positions: Positions) -> list[Finding]:
    """Allowlist findings for a tree (run again after qualification, which introduces nodes of its own)."""
    parsed = Parsed(None)
    _check_nodes(root, positions, parsed)
    return parsed.findings


def _check_nodes(root: exp.Expr, positions: Positions, parsed: Parsed) -> None:
    """Walk every node and refuse anything that is not on the allowlist."""
    seen: set[tuple[str, int | None, int | None]] = set()

    def refuse(code: str, message: str, node: exp.Expr) -> None:
        finding = positions.finding(code, message, node)
        key = (code, finding.line, finding.column)
        if key not in seen:
            seen.add(key)
            parsed.findings.append(finding)

    for node in root.walk():
        problem = _node_problem(node, parsed)
        if problem:
            refuse(problem[0], problem[1], node)


def _node_problem(node: exp.Expr, parsed: Parsed) -> tuple[str, str] | None:
    """Why a single node is not allowed, or None."""
    if isinstance(node, exp.Identifier) and str(node.this).lower().startswith(A.RESERVED_PREFIX):
        return F.RESERVED_IDENTIFIER, f"identifiers starting with {A.RESERVED_PREFIX} are reserved"
    if isinstance(node, exp.Lambda):
        return F.LAMBDA_NOT_ALLOWED, "lambda functions are not allowed"
    if isinstance(node, exp.Columns):
        return F.COLUMNS_EXPRESSION_NOT_ALLOWED, "COLUMNS(...) selects columns dynamically; name them"
    if isinstance(node, exp.TableColumn):
        return F.WHOLE_ROW_REFERENCE_NOT_ALLOWED, f"{node.name} refers to a whole row; name the columns instead"
    if isinstance(node, exp.PositionalColumn):
        return F.POSITIONAL_REFERENCE_NOT_ALLOWED, "positional column references (#n) are not allowed"
    if isinstance(node, exp.Pivot) or type(node).__name__ in ("Unpivot", "UnpivotColumns"):
        return F.PIVOT_NOT_ALLOWED, "PIVOT and UNPIVOT are not allowed"
    if isinstance(node, (exp.Rollup, exp.Cube, exp.GroupingSets)) and not isinstance(node.parent, exp.Group):
        return F.GROUPING_SETS_NOT_ALLOWED, "ROLLUP, CUBE and GROUPING SETS may only stand in GROUP BY"
    if isinstance(node, exp.Placeholder):
        return _placeholder_problem(node, parsed)
    if isinstance(node, exp.Table):
        return _table_problem(node)
    if isinstance(node, exp.Func) and type(node) not in A.STRUCTURAL_NODES:
        denied = A.classify_denied_function(node)
        if denied:
            return denied
        if not A.allowed_function(node):
            return F.FUNCTION_NOT_ALLOWED, f"function {A.function_name(node)}() is not on the allowlist"
        if isinstance(node, A.WINDOW_FUNCTIONS) and not isinstance(node.parent, exp.Window):
            return F.FUNCTION_NOT_ALLOWED, f"{A.function_name(node)}() needs an OVER clause"
        return None
    if type(node) not in A.STRUCTURAL_NODES:
        return F.CONSTRUCT_NOT_ALLOWED, f"{_describe(node)} is not allowed in a governed query"
    return _structural_problem(node)


def _structural_problem(node: exp.Expr) -> tuple[str, str] | None:
    """Problems with allowed node types used in a disallowed way."""
    if isinstance(node, exp.With) and node.args.get("recursive"):
        return F.RECURSIVE_CTE_NOT_ALLOWED, "WITH RECURSIVE is not allowed"
    if isinstance(node, exp.Join):
        return _join_problem(node)
    if isinstance(node, exp.Select):
        extra = sorted(k for k, v in node.args.items() if v not in (None, [], False) and k not in _SELECT_ARGS)
        if extra:
            return F.CONSTRUCT_NOT_ALLOWED, f"SELECT clause(s) {', '.join(extra)} are not allowed"
    if isinstance(node, exp.SetOperation):
        extra = sorted(k for k, v in node.args.items() if v not in (None, [], False) and k not in _SET_OP_ARGS)
        if extra:
            return F.CONSTRUCT_NOT_ALLOWED, (f"set operation modifier(s) {', '.join(extra)} are not allowed; "
                                             "use plain UNION / INTERSECT / EXCEPT [ALL]")
    if isinstance(node, exp.Column) and (node.args.get("db") or node.args.get("catalog")):
        return F.CONSTRUCT_NOT_ALLOWED, f"{node.sql(dialect='duckdb')}: field access on a column is not allowed"
    if isinstance(node, exp.Var) and not isinstance(node.parent, A.VAR_PARENTS):
        return F.CONSTRUCT_NOT_ALLOWED, f"bare keyword {node.name} is not allowed here"
    if isinstance(node, exp.DataType) and (
            node.this not in A.ALLOWED_TYPES or node.args.get("nested") or node.args.get("values")):
        return F.TYPE_NOT_ALLOWED, f"type {node.sql(dialect='duckdb')} is not allowed"
    if isinstance(node, exp.Window) and (node.args.get("alias") or node.args.get("over") not in (None, "OVER")):
        return F.CONSTRUCT_NOT_ALLOWED, "named windows are not allowed; spell the window out"
    if isinstance(node, exp.Limit | exp.Offset):
        value = node.args.get("expression")
        if not (isinstance(value, exp.Placeholder) or (isinstance(value, exp.Literal) and not value.is_string)):
            return F.LIMIT_NOT_CONSTANT, "LIMIT and OFFSET take a number or a parameter"
    if isinstance(node, exp.Count):
        distinct = node.this
        if isinstance(distinct, exp.Distinct) and len(distinct.expressions) != 1:
            return F.CONSTRUCT_NOT_ALLOWED, "count(DISTINCT ...) takes exactly one expression"
    if isinstance(node, exp.Subquery) and any(node.args.get(k) for k in ("joins", "laterals", "pivots")):
        return F.CONSTRUCT_NOT_ALLOWED, "parenthesized join trees are not allowed; write the joins flat"
    if isinstance(node, exp.Distinct) and node.args.get("on") and not isinstance(node.parent, exp.Select):
        return F.CONSTRUCT_NOT_ALLOWED, "DISTINCT ON is only allowed on a SELECT"
    return None


def _join_problem(join: exp.Join) -> tuple[str, str] | None:
    """Only inner, outer and cross joins; no NATURAL, ASOF, POSITIONAL, SEMI, ANTI or LATERAL."""
    method = str(join.args.get("method") or "").upper()
    kind = str(join.args.get("kind") or "").upper()
    side = str(join.args.get("side") or "").upper()
    if method or kind not in _ALLOWED_JOIN_KINDS or side not in _ALLOWED_JOIN_SIDES:
        label = " ".join(p for p in (method, side, kind) if p)
        return F.JOIN_KIND_NOT_ALLOWED, f"{label} JOIN is not allowed; use [LEFT|RIGHT|FULL] JOIN ... ON"
    if isinstance(join.this, exp.Lateral) or join.args.get("match_condition"):
        return F.JOIN_KIND_NOT_ALLOWED, "LATERAL joins are not allowed"
    return None


def _placeholder_problem(node: exp.Placeholder, parsed: Parsed) -> tuple[str, str] | None:
    """Parameters must be named ($name)."""
    name = node.name
    if not name or name == "?" or _DIGITS.match(name):
        return F.UNNAMED_PARAMETER, "parameters must be named ($name) and declared with a type"
    parsed.parameters.add(name.lower())
    return None


def _table_problem(table: exp.Table) -> tuple[str, str] | None:
    """A FROM item must be a plain name: no table functions, files, catalogue relations or samples."""
    if not isinstance(table.this, exp.Identifier):
        denied = A.classify_denied_function(table.this) if isinstance(table.this, exp.Expr) else None
        if denied and denied[0] != F.RESOURCE_FUNCTION_NOT_ALLOWED:
            return denied
        name = A.function_name(table.this) if isinstance(table.this, exp.Expr) else "?"
        return F.TABLE_FUNCTION_NOT_ALLOWED, f"table function {name}() is not allowed; read granted datasets"
    extra = sorted(k for k, v in table.args.items() if v not in (None, [], False)
                   and k not in ("this", "db", "catalog", "alias"))
    if extra:
        return F.CONSTRUCT_NOT_ALLOWED, (f"table modifiers ({', '.join(extra)}) are not allowed; "
                                         "write joins flat, without parentheses")
    return A.classify_table_name(table)


def _describe(node: exp.Expr) -> str:
    if isinstance(node, exp.Func):
        return f"function {A.function_name(node)}()"
    return {
        "Lateral": "LATERAL", "Values": "VALUES", "TableSample": "USING SAMPLE / TABLESAMPLE",
        "Bracket": "subscript [...]", "Dot": "field access (.)", "Collate": "COLLATE", "Lock": "FOR UPDATE",
        "Into": "SELECT INTO", "Fetch": "FETCH", "Parameter": "this parameter style",
    }.get(type(node).__name__, type(node).__name__)


def declared_parameter_types(parameters: Mapping[str, str] | None,
                             positions: Positions) -> tuple[dict[str, exp.DataType], list[Finding]]:
    """Parse the declared parameter types; refuse types that are not allowed scalars."""
    types: dict[str, exp.DataType] = {}
    findings: list[Finding] = []
    for name, type_sql in (parameters or {}).items():
        try:
            dtype = exp.DataType.build(type_sql, dialect="duckdb")
        except (ParseError, TokenError, ValueError):
            findings.append(Finding(F.INVALID_PARAMETER_TYPE, f"parameter ${name}: cannot parse type {type_sql!r}"))
            continue
        if dtype.this not in A.ALLOWED_TYPES or any(
                isinstance(n, exp.DataType) and n is not dtype for n in dtype.walk()):
            findings.append(Finding(F.INVALID_PARAMETER_TYPE,
                                    f"parameter ${name}: type {type_sql!r} is not an allowed scalar type"))
            continue
        types[name.lower()] = dtype
    return types, findings
