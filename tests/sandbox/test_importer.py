"""Dataset file normalization: CSV, JSON lines and Parquet become one atomically written Parquet file."""

from __future__ import annotations

import hashlib
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sandbox.catalogue import import_csv
from sandbox.catalogue.importer import (
    ImportOptions,
    NormalizedFile,
    describe_parquet,
    normalize,
    resolve_import_path,
)
from sandbox.errors import SluiceError

CHINESE_CSV = "district,name,income\n东城区,张三,1200\n西城区,李四,NA\n朝阳区,王五,980\n"


def options(**overrides: Any) -> ImportOptions:
    """Import options with test defaults, overridden per test."""
    return ImportOptions(**overrides)


def write(tmp_path: Path, data: str | bytes, name: str = "source.csv", encoding: str = "utf-8") -> Path:
    """Write a source file (text is encoded with `encoding`)."""
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return path


def run(tmp_path: Path, source: Path, opts: ImportOptions | None = None, **kwargs: Any) -> NormalizedFile:
    """Normalize `source` into tmp_path/out/v1."""
    return normalize(source, tmp_path / "out" / "v1", opts or options(), **kwargs)


def refused(tmp_path: Path, source: Path, opts: ImportOptions | None = None, **kwargs: Any) -> SluiceError:
    """Normalize and return the error; also assert that nothing was left in the output folder."""
    with pytest.raises(SluiceError) as info:
        run(tmp_path, source, opts, **kwargs)
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == [], "a failed import left files behind"
    return info.value


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- encodings and content -------------------------------------------------------------------------------


def test_utf8_and_gbk_csv_with_chinese_text_give_identical_parquet(tmp_path: Path) -> None:
    utf8 = normalize(write(tmp_path, CHINESE_CSV, "u.csv"), tmp_path / "a", options(null_markers=("NA",)))
    gbk_source = write(tmp_path, CHINESE_CSV, "g.csv", encoding="gbk")
    gbk = normalize(gbk_source, tmp_path / "b", options(encoding="gbk", null_markers=("NA",)))

    assert pq.read_table(utf8.path).equals(pq.read_table(gbk.path))
    assert pq.read_table(gbk.path).column("name").to_pylist() == ["张三", "李四", "王五"]
    assert utf8.parquet_sha256 == gbk.parquet_sha256
    assert utf8.source_sha256 != gbk.source_sha256


def test_gb18030_is_accepted_and_reads_gbk_text(tmp_path: Path) -> None:
    result = run(tmp_path, write(tmp_path, CHINESE_CSV, encoding="gbk"), options(encoding="GB18030"))
    assert pq.read_table(result.path).column("district").to_pylist() == ["东城区", "西城区", "朝阳区"]


def test_utf8_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    result = run(tmp_path, write(tmp_path, b"\xef\xbb\xbfcode,n\nA,1\n"))
    assert [c.name for c in result.columns] == ["code", "n"]


def test_null_markers_become_nulls_in_text_and_number_columns(tmp_path: Path) -> None:
    source = write(tmp_path, "name,income,note\nA,NA,x\nB,12,NA\nC,-,\n")
    result = run(tmp_path, source, options(null_markers=("NA", "-", "")))
    table = pq.read_table(result.path).to_pydict()
    assert table == {"name": ["A", "B", "C"], "income": [None, 12, None], "note": ["x", None, None]}


def test_without_null_markers_empty_text_stays_an_empty_string(tmp_path: Path) -> None:
    result = run(tmp_path, write(tmp_path, "name,note\nA,\n"), options(null_markers=()))
    assert pq.read_table(result.path).column("note").to_pylist() == [""]


def test_gbk_bytes_declared_as_utf8_are_refused_as_wrong_encoding_with_their_line(tmp_path: Path) -> None:
    source = write(tmp_path, "district,n\nabc,1\nxyz,2\n东城区,3\n", encoding="gbk")
    error = refused(tmp_path, source)
    assert error.code == "wrong_encoding"
    assert error.context["line"] == 4
    assert "gbk" in error.message


