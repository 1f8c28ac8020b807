"""Map a Spark failure to a generic executor error: its kind, never its message (which can quote values)."""

from __future__ import annotations

from sandbox.executor.errors import ExecutorError, QueryFailed

# (pyspark.errors class name, code, client message); the first match in the exception's MRO wins.
_SPARK_ERRORS: dict[str, tuple[str, str]] = {
    "ParseException": ("parser_error", "the query could not be parsed"),
    "AnalysisException": ("binder_error",
                          "the query refers to a column or function that does not exist here, or uses it with the "
                          "wrong types"),
    "ArithmeticException": ("out_of_range",
                            "a value was out of range for its type (for example, an overflow or a division by zero)"),
    "NumberFormatException": ("conversion_error", "a value could not be converted to the requested type"),
    "DateTimeException": ("conversion_error", "a value could not be converted to the requested type"),
    "IllegalArgumentException": ("invalid_input", "the query failed on an invalid input"),
    "SparkRuntimeException": ("engine_error", "the query failed inside the engine"),
    "QueryExecutionException": ("engine_error", "the query failed inside the engine"),
    "PySparkException": ("engine_error", "the query failed inside the engine"),
    "Py4JJavaError": ("engine_error", "the query failed inside the engine"),
}


def classify_spark_failure(exc: BaseException, *, timeout_ms: int) -> ExecutorError:
    """The generic error for a Spark exception; `detail` keeps only the exception class name.

    A run past its time limit is recognised where its timer fired (SparkEngine), never from a message.
    """
    if isinstance(exc, ExecutorError):
        return exc
    detail = type(exc).__name__
    if isinstance(exc, MemoryError):
        return QueryFailed("the query needed more memory than a run may use", code="resource_exhausted", detail=detail)
    names = [cls.__name__ for cls in type(exc).__mro__]
    for name in names:
        if name in _SPARK_ERRORS:
            code, message = _SPARK_ERRORS[name]
            return QueryFailed(message, code=code, detail=detail)
    return ExecutorError("the run failed for an internal reason", code="internal_error", detail=detail)
