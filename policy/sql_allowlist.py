"""The allowlist: which sqlglot node types and functions a governed query may contain, and how they classify.

Everything not listed here is refused (fail closed). Denials that correspond to a known attack class get a
specific finding code (file access, catalogue access, dynamic SQL, resource exhaustion, ...); anything else
gets the generic `construct_not_allowed` or `function_not_allowed`.
"""

from __future__ import annotations

import re

from sqlglot import exp

from policy import sql_findings as F

RESERVED_PREFIX = "__sluice"

# --- query structure and operators ----------------------------------------------------------------
STRUCTURAL_NODES: frozenset[type[exp.Expr]] = frozenset({
    exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Subquery, exp.With, exp.CTE, exp.TableAlias,
    exp.From, exp.Join, exp.Table, exp.Where, exp.Group, exp.Having, exp.Qualify, exp.Order, exp.Ordered,
    exp.Limit, exp.Offset, exp.Distinct, exp.Alias, exp.Identifier, exp.Column, exp.Star, exp.Window,
    exp.Rollup, exp.Cube, exp.GroupingSets,
    exp.WindowSpec, exp.Filter, exp.Paren, exp.Tuple, exp.Literal, exp.Null, exp.Boolean, exp.Placeholder,
    exp.DataType, exp.DataTypeParam, exp.Interval, exp.Var, exp.Exists, exp.Any, exp.All, exp.In,
    exp.Between, exp.Is, exp.Not, exp.And, exp.Or, exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE,
    exp.NullSafeEQ, exp.NullSafeNEQ, exp.Like, exp.ILike, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv,
    exp.Mod, exp.Neg, exp.DPipe, exp.Case, exp.If, exp.IgnoreNulls, exp.RespectNulls, exp.Cast,
    exp.TryCast,
})

# Nodes whose operands are compared or tested: a column below one is used as a condition.
PREDICATE_NODES: tuple[type[exp.Expr], ...] = (
    exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ, exp.Like,
    exp.ILike, exp.In, exp.Between, exp.Is, exp.Not, exp.And, exp.Or, exp.StartsWith, exp.EndsWith,
    exp.Contains, exp.Any, exp.All, exp.Nullif, exp.Greatest, exp.Least,
)

# --- functions --------------------------------------------------------------------------------------
SAFE_AGGREGATES: tuple[type[exp.Expr], ...] = (
    exp.Count, exp.Sum, exp.Avg, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance,
    exp.VariancePop, exp.CountIf, exp.ApproxDistinct, exp.Corr, exp.CovarPop, exp.CovarSamp,
    exp.Kurtosis, exp.Skewness,
)
# Aggregates that return (or pin down) one individual's value.
UNSAFE_AGGREGATES: tuple[type[exp.Expr], ...] = (
    exp.Min, exp.Max, exp.ArgMax, exp.ArgMin, exp.First, exp.Last, exp.AnyValue, exp.Median, exp.Mode,
    exp.Quantile, exp.PercentileCont, exp.PercentileDisc, exp.ApproxQuantile,
)
AGGREGATES = SAFE_AGGREGATES + UNSAFE_AGGREGATES
# Functions that only make sense with OVER (...).
WINDOW_FUNCTIONS: tuple[type[exp.Expr], ...] = (
    exp.RowNumber, exp.Rank, exp.DenseRank, exp.PercentRank, exp.CumeDist, exp.Ntile, exp.Lag, exp.Lead,
    exp.FirstValue, exp.LastValue, exp.NthValue,
)
SCALAR_FUNCTIONS: frozenset[type[exp.Expr]] = frozenset({
    exp.Lower, exp.Upper, exp.Substring, exp.Length, exp.Trim, exp.Concat, exp.ConcatWs, exp.StartsWith,
    exp.EndsWith, exp.Contains, exp.StrPosition, exp.Left, exp.Right, exp.Initcap, exp.Round, exp.Floor,
    exp.Ceil, exp.Abs, exp.Sign, exp.Trunc, exp.Greatest, exp.Least, exp.Coalesce, exp.Nullif,
    exp.Extract, exp.TimestampTrunc, exp.DateTrunc, exp.Year, exp.Month, exp.Day, exp.DayOfMonth,
    exp.Quarter, exp.DayOfWeek, exp.DayOfWeekIso, exp.DayOfYear, exp.Week, exp.WeekOfYear, exp.Hour,
    exp.Minute, exp.Second, exp.Dayname, exp.Monthname, exp.LastDay, exp.CurrentDate, exp.CurrentTimestamp,
    exp.DateAdd, exp.DateSub, exp.DateDiff, exp.TimeToStr, exp.DateBin, exp.TimeToUnix,
})
# DuckDB functions that sqlglot leaves as exp.Anonymous, by lower-case name.
ANONYMOUS_SCALARS: frozenset[str] = frozenset({"date_part", "datepart", "strlen", "prefix", "suffix", "now"})