def test_invalid_gbk_bytes_are_refused_as_wrong_encoding_with_their_line(tmp_path: Path) -> None:
    source = write(tmp_path, "a,b\n".encode("gbk") + "东,1\n".encode("gbk") + b"\xff\xfe,2\n")
    error = refused(tmp_path, source, options(encoding="gbk"))
    assert (error.code, error.context["line"]) == ("wrong_encoding", 3)


def test_wrong_encoding_far_into_a_large_file_names_its_line(tmp_path: Path) -> None:
    body = "".join(f"{i},row {i}\n" for i in range(200_000))  # several MiB: past the first read chunk
    source = write(tmp_path, ("id,label\n" + body).encode() + "东,x\n".encode("gbk"))
    error = refused(tmp_path, source)
    assert (error.code, error.context["line"]) == ("wrong_encoding", 200_002)


def test_unknown_encoding_is_refused_before_reading(tmp_path: Path) -> None:
    error = refused(tmp_path, write(tmp_path, "a\n1\n"), options(encoding="latin-1"))
    assert error.code == "unsupported_encoding"


# --- malformed files ---------------------------------------------------------------------------------------


def test_row_with_an_extra_field_is_malformed_with_its_line(tmp_path: Path) -> None:
    error = refused(tmp_path, write(tmp_path, "a,b\n1,2\n3,4\n5,6,7\n8,9\n"))
    assert error.code == "malformed_file"
    assert error.context["line"] == 4
    assert (error.context["fields"], error.context["expected_fields"]) == (3, 2)


def test_line_numbers_count_blank_lines_and_newlines_inside_quotes(tmp_path: Path) -> None:
    source = write(tmp_path, 'a,b\n\n1,"two\nlines"\n\n3,4,5\n')
    error = refused(tmp_path, source)
    assert (error.code, error.context["line"]) == ("malformed_file", 6)


def test_extra_field_far_into_a_large_file_names_its_line(tmp_path: Path) -> None:
    body = "".join(f"{i},{i * 2}\n" for i in range(300_000))
    error = refused(tmp_path, write(tmp_path, "a,b\n" + body + "1,2,3\n"))
    assert (error.code, error.context["line"]) == ("malformed_file", 300_002)


def test_value_that_does_not_fit_a_declared_type_is_malformed_with_its_line(tmp_path: Path) -> None:
    source = write(tmp_path, "cost,day\n1.50,2026-01-01\n2.25,2026-01-02\n3.333,2026-01-03\n")
    error = refused(tmp_path, source, options(column_types={"cost": "DECIMAL(10,2)"}))
    assert error.code == "malformed_file"
    assert (error.context["line"], error.context["column"]) == (4, "cost")


def test_bad_date_in_a_declared_date_column_is_malformed_with_its_line(tmp_path: Path) -> None:
    source = write(tmp_path, "day\n2026-01-01\n2026-13-01\n")
    error = refused(tmp_path, source, options(column_types={"day": "DATE"}))
    assert (error.code, error.context["line"]) == ("malformed_file", 3)


def test_bad_json_line_is_malformed_with_its_line(tmp_path: Path) -> None:
    source = write(tmp_path, '{"a": 1}\n\n{"a": 2\n{"a": 3}\n', "s.jsonl")
    error = refused(tmp_path, source)
    assert (error.code, error.context["line"]) == ("malformed_file", 3)


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("[1, 2]", "malformed_file"),
        ('{"a": NaN}', "malformed_file"),
        ('{"a": 1, "a": 2}', "duplicate_column"),
        ('{"a": {"nested": 1}}', "unsupported_column_type"),
        ('{"a": "text"}', "malformed_file"),
    ],
)
def test_json_lines_refuse_what_is_not_one_flat_consistent_object(tmp_path: Path, line: str, code: str) -> None:
    source = write(tmp_path, '{"a": 1}\n' + line + "\n", "s.jsonl")
    error = refused(tmp_path, source)
    assert (error.code, error.context["line"]) == (code, 2)


