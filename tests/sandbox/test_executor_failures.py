"""Engine failures map to stable codes: an input scan that ran out of memory is resource exhaustion."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest

from sandbox.executor.failures import classify_failure

SCHEMA = pa.schema([("x", pa.int64())])


def _scan_failure(raised: BaseException) -> duckdb.Error:
    """The error DuckDB raises when the Arrow input it scans fails with `raised` after one batch."""

    def batches() -> Iterator[pa.RecordBatch]:
        yield pa.record_batch([pa.array([1, 2])], schema=SCHEMA)
        raise raised

    con = duckdb.connect()
    try:
        con.from_arrow(pa.RecordBatchReader.from_batches(SCHEMA, batches())).create_view("people")
        with pytest.raises(duckdb.Error) as err:
            con.sql("SELECT sum(x) FROM people").fetchall()
        return err.value
    finally:
        con.close()


def _engine_error(message: str) -> duckdb.Error:
    with pytest.raises(duckdb.Error) as err:
        duckdb.sql(f"SELECT error('{message}')").fetchall()
    return err.value


@pytest.mark.parametrize("failure", [
    pytest.param(lambda: _scan_failure(MemoryError()), id="reading the Arrow source"),
    # the wording a worker near its address-space cap saw when pyarrow's dataset scan failed to allocate
    pytest.param(lambda: _engine_error("exporting a stream from the Arrow source failed: MemoryError: "),
                 id="exporting a stream from the Arrow source"),
])
def test_an_input_scan_out_of_memory_is_resource_exhausted_not_invalid_input(failure: object) -> None:
    exc = failure()  # type: ignore[operator]
    assert isinstance(exc, duckdb.InvalidInputException)  # how DuckDB reports it
    error = classify_failure(exc, timeout_ms=1000)
    assert (error.code, error.message) == ("resource_exhausted", "the query needed more memory than a run may use")


def test_another_input_scan_failure_stays_invalid_input_without_its_message() -> None:
    error = classify_failure(_scan_failure(ValueError("value 42 is bad")), timeout_ms=1000)
    assert error.code == "invalid_input"
    assert "42" not in error.message
