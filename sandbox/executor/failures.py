"""Map an exception raised during a run to a generic executor error that never carries data values."""

from __future__ import annotations

import re
from typing import Final

import duckdb

from sandbox.executor.errors import ExecutorError, QueryFailed, QueryTimedOut

_OUT_OF_MEMORY: Final = "the query needed more memory than a run may use"
# DuckDB reports an allocation failure inside pyarrow, while it scans an input, as invalid input.
_ARROW_SOURCE_OUT_OF_MEMORY: Final = re.compile(r"Arrow source failed: (?:MemoryError|Out of memory)")

# (exception class, code, client message); the first match in order wins, so subclasses come first.
_ENGINE_ERRORS: Final[tuple[tuple[type[BaseException], str, str], ...]] = (
    (duckdb.OutOfMemoryException, "resource_exhausted", _OUT_OF_MEMORY),
    (MemoryError, "resource_exhausted", _OUT_OF_MEMORY),
    (duckdb.ConversionException, "conversion_error", "a value could not be converted to the requested type"),
    (duckdb.OutOfRangeException, "out_of_range",
     "a value was out of range for its type (for example, an overflow)"),
    (duckdb.TypeMismatchException, "type_mismatch", "the query combines values of incompatible types"),
    (duckdb.BinderException, "binder_error",
     "the query refers to a column or function that does not exist here, or uses it with the wrong types"),
    (duckdb.CatalogException, "catalog_error",
     "the query refers to a table or function that does not exist here"),
    (duckdb.ParserException, "parser_error", "the query could not be parsed"),
    (duckdb.SyntaxException, "parser_error", "the query could not be parsed"),
    (duckdb.PermissionException, "sandbox_violation",
     "the query tried an operation the sandbox does not allow"),
    (duckdb.InvalidInputException, "invalid_input",
     "the query failed on an invalid input (for example, integer division by zero or an unparsable value)"),
    (duckdb.NotImplementedException, "not_supported", "the query uses a feature the engine does not support"),
    (duckdb.Error, "engine_error", "the query failed inside the engine"),
)


def classify_failure(exc: BaseException, *, timeout_ms: int) -> ExecutorError:
    """The generic error for `exc`; its message names the kind of failure, never a value or the raw text.

    The raw engine message is dropped on purpose (a failing CAST reports the offending value); `detail`
    keeps only the exception class name, for operators' logs.
    """
    if isinstance(exc, ExecutorError):
        return exc
    detail = type(exc).__name__
    if isinstance(exc, duckdb.InterruptException):
        return QueryTimedOut(f"the query ran past the time limit of {timeout_ms} ms and was stopped",
                             detail=detail)
    if isinstance(exc, duckdb.InvalidInputException) and _ARROW_SOURCE_OUT_OF_MEMORY.search(str(exc)):
        return QueryFailed(_OUT_OF_MEMORY, code="resource_exhausted", detail=f"{detail} (Arrow source out of memory)")
    for cls, code, message in _ENGINE_ERRORS:
        if isinstance(exc, cls):
            return QueryFailed(message, code=code, detail=detail)
    return ExecutorError("the run failed for an internal reason", code="internal_error", detail=detail)