def test_truncated_parquet_is_malformed(tmp_path: Path) -> None:
    good = write(tmp_path, b"", "good.parquet")
    pq.write_table(pa.table({"a": list(range(1000))}), good)
    data = good.read_bytes()
    error = refused(tmp_path, write(tmp_path, data[: len(data) // 2], "cut.parquet"))
    assert error.code == "malformed_file"


def test_parquet_with_a_damaged_page_is_malformed_with_a_row(tmp_path: Path) -> None:
    good = write(tmp_path, b"", "good.parquet")
    pq.write_table(pa.table({"a": [f"value {i}" for i in range(5000)]}), good, compression="zstd")
    data = bytearray(good.read_bytes())
    for i in range(200, 400):  # inside the first data page, footer intact
        data[i] ^= 0xFF
    error = refused(tmp_path, write(tmp_path, bytes(data), "bad.parquet"))
    assert error.code == "malformed_file"
    assert error.context["row"] == 1


# --- empty files and column names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("zero.csv", ""),
        ("blank.csv", "\n\n"),
        ("header_only.csv", "a,b\n"),
        ("blank.jsonl", "\n  \n"),
        ("no_keys.jsonl", "{}\n{}\n"),
    ],
)
def test_files_without_rows_or_columns_are_refused_as_empty(tmp_path: Path, name: str, data: str) -> None:
    assert refused(tmp_path, write(tmp_path, data, name)).code == "empty_file"


def test_parquet_without_rows_is_refused_as_empty(tmp_path: Path) -> None:
    source = write(tmp_path, b"", "e.parquet")
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), source)
    assert refused(tmp_path, source).code == "empty_file"


def test_duplicate_column_names_are_refused_regardless_of_case(tmp_path: Path) -> None:
    error = refused(tmp_path, write(tmp_path, "id,name,Name\n1,a,b\n"))
    assert error.code == "duplicate_column"
    assert error.context["column"] == "Name"


@pytest.mark.parametrize("bad", ["1st", "first name", "", "e-mail", "select", "ORDER", "名字 "])
def test_column_names_must_be_plain_identifiers(tmp_path: Path, bad: str) -> None:
    error = refused(tmp_path, write(tmp_path, f"id,{bad}\n1,2\n"))
    assert error.code == "invalid_column_name"
    assert error.context["column"] == bad


def test_chinese_and_underscore_column_names_are_kept_as_given(tmp_path: Path) -> None:
    result = run(tmp_path, write(tmp_path, "区县,_id,收入2026\n东城区,1,3\n"))
    assert [c.name for c in result.columns] == ["区县", "_id", "收入2026"]


def test_without_a_header_columns_are_numbered_from_zero(tmp_path: Path) -> None:
    result = run(tmp_path, write(tmp_path, "1,x\n2,y\n"), options(header=False, column_types={"column0": "INTEGER"}))
    assert [(c.name, c.type) for c in result.columns] == [("column0", "INTEGER"), ("column1", "VARCHAR")]
    assert result.row_count == 2


# --- formats, limits, options -----------------------------------------------------------------------------


def test_unknown_suffix_or_format_is_unsupported(tmp_path: Path) -> None:
    assert refused(tmp_path, write(tmp_path, "a\n1\n", "data.xml")).code == "unsupported_format"
    assert refused(tmp_path, write(tmp_path, "a\n1\n"), options(format="xml")).code == "unsupported_format"


def test_a_text_file_named_xlsx_is_a_malformed_workbook(tmp_path: Path) -> None:
    assert refused(tmp_path, write(tmp_path, "a\n1\n", "data.xlsx")).code == "malformed_file"


def test_explicit_format_wins_over_the_suffix(tmp_path: Path) -> None:
    result = run(tmp_path, write(tmp_path, '{"a": 1}\n', "upload.bin"), options(format="jsonl"))
    assert result.row_count == 1


def test_tsv_files_default_to_tab_delimiter(tmp_path: Path) -> None:
    result = run(tmp_path, write(tmp_path, "a\tb\n1\tx,y\n", "s.tsv"))
    assert pq.read_table(result.path).to_pydict() == {"a": [1], "b": ["x,y"]}


def test_semicolon_delimiter(tmp_path: Path) -> None:
    result = run(tmp_path, write(tmp_path, "a;b\n1;2,5\n"), options(delimiter=";"))
    assert pq.read_table(result.path).to_pydict() == {"a": [1], "b": ["2,5"]}


def test_file_over_max_bytes_is_refused(tmp_path: Path) -> None:
    source = write(tmp_path, "a\n" + "1\n" * 100)
    error = refused(tmp_path, source, max_bytes=100)
    assert error.code == "file_too_large"
    assert error.context == {"size": 202, "max_bytes": 100}
    assert "SLUICE_MAX_UPLOAD_BYTES" in error.message


