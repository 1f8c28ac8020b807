"""Scan accounting: rows and bytes from the prepared inputs' Parquet metadata, never from engine counters."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sandbox.executor import InputTable, ScanStats, UnknownInput, scan_stats


def _uncompressed(path: Path) -> dict[str, int]:
    meta = pq.read_metadata(path)
    sizes: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            chunk = meta.row_group(g).column(c)
            top = chunk.path_in_schema.split(".")[0]
            sizes[top] = sizes.get(top, 0) + chunk.total_uncompressed_size
    return sizes


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[InputTable, InputTable]:
    people = tmp_path / "people.parquet"
    pq.write_table(pa.table({
        "person_id": [f"id{i}" for i in range(3000)],
        "age": list(range(3000)),
        "tags": [[i, i + 1] for i in range(3000)],
    }), people, row_group_size=1000)
    visits = tmp_path / "visits.parquet"
    pq.write_table(pa.table({"person_id": ["id1", "id2"], "cost": [1.5, 2.5]}), visits)
    return InputTable("people", people), InputTable("visits", visits)


def test_rows_sum_the_tables_read_and_bytes_sum_the_uncompressed_columns_read(inputs: tuple) -> None:
    people, visits = inputs
    stats = scan_stats(inputs, {"people": ["age", "tags"], "visits": ["cost"]})
    p, v = _uncompressed(people.path), _uncompressed(visits.path)
    assert stats == ScanStats(rows=3002, bytes=p["age"] + p["tags"] + v["cost"])


def test_the_same_inputs_and_columns_always_cost_the_same(inputs: tuple) -> None:
    first = scan_stats(inputs, {"people": ["age"]})
    assert all(scan_stats(inputs, {"people": ["age"]}) == first for _ in range(3))
    assert first.rows == 3000 and first.bytes > 0


def test_names_match_case_insensitively_and_repeats_count_once(inputs: tuple) -> None:
    once = scan_stats(inputs, {"people": ["age"]})
    assert scan_stats(inputs, {"People": ["AGE", "age"], "people": ["Age"]}) == once


def test_a_count_star_read_costs_rows_and_no_bytes(inputs: tuple) -> None:
    assert scan_stats(inputs, {"visits": []}) == ScanStats(rows=2, bytes=0)


def test_tables_not_read_cost_nothing(inputs: tuple) -> None:
    assert scan_stats(inputs, {}) == ScanStats(rows=0, bytes=0)


def test_an_unknown_table_or_column_is_an_error(inputs: tuple) -> None:
    with pytest.raises(UnknownInput, match="salaries"):
        scan_stats(inputs, {"salaries": ["x"]})
    with pytest.raises(UnknownInput, match="diagnosis"):
        scan_stats(inputs, {"people": ["diagnosis"]})
