"""Findings of SQL analysis: the stable codes, the Finding record, and source positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

# --- statement shape -------------------------------------------------------------------------------
SQL_TOO_LONG = "sql_too_long"
SYNTAX_ERROR = "syntax_error"
QUERY_TOO_DEEP = "query_too_deep"
QUERY_TOO_LARGE = "query_too_large"
QUERY_TOO_COMPLEX = "query_too_complex"
EMPTY_QUERY = "empty_query"
MULTIPLE_STATEMENTS = "multiple_statements"
STATEMENT_NOT_ALLOWED = "statement_not_allowed"

# --- allowlist -------------------------------------------------------------------------------------
CONSTRUCT_NOT_ALLOWED = "construct_not_allowed"
FUNCTION_NOT_ALLOWED = "function_not_allowed"
TABLE_FUNCTION_NOT_ALLOWED = "table_function_not_allowed"
FILE_ACCESS_NOT_ALLOWED = "file_access_not_allowed"
CATALOGUE_ACCESS_NOT_ALLOWED = "catalogue_access_not_allowed"
DYNAMIC_SQL_NOT_ALLOWED = "dynamic_sql_not_allowed"
RESOURCE_FUNCTION_NOT_ALLOWED = "resource_function_not_allowed"
RECURSIVE_CTE_NOT_ALLOWED = "recursive_cte_not_allowed"
LAMBDA_NOT_ALLOWED = "lambda_not_allowed"
COLUMNS_EXPRESSION_NOT_ALLOWED = "columns_expression_not_allowed"
POSITIONAL_REFERENCE_NOT_ALLOWED = "positional_reference_not_allowed"
WHOLE_ROW_REFERENCE_NOT_ALLOWED = "whole_row_reference_not_allowed"
PIVOT_NOT_ALLOWED = "pivot_not_allowed"
JOIN_KIND_NOT_ALLOWED = "join_kind_not_allowed"
GROUPING_SETS_NOT_ALLOWED = "grouping_sets_not_allowed"
TYPE_NOT_ALLOWED = "type_not_allowed"
LIMIT_NOT_CONSTANT = "limit_not_constant"
RESERVED_IDENTIFIER = "reserved_identifier"

# --- parameters ------------------------------------------------------------------------------------
UNNAMED_PARAMETER = "unnamed_parameter"
UNKNOWN_PARAMETER = "unknown_parameter"
INVALID_PARAMETER_TYPE = "invalid_parameter_type"

# --- name resolution -------------------------------------------------------------------------------
UNKNOWN_TABLE = "unknown_table"
UNKNOWN_COLUMN = "unknown_column"
AMBIGUOUS_COLUMN = "ambiguous_column"

# --- column constraints ----------------------------------------------------------------------------
COLUMN_NOT_ALLOWED_IN_OUTPUT = "column_not_allowed_in_output"
COLUMN_NOT_ALLOWED_IN_GROUP_KEY = "column_not_allowed_in_group_key"
COLUMN_NOT_ALLOWED_IN_PREDICATE = "column_not_allowed_in_predicate"
COLUMN_NOT_ALLOWED_IN_CONDITION = "column_not_allowed_in_condition"
COLUMN_NOT_ALLOWED_IN_FILTER = "column_not_allowed_in_filter"
COLUMN_NOT_ALLOWED_IN_AGGREGATE = "column_not_allowed_in_aggregate"
COLUMN_NOT_ALLOWED_IN_ORDER_BY = "column_not_allowed_in_order_by"
COLUMN_NOT_ALLOWED_IN_WINDOW = "column_not_allowed_in_window"
UNSAFE_AGGREGATE_ON_PROTECTED_COLUMN = "unsafe_aggregate_on_protected_column"
JOIN_COLUMN_JOINED_WITH_NON_JOIN_COLUMN = "join_column_joined_with_non_join_column"
ERROR_PRONE_EXPRESSION_ON_PROTECTED_COLUMN = "error_prone_expression_on_protected_column"
NON_OPEN_COLUMN_IN_ROW_LEVEL_QUERY = "non_open_column_in_row_level_query"

# --- types (after masking) -------------------------------------------------------------------------
NUMERIC_AGGREGATE_OVER_TEXT = "numeric_aggregate_over_text"

# --- entity columns --------------------------------------------------------------------------------
ENTITY_COLUMN_IN_OUTPUT = "entity_column_in_output"
ENTITY_COLUMN_IN_GROUP_KEY = "entity_column_in_group_key"
ENTITY_COLUMN_COMPARED = "entity_column_compared"

# --- query shape and the group threshold -----------------------------------------------------------
ROW_LEVEL_QUERY_ON_ENTITY_DATA = "row_level_query_on_entity_data"
UNSUPPORTED_QUERY_SHAPE_FOR_THRESHOLD = "unsupported_query_shape_for_threshold"
COMPLEX_AGGREGATE_OVER_ENTITY_DATA = "complex_aggregate_over_entity_data"
UNSAFE_AGGREGATE_OVER_ENTITY_DATA = "unsafe_aggregate_over_entity_data"
WINDOW_IN_AGGREGATE_QUERY = "window_in_aggregate_query"
ROW_SELECTION_BELOW_AGGREGATION = "row_selection_below_aggregation"

# --- engines ---------------------------------------------------------------------------------------
UNSUPPORTED_ON_ENGINE = "unsupported_on_engine"

# --- last resort -----------------------------------------------------------------------------------
INTERNAL_ANALYSIS_ERROR = "internal_analysis_error"

ALL_CODES: tuple[str, ...] = tuple(
    value for name, value in sorted(globals().items()) if name.isupper() and isinstance(value, str)
)


@dataclass(frozen=True)
class Finding:
    """One reason a query is refused: a stable code, a human message and (1-based) line and column."""

    code: str
    message: str
    line: int | None = None
    column: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The finding as a JSON-serializable dict."""
        return {"code": self.code, "message": self.message, "line": self.line, "column": self.column}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        """A finding from `to_dict` output."""
        return cls(code=str(data["code"]), message=str(data["message"]),
                   line=data.get("line"), column=data.get("column"))


class Positions:
    """Turns sqlglot node metadata (character offsets) into 1-based line and column numbers."""

    def __init__(self, sql: str) -> None:
        self.sql = sql

    def of_offset(self, start: int) -> tuple[int, int]:
        """Line and column of a character offset."""
        line = self.sql.count("\n", 0, start) + 1
        column = start - self.sql.rfind("\n", 0, start)
        return line, column

    def of(self, node: exp.Expr | None) -> tuple[int | None, int | None]:
        """Best-effort position of a node: its own start, else the first descendant that has one."""
        if node is None:
            return None, None
        for candidate in node.walk():
            start = candidate.meta.get("start") if candidate.meta else None
            if isinstance(start, int):
                return self.of_offset(start)
        return None, None

    def finding(self, code: str, message: str, node: exp.Expr | None = None) -> Finding:
        """A finding located at `node`."""
        line, column = self.of(node)
        return Finding(code, message, line, column)