def test_column_types_must_name_existing_columns_and_known_types(tmp_path: Path) -> None:
    source = write(tmp_path, "a,b\n1,2\n")
    assert refused(tmp_path, source, options(column_types={"c": "BIGINT"})).code == "unknown_column"
    assert refused(tmp_path, source, options(column_types={"a": "MONEY"})).code == "invalid_column_type"
    assert refused(tmp_path, source, options(column_types={"a": "DECIMAL(40,2)"})).code == "invalid_column_type"


def test_missing_source_is_not_found(tmp_path: Path) -> None:
    error = refused(tmp_path, tmp_path / "nope.csv")
    assert error.code == "source_not_found"


# --- types ------------------------------------------------------------------------------------------------


def test_declared_decimal_survives_csv_as_decimal128(tmp_path: Path) -> None:
    source = write(tmp_path, "item,cost,day,seen_at\nA,12.50,2026-03-01,2026-03-01 08:00:00\nB,0.05,2026-03-02,\n")
    types = {"cost": "DECIMAL(10,2)", "day": "DATE", "seen_at": "TIMESTAMP"}
    result = run(tmp_path, source, options(column_types=types))

    assert result.arrow_schema.field("cost").type == pa.decimal128(10, 2)
    assert pq.read_table(result.path).column("cost").to_pylist() == [Decimal("12.50"), Decimal("0.05")]
    assert result.schema_json() == [
        {"name": "item", "type": "VARCHAR", "arrow_type": "string"},
        {"name": "cost", "type": "DECIMAL(10,2)", "arrow_type": "decimal128(10, 2)"},
        {"name": "day", "type": "DATE", "arrow_type": "date32[day]"},
        {"name": "seen_at", "type": "TIMESTAMP", "arrow_type": "timestamp[us]"},
    ]


def test_declared_decimal_survives_json_lines_from_numbers_and_strings(tmp_path: Path) -> None:
    source = write(tmp_path, '{"cost": 12.5}\n{"cost": "0.05"}\n{"cost": 3}\n', "s.jsonl")
    result = run(tmp_path, source, options(column_types={"cost": "DECIMAL(10,2)"}))
    assert result.arrow_schema.field("cost").type == pa.decimal128(10, 2)
    assert pq.read_table(result.path).column("cost").to_pylist() == [Decimal("12.50"), Decimal("0.05"), 3]


def test_declared_types_cast_parquet_columns(tmp_path: Path) -> None:
    source = write(tmp_path, b"", "s.parquet")
    pq.write_table(pa.table({"cost": ["1.25", "2.50"], "n": [1, 2]}), source)
    result = run(tmp_path, source, options(column_types={"cost": "DECIMAL(10,2)", "n": "INTEGER"}))
    assert [c.type for c in result.columns] == ["DECIMAL(10,2)", "INTEGER"]


def test_parquet_value_that_does_not_cast_is_malformed_with_its_row(tmp_path: Path) -> None:
    source = write(tmp_path, b"", "s.parquet")
    pq.write_table(pa.table({"cost": ["1.25", "2.50", "lots"]}), source)
    error = refused(tmp_path, source, options(column_types={"cost": "DECIMAL(10,2)"}))
    assert (error.code, error.context["row"], error.context["column"]) == ("malformed_file", 3, "cost")


def test_inferred_type_is_widened_when_later_rows_do_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_csv, "BLOCK_BYTES", 64)  # Arrow infers from the first (tiny) block only
    body = "".join(f"{i},{i}\n" for i in range(50))
    result = run(tmp_path, write(tmp_path, "a,b\n" + body + "2.5,x\n"))
    assert [c.type for c in result.columns] == ["DOUBLE", "VARCHAR"]
    assert result.row_count == 51


