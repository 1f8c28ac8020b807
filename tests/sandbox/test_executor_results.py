"""The result write: Parquet bytes hashed once, stored under a temporary name and renamed, directory made on demand."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sandbox.executor.errors import ResultWriteFailed
from sandbox.executor.results import write_result

TABLE = pa.table({"region": [0, 1, 2], "n": [5, 5, 5]})


def test_the_hash_is_of_the_stored_file_and_the_file_reads_back_as_the_table(tmp_path: Path) -> None:
    written = write_result(TABLE, tmp_path / "r.parquet")
    data = (tmp_path / "r.parquet").read_bytes()
    assert written.sha256 == hashlib.sha256(data).hexdigest()
    assert written.bytes == len(data)
    assert written.rows == 3
    assert pq.read_table(tmp_path / "r.parquet").equals(TABLE)


def test_a_missing_results_directory_is_made_on_the_first_write(tmp_path: Path) -> None:
    path = tmp_path / "home" / "results" / "r.parquet"
    write_result(TABLE, path)
    write_result(TABLE, path.with_name("s.parquet"))
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.parquet", "s.parquet"]  # no temporary file left


def test_a_failed_rename_fails_the_write_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / "r.parquet").mkdir()  # a directory where the result should go: the rename fails
    with pytest.raises(ResultWriteFailed):
        write_result(TABLE, tmp_path / "r.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["r.parquet"]


def _codec(path: Path) -> str:
    return str(pq.ParquetFile(path).metadata.row_group(0).column(0).compression)


def test_a_small_result_is_stored_uncompressed_and_a_large_one_with_zstd(tmp_path: Path) -> None:
    write_result(TABLE, tmp_path / "small.parquet")
    large = pa.table({"v": [f"value {i % 97}" for i in range(20_000)]})
    write_result(large, tmp_path / "large.parquet")
    assert (_codec(tmp_path / "small.parquet"), _codec(tmp_path / "large.parquet")) == ("UNCOMPRESSED", "ZSTD")