# Constructs that raise an error carrying the offending value (or a one-bit oracle) when fed a bad value.
ERROR_PRONE_NODES: tuple[type[exp.Expr], ...] = (exp.Cast, exp.IntDiv, exp.Mod)
# Targets a CAST can always reach without an error.
NEVER_FAILING_CAST_TARGETS: frozenset[exp.DType] = frozenset({
    exp.DataType.Type.VARCHAR, exp.DataType.Type.TEXT,
})

# Parents under which a bare keyword (exp.Var) is a unit or a modifier, not a value.
VAR_PARENTS: tuple[type[exp.Expr], ...] = (
    exp.Extract, exp.TimestampTrunc, exp.DateTrunc, exp.DateDiff, exp.DateAdd, exp.DateSub, exp.Interval,
    exp.Ordered, exp.DateBin,
)

_T = exp.DataType.Type
ALLOWED_TYPES: frozenset[exp.DType] = frozenset({
    _T.BOOLEAN, _T.TINYINT, _T.SMALLINT, _T.INT, _T.BIGINT, _T.INT128, _T.UTINYINT, _T.USMALLINT,
    _T.UINT, _T.UBIGINT, _T.FLOAT, _T.DOUBLE, _T.DECIMAL, _T.VARCHAR, _T.TEXT, _T.CHAR, _T.DATE,
    _T.TIMESTAMP, _T.TIMESTAMPNTZ, _T.TIMESTAMPTZ, _T.TIME, _T.INTERVAL,
})

# --- specific denials -------------------------------------------------------------------------------
_FILE_FUNCTIONS = re.compile(
    r"^(read_\w+|\w+_scan|glob|parquet_\w+|sniff_csv|delta_\w+|iceberg_\w+|from_csv\w*|from_json\w*)$"
)
_CATALOGUE_FUNCTIONS = re.compile(
    r"^(duckdb_\w+|pragma_\w+|pg_\w+|has_\w+_privilege|current_setting|getenv|version|current_database"
    r"|current_schema|current_schemas|current_catalog|current_user|current_role|session_user|user"
    r"|getvariable|which_secret|txid_current|current_query|in_search_path|col_description"
    r"|obj_description|shobj_description|format_type|database_size|icu_calendar_names|test_all_types"
    r"|test_vector_types|checkpoint|force_checkpoint|enable_\w+|disable_\w+|set_\w+|load_extension)$"
)
_DYNAMIC_FUNCTIONS = frozenset({"query", "query_table"})
_RESOURCE_FUNCTIONS = re.compile(
    r"^(repeat|lpad|rpad|range|generate_series|list_\w+|array_\w+|unnest|sleep\w*|pg_sleep\w*|space"
    r"|string_agg|group_concat|listagg|list|array_agg|histogram\w*|map\w*|struct_\w+|row|string_split\w*"
    r"|str_split\w*|regexp_split\w*|bar)$"
)
_CATALOGUE_CLASSES: tuple[type[exp.Expr], ...] = (
    exp.CurrentVersion, exp.CurrentDatabase, exp.CurrentSchema, exp.CurrentSchemas, exp.CurrentUser,
    exp.CurrentRole, exp.SessionUser, exp.CurrentCatalog,
)
_FILE_CLASSES: tuple[type[exp.Expr], ...] = (exp.ReadCSV, exp.ReadParquet)
_RESOURCE_CLASSES: tuple[type[exp.Expr], ...] = (
    exp.Repeat, exp.Pad, exp.GenerateSeries, exp.ExplodingGenerateSeries, exp.Unnest, exp.Explode,
    exp.ArrayAgg, exp.GroupConcat, exp.Array, exp.Space, exp.Struct, exp.Map, exp.VarMap,
)
CATALOGUE_SCHEMAS = frozenset({"information_schema", "pg_catalog", "system", "temp"})
_CATALOGUE_TABLES = re.compile(r"^(duckdb_\w+|pragma_\w+|sqlite_\w+|pg_\w+)$")
_FILE_LIKE_NAME = re.compile(r"[/\\:.]|^~")