def test_json_lines_infer_types_from_the_whole_file(tmp_path: Path) -> None:
    lines = [{"id": i, "score": i, "ok": True, "note": None} for i in range(100)]
    lines.append({"id": 100, "score": 0.5, "ok": False, "note": "late", "extra": "new key"})
    source = write(tmp_path, "".join(json.dumps(x) + "\n" for x in lines), "s.jsonl")
    result = run(tmp_path, source)
    assert [(c.name, c.type) for c in result.columns] == [
        ("id", "BIGINT"),
        ("score", "DOUBLE"),
        ("ok", "BOOLEAN"),
        ("note", "VARCHAR"),
        ("extra", "VARCHAR"),
    ]


def test_json_lines_fast_and_checked_paths_write_identical_parquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandbox.catalogue import import_jsonl

    text = "".join(
        json.dumps({"id": i, "城市": f"城{i % 7}", "v": i / 4}, ensure_ascii=False) + "\n" for i in range(5000)
    )
    source = write(tmp_path, text, "s.jsonl")
    fast = normalize(source, tmp_path / "fast", options())
    monkeypatch.setattr(import_jsonl, "_arrow_reads", lambda column, target: False)
    checked = normalize(source, tmp_path / "checked", options())
    assert fast.parquet_sha256 == checked.parquet_sha256


def test_duckdb_reads_the_types_the_columns_report(tmp_path: Path) -> None:
    source = write(tmp_path, "a,b,c,d,e,f\n1,x,1.5,2026-01-01,true,2026-01-01 10:00:00\n")
    result = run(tmp_path, source, options(column_types={"c": "DECIMAL(10,2)"}))
    described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{result.path}')").fetchall()
    assert [(row[0], row[1]) for row in described] == [(c.name, c.type) for c in result.columns]


# --- results, hashes, atomicity, progress -----------------------------------------------------------------


def test_hashes_and_sizes_describe_the_source_and_the_parquet_file(tmp_path: Path) -> None:
    source = write(tmp_path, CHINESE_CSV)
    result = run(tmp_path, source, options(null_markers=("NA",)))
    assert result.path == tmp_path / "out" / "v1" / "data.parquet"
    assert result.source_sha256 == sha256(source)
    assert result.source_bytes == source.stat().st_size
    assert result.parquet_sha256 == sha256(result.path)
    assert result.byte_size == result.path.stat().st_size
    assert result.row_count == 3


def test_jsonl_and_parquet_sources_are_hashed_whole(tmp_path: Path) -> None:
    jsonl = write(tmp_path, '{"a": 1}\n{"a": 2}\n', "s.jsonl")
    assert normalize(jsonl, tmp_path / "j", options()).source_sha256 == sha256(jsonl)
    parquet = write(tmp_path, b"", "s.parquet")
    pq.write_table(pa.table({"a": [1, 2]}), parquet)
    assert normalize(parquet, tmp_path / "p", options()).source_sha256 == sha256(parquet)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("bad.csv", "a,b\n1,2\n3\n"),
        ("bad.jsonl", '{"a": 1}\n{oops}\n'),
        ("enc.csv", "a\n东\n".encode("gbk")),
    ],
)
def test_failure_leaves_neither_destination_nor_temporary_folder(tmp_path: Path, name: str, data: Any) -> None:
    source = write(tmp_path, data, name)
    with pytest.raises(SluiceError):
        normalize(source, tmp_path / "out" / "v1", options())
    assert list((tmp_path / "out").iterdir()) == []


