"""Grant input preparation: only permitted columns, masks applied in Python, idempotent files."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from policy.constraints import ColumnPolicy, Constraint, MaskKind
from sandbox.inputs import (
    InputColumnMissing,
    InputPreparationError,
    MaskNotApplicable,
    hmac_text,
    partial_text,
    prepare_input,
)

KEY = b"grant-key-for-tests-0123456789ab"


def _source(tmp_path: Path) -> Path:
    table = pa.table({
        "person_id": pa.array([101, 102, 102, None], pa.int64()),
        "phone": ["13812341234", "12345678", None, "abc"],
        "birth_date": [dt.date(1990, 5, 17), dt.date(2001, 1, 1), None, dt.date(1999, 12, 31)],
        "age": pa.array([37, -3, 40, None], pa.int32()),
        "seen_at": [dt.datetime(2024, 3, 5, 12, 30), None, dt.datetime(2024, 1, 31),
                    dt.datetime(2023, 12, 1)],
        "diagnosis": ["flu", "cold", "flu", "none"],
        "district": ["east", "west", "east", "west"],
    }).replace_schema_metadata({"pandas": '{"columns": ["diagnosis"]}'})
    path = tmp_path / "source.parquet"
    pq.write_table(table, path)
    return path


COLUMNS = (
    ColumnPolicy("person_id", "BIGINT", Constraint.JOIN, mask=MaskKind.HASH),
    ColumnPolicy("phone", "VARCHAR", Constraint.AGGREGATE, mask=MaskKind.PARTIAL),
    ColumnPolicy("birth_date", "DATE", Constraint.GROUP, mask=MaskKind.GENERALIZE),
    ColumnPolicy("age", "INTEGER", Constraint.GROUP, mask=MaskKind.GENERALIZE),
    ColumnPolicy("seen_at", "TIMESTAMP", Constraint.OPEN, mask=MaskKind.GENERALIZE),
    ColumnPolicy("diagnosis", "VARCHAR", Constraint.HIDDEN),
    ColumnPolicy("district", "VARCHAR", Constraint.OPEN),
)


@pytest.fixture
def prepared(tmp_path: Path) -> pa.Table:
    result = prepare_input(_source(tmp_path), tmp_path / "out" / "people.parquet", COLUMNS, grant_key=KEY)
    return pq.read_table(result.path)


def test_hidden_columns_are_not_written_and_the_rest_keep_the_policy_order(prepared: pa.Table) -> None:
    assert prepared.column_names == ["person_id", "phone", "birth_date", "age", "seen_at", "district"]


def test_source_schema_metadata_naming_hidden_columns_is_dropped(tmp_path: Path) -> None:
    result = prepare_input(_source(tmp_path), tmp_path / "p.parquet", COLUMNS, grant_key=KEY)
    metadata = pq.read_metadata(result.path).metadata or {}
    assert b"pandas" not in metadata
    assert all(b"diagnosis" not in value for value in metadata.values())


def test_hash_is_a_keyed_hmac_of_the_value_text_truncated_to_32_hex_characters(prepared: pa.Table) -> None:
    expected = hmac.new(KEY, b"101", hashlib.sha256).hexdigest()[:32]
    assert prepared.column("person_id").to_pylist() == [
        expected, hmac_text(b"102", KEY), hmac_text(b"102", KEY), None]
    assert prepared.schema.field("person_id").type == pa.string()


def test_hash_depends_on_the_grant_key(tmp_path: Path) -> None:
    source = _source(tmp_path)
    a = prepare_input(source, tmp_path / "a.parquet", COLUMNS[:1], grant_key=KEY)
    other_key = b"another-grant-key-0123456789abcd"
    b = prepare_input(source, tmp_path / "b.parquet", COLUMNS[:1], grant_key=other_key)
    assert pq.read_table(a.path).column(0).to_pylist()[0] != pq.read_table(b.path).column(0).to_pylist()[0]


def test_hash_of_an_integer_equals_hash_of_its_text_so_hashed_ids_still_join(tmp_path: Path) -> None:
    ints = tmp_path / "ints.parquet"
    texts = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"pid": [7, 8]}), ints)
    pq.write_table(pa.table({"pid": ["7", "8"]}), texts)
    column = (ColumnPolicy("pid", "BIGINT", Constraint.JOIN, mask=MaskKind.HASH),)
    a = prepare_input(ints, tmp_path / "a.parquet", column, grant_key=KEY)
    b = prepare_input(texts, tmp_path / "b.parquet", column, grant_key=KEY)
    assert pq.read_table(a.path).equals(pq.read_table(b.path))


def test_partial_keeps_first_three_and_last_four_of_a_phone_number(prepared: pa.Table) -> None:
    assert prepared.column("phone").to_pylist() == ["138****1234", "12****78", None, "***"]


@pytest.mark.parametrize(("text", "masked"), [
    ("13812341234", "138****1234"),
    ("110101199003071234", "110***********1234"),
    ("1234567890", "12******90"),
    ("12345678", "12****78"),
    ("1234567", "1*****7"),
    ("abcd", "a**d"),
    ("abc", "***"),
    ("a", "*"),
    ("", ""),
    ("张三丰先生你好世界啊哦", "张三丰****世界啊哦"),
])
def test_partial_rule_for_every_length(text: str, masked: str) -> None:
    assert partial_text(text) == masked


def test_generalize_moves_dates_and_timestamps_to_the_first_of_their_month(prepared: pa.Table) -> None:
    assert prepared.column("birth_date").to_pylist() == [
        dt.date(1990, 5, 1), dt.date(2001, 1, 1), None, dt.date(1999, 12, 1)]
    assert prepared.column("seen_at").to_pylist() == [
        dt.datetime(2024, 3, 1), None, dt.datetime(2024, 1, 1), dt.datetime(2023, 12, 1)]
    assert prepared.schema.field("birth_date").type == pa.date32()


def test_generalize_moves_integers_to_the_lower_bound_of_their_five_wide_band(prepared: pa.Table) -> None:
    assert prepared.column("age").to_pylist() == [35, -5, 40, None]
    assert prepared.schema.field("age").type == pa.int32()


def test_generalize_on_a_string_column_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    column = (ColumnPolicy("district", "VARCHAR", Constraint.GROUP, mask=MaskKind.GENERALIZE),)
    with pytest.raises(MaskNotApplicable, match="generalize applies to DATE, TIMESTAMP and integer") as err:
        prepare_input(_source(tmp_path), tmp_path / "x.parquet", column, grant_key=KEY)
    assert err.value.code == "mask_not_applicable"
    assert list(tmp_path.glob("*x.parquet*")) == []


def test_a_granted_column_missing_from_the_source_is_an_error(tmp_path: Path) -> None:
    column = (ColumnPolicy("income", "BIGINT", Constraint.AGGREGATE),)
    with pytest.raises(InputColumnMissing, match="income"):
        prepare_input(_source(tmp_path), tmp_path / "x.parquet", column, grant_key=KEY)


def test_a_short_grant_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputPreparationError, match="at least 16 bytes"):
        prepare_input(_source(tmp_path), tmp_path / "x.parquet", COLUMNS, grant_key=b"short")


def test_preparation_is_idempotent_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    source = _source(tmp_path)
    dest = tmp_path / "out" / "people.parquet"
    first = prepare_input(source, dest, COLUMNS, grant_key=KEY)
    second = prepare_input(source, dest, COLUMNS, grant_key=KEY)
    assert first == second
    assert first.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
    assert first.rows == 4
    assert first.bytes == dest.stat().st_size
    assert sorted(p.name for p in dest.parent.iterdir()) == ["people.parquet"]


def test_an_empty_source_gives_an_empty_file_with_the_masked_schema(tmp_path: Path) -> None:
    source = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"pid": pa.array([], pa.int64())}), source)
    column = (ColumnPolicy("pid", "BIGINT", Constraint.JOIN, mask=MaskKind.HASH),)
    result = prepare_input(source, tmp_path / "e.parquet", column, grant_key=KEY)
    table = pq.read_table(result.path)
    assert result.rows == 0
    assert table.schema == pa.schema([pa.field("pid", pa.string())])


def test_arrow_copy_keeps_values_and_narrows_small_decimals(tmp_path: Path) -> None:
    import decimal

    from sandbox.inputs import arrow_copy

    table = pa.table({"cost": pa.array([decimal.Decimal("12.34"), None, decimal.Decimal("-0.01")],
                                       pa.decimal128(10, 2)),
                      "big": pa.array([decimal.Decimal("1" * 20)] * 3, pa.decimal128(30, 0)),
                      "name": ["a", "b", None]})
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    out = arrow_copy(src, tmp_path / "in.arrow", chunk_rows=2)
    copy = pa.ipc.open_file(pa.memory_map(str(out), "r")).read_all()
    assert copy.schema.field("cost").type == pa.decimal64(10, 2)
    assert copy.schema.field("big").type == pa.decimal128(30, 0)
    assert copy.column("cost").to_pylist() == table.column("cost").to_pylist()
    assert copy.column("big").to_pylist() == table.column("big").to_pylist()
    assert copy.column("name").to_pylist() == ["a", "b", None]


def test_arrow_copy_dictionary_encodes_few_valued_strings_with_one_dictionary_and_keeps_them_varchar(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    import sandbox.inputs
    from sandbox.inputs import arrow_copy

    monkeypatch.setattr(sandbox.inputs, "DICTIONARY_MAX_VALUES", 3)
    table = pa.table({"flag": ["R", "A", None, "R", "N", "A", "N"],  # 3 distinct: encoded
                      "comment": ["a", "b", "c", "d", "a", "b", "c"]})  # 4 distinct: plain
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    out = arrow_copy(src, tmp_path / "in.arrow", chunk_rows=2)  # four batches, one dictionary
    copy = pa.ipc.open_file(pa.memory_map(str(out), "r")).read_all()
    assert copy.schema.field("flag").type == pa.dictionary(pa.int16(), pa.string())
    assert copy.schema.field("comment").type == pa.string()
    assert copy.column("flag").to_pylist() == table.column("flag").to_pylist()
    assert copy.column("comment").to_pylist() == table.column("comment").to_pylist()
    con = duckdb.connect()
    con.from_arrow(copy).create_view("t")
    result = con.sql("SELECT flag, typeof(flag) AS type, count(*) AS n FROM t GROUP BY ALL ORDER BY flag")
    result = result.to_arrow_table()
    assert result.schema.field("flag").type == pa.string()
    assert result.to_pylist() == [{"flag": f, "type": "VARCHAR", "n": n} for f, n in
                                  (("A", 2), ("N", 2), ("R", 2), (None, 1))]