def function_name(node: exp.Expr) -> str:
    """The lower-case SQL name of a function node."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return type(node).__name__.lower()


def classify_denied_function(node: exp.Expr) -> tuple[str, str] | None:
    """A specific (code, reason) for a function that belongs to a known attack class, else None."""
    name = function_name(node)
    if isinstance(node, _FILE_CLASSES) or _FILE_FUNCTIONS.match(name):
        return F.FILE_ACCESS_NOT_ALLOWED, f"{name}() reads files or URLs; only granted datasets may be read"
    if name in _DYNAMIC_FUNCTIONS:
        return F.DYNAMIC_SQL_NOT_ALLOWED, f"{name}() runs SQL built at run time, which cannot be checked"
    if isinstance(node, _RESOURCE_CLASSES) or _RESOURCE_FUNCTIONS.match(name):
        return (F.RESOURCE_FUNCTION_NOT_ALLOWED,
                f"{name}() can build unbounded values (memory or time exhaustion) or sleep")
    if isinstance(node, _CATALOGUE_CLASSES) or _CATALOGUE_FUNCTIONS.match(name):
        return (F.CATALOGUE_ACCESS_NOT_ALLOWED,
                f"{name}() discloses the catalogue, settings or environment of the sandbox")
    return None


def classify_table_name(table: exp.Table) -> tuple[str, str] | None:
    """A (code, reason) for a FROM item that names a file, a catalogue relation or another database."""
    name = table.name
    db, catalog = table.text("db"), table.text("catalog")
    if db.lower() in CATALOGUE_SCHEMAS or catalog.lower() in CATALOGUE_SCHEMAS or _CATALOGUE_TABLES.match(
            name.lower()):
        return F.CATALOGUE_ACCESS_NOT_ALLOWED, f"{table.sql(dialect='duckdb')} is a catalogue relation"
    if isinstance(table.this, exp.Identifier) and _FILE_LIKE_NAME.search(name):
        return F.FILE_ACCESS_NOT_ALLOWED, f"'{name}' looks like a file path or URL; only datasets may be read"
    if db or catalog:
        return F.UNKNOWN_TABLE, (f"{table.sql(dialect='duckdb')} is qualified with a schema or database; "
                                 "refer to granted datasets by their bare name")
    return None


def is_aggregate(node: exp.Expr) -> bool:
    """Whether the node is an aggregate function call (safe or unsafe)."""
    return isinstance(node, AGGREGATES)


def is_safe_aggregate(node: exp.Expr) -> bool:
    """Whether the node is an aggregate that never returns an individual's value."""
    return isinstance(node, SAFE_AGGREGATES)


def allowed_function(node: exp.Expr) -> bool:
    """Whether a function node is on the allowlist (aggregates, window functions and scalars)."""
    if isinstance(node, exp.Anonymous):
        return function_name(node) in ANONYMOUS_SCALARS
    return type(node) in SCALAR_FUNCTIONS or isinstance(node, (*AGGREGATES, *WINDOW_FUNCTIONS, exp.Grouping))