def test_interrupted_import_leaves_nothing_behind(tmp_path: Path) -> None:
    def stop(done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    source = write(tmp_path, "a\n" + "1\n" * 1000)
    with pytest.raises(KeyboardInterrupt):
        normalize(source, tmp_path / "out" / "v1", options(), progress=stop)
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_destination_is_never_overwritten(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "v1"
    dest.mkdir(parents=True)
    (dest / "keep.txt").write_text("x")
    with pytest.raises(SluiceError) as info:
        normalize(write(tmp_path, "a\n1\n"), dest, options())
    assert info.value.code == "destination_exists"
    assert os.listdir(dest) == ["keep.txt"]


@pytest.mark.parametrize("name", ["s.csv", "s.jsonl", "s.parquet"])
def test_progress_is_monotonic_and_ends_at_the_source_size(tmp_path: Path, name: str) -> None:
    rows = [{"a": i, "b": f"row {i}"} for i in range(50_000)]
    source = tmp_path / name
    if name.endswith(".csv"):
        source.write_text("a,b\n" + "".join(f"{r['a']},{r['b']}\n" for r in rows))
    elif name.endswith(".jsonl"):
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), source)
    calls: list[tuple[int, int | None]] = []
    normalize(source, tmp_path / "out", options(), progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert calls[-1] == (source.stat().st_size, source.stat().st_size)


def test_describe_parquet_reports_what_normalize_reported(tmp_path: Path) -> None:
    opts = options(null_markers=("NA",), column_types={"income": "DECIMAL(12,2)"})
    result = run(tmp_path, write(tmp_path, CHINESE_CSV), opts)
    described = describe_parquet(result.path, source_sha256=result.source_sha256, source_bytes=result.source_bytes)
    assert described == result


# --- server-side paths ------------------------------------------------------------------------------------


def import_root(tmp_path: Path) -> Path:
    root = tmp_path / "imports"
    (root / "city").mkdir(parents=True)
    (root / "city" / "a.csv").write_text("a\n1\n")
    (tmp_path / "secret.csv").write_text("s\n1\n")
    return root


def test_paths_under_the_import_root_resolve(tmp_path: Path) -> None:
    root = import_root(tmp_path)
    assert resolve_import_path("city/a.csv", root) == (root / "city" / "a.csv").resolve()
    assert resolve_import_path(root / "city" / "a.csv", root) == (root / "city" / "a.csv").resolve()
    (root / "link.csv").symlink_to(root / "city" / "a.csv")
    assert resolve_import_path("link.csv", root) == (root / "city" / "a.csv").resolve()


@pytest.mark.parametrize("path", ["../secret.csv", "city/../../secret.csv", "ABSOLUTE", "LINK", "."])
def test_paths_outside_the_import_root_are_refused(tmp_path: Path, path: str) -> None:
    root = import_root(tmp_path)
    (root / "escape.csv").symlink_to(tmp_path / "secret.csv")
    given = {"ABSOLUTE": str(tmp_path / "secret.csv"), "LINK": "escape.csv"}.get(path, path)
    with pytest.raises(SluiceError) as info:
        resolve_import_path(given, root)
    assert info.value.code == "path_outside_import_root"


def test_server_side_paths_need_a_configured_import_root(tmp_path: Path) -> None:
    for root in (None, tmp_path / "missing"):
        with pytest.raises(SluiceError) as info:
            resolve_import_path("a.csv", root)
        assert info.value.code == "import_root_not_configured"
        assert "SLUICE_IMPORT_ROOT" in info.value.message


# --- quoting and text-like numbers ------------------------------------------------------------------------


def test_quoted_field_never_closed_is_malformed_with_the_line_it_opens(tmp_path: Path) -> None:
    error = refused(tmp_path, write(tmp_path, 'a,b\n1,2\n3,"open\n4,5\n6,7\n'))
    assert (error.code, error.context["line"]) == ("malformed_file", 3)


def test_quoted_field_never_closed_in_a_large_file_is_malformed(tmp_path: Path) -> None:
    source = write(tmp_path, 'a,b\n1,"open\n' + "2,3\n" * 1_500_000)  # more than one Arrow block
    error = refused(tmp_path, source)
    assert (error.code, error.context["line"]) == ("malformed_file", 2)


def test_literal_quotes_inside_unquoted_fields_are_not_mistaken_for_open_quotes(tmp_path: Path) -> None:
    result = run(tmp_path, write(tmp_path, 'name,height\nA,5\'11"\nB,"say ""hi"""\n'))
    assert pq.read_table(result.path).column("height").to_pylist() == ["5'11\"", 'say "hi"']


def test_field_count_errors_do_not_quote_the_row(tmp_path: Path) -> None:
    error = refused(tmp_path, write(tmp_path, "id,name\n1,a\n110101199003077777,Zhang,extra\n"))
    assert "110101199003077777" not in error.message + json.dumps(error.context)


def test_numbers_with_leading_zeros_stay_text(tmp_path: Path) -> None:
    result = run(tmp_path, write(tmp_path, "zip,n\n010000,1\n100000,2\n"))
    assert [c.type for c in result.columns] == ["VARCHAR", "BIGINT"]
    assert pq.read_table(result.path).column("zip").to_pylist() == ["010000", "100000"]
