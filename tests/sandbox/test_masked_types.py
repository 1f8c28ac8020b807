"""A column's type after masking: one function (policy.constraints.masked_type) used by SQL analysis, the catalogue
and input preparation, so a hashed BIGINT column is VARCHAR in all three (issue 7, bug 1)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import policy.constraints
import sandbox.catalogue.registry
import sandbox.inputs
from policy.constraints import ColumnPolicy, Constraint, MaskKind, masked_type
from sandbox.catalogue.registry import query_type
from sandbox.inputs import prepare_input
from sandbox.jobs import table_policy
from sandbox.store.models import DatasetVersion, Grant

KEY = b"k" * 32
# (column, catalogue type, Arrow type of the source, one value, mask)
MATRIX: list[tuple[str, str, pa.DataType, Any, MaskKind | None]] = [
    ("taxpayer_no", "BIGINT", pa.int64(), 1234567, MaskKind.HASH),
    ("amount", "DECIMAL(12,2)", pa.decimal128(12, 2), None, MaskKind.HASH),
    ("person", "VARCHAR", pa.string(), "p1", MaskKind.HASH),
    ("phone", "VARCHAR", pa.string(), "13812341234", MaskKind.PARTIAL),
    ("birth", "DATE", pa.date32(), date(1990, 5, 17), MaskKind.GENERALIZE),
    ("age", "INTEGER", pa.int32(), 37, MaskKind.GENERALIZE),
    ("income", "BIGINT", pa.int64(), 5000, None),
]


def _version(columns: list[dict[str, Any]]) -> DatasetVersion:
    return DatasetVersion(dataset_id="tax", version=1, columns=columns, entity_column=None, grade="general",
                          population=None)


def _stored(name: str, type_: str, mask: MaskKind | None) -> dict[str, Any]:
    return {"name": name, "type": type_, "constraint": "aggregate", "tags": [], "mask": mask.value if mask else None}


def _prepared_duckdb_types(tmp_path: Path, columns: list[ColumnPolicy]) -> dict[str, str]:
    """The DuckDB type of each column of a prepared input, as the engine reads it."""
    source = tmp_path / "source.parquet"
    pq.write_table(pa.table({name: pa.array([value], type=arrow) for name, _, arrow, value, _ in MATRIX}), source)
    dest = prepare_input(source, tmp_path / "prepared.parquet", columns, grant_key=KEY)
    con = duckdb.connect()
    rows = con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
                       [str(dest.path)]).fetchall()
    return {name: str(type_) for name, type_ in rows}


def test_analysis_catalogue_and_prepared_input_agree_on_every_masked_type(tmp_path: Path) -> None:
    stored = [_stored(name, type_, mask) for name, type_, _, _, mask in MATRIX]
    policy = table_policy(Grant(column_overrides={}), _version(stored))
    analysis = {c.name: c.type for c in policy.columns}
    catalogue = {c["name"]: query_type(c) for c in stored}
    engine = _prepared_duckdb_types(tmp_path, list(policy.columns))
    expected = {name: masked_type(type_, mask) for name, type_, _, _, mask in MATRIX}
    assert expected["taxpayer_no"] == "VARCHAR" and expected["amount"] == "VARCHAR"
    assert expected["age"] == "INTEGER" and expected["income"] == "BIGINT"
    assert analysis == catalogue == engine == expected


def test_each_of_the_three_users_takes_the_type_from_masked_type(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Replacing the function where each caller looks it up changes what each caller produces: none of them
    carries a rule of its own."""
    calls: list[str] = []

    def spy(where: str, text: Any) -> Any:
        def fake(source_type: Any, mask: MaskKind | None, *args: Any) -> Any:
            calls.append(where)
            return (args[0] if args else text) if mask is not None else source_type
        return fake

    monkeypatch.setattr(policy.constraints, "masked_type", spy("analysis", "DOUBLE"))  # ColumnPolicy.type
    monkeypatch.setattr(sandbox.catalogue.registry, "masked_type", spy("catalogue", "DOUBLE"))
    monkeypatch.setattr(sandbox.inputs, "masked_type", spy("inputs", "DOUBLE"))
    stored = [_stored("age", "INTEGER", MaskKind.GENERALIZE)]
    [column] = table_policy(Grant(column_overrides={}), _version(stored)).columns
    assert column.type == "DOUBLE"
    assert query_type(stored[0]) == "DOUBLE"
    source = tmp_path / "s.parquet"
    pq.write_table(pa.table({"age": pa.array([37], pa.int32())}), source)
    prepared = prepare_input(source, tmp_path / "p.parquet",
                             [ColumnPolicy("age", "INTEGER", Constraint.GROUP, mask=MaskKind.GENERALIZE)],
                             grant_key=KEY)
    assert pq.read_schema(prepared.path).field("age").type == pa.string()
    assert {"analysis", "catalogue", "inputs"} <= set(calls)


def test_a_column_policy_holds_the_type_after_its_mask() -> None:
    assert ColumnPolicy("n", "BIGINT", Constraint.AGGREGATE, mask=MaskKind.HASH).type == "VARCHAR"
    assert ColumnPolicy("p", "VARCHAR", Constraint.AGGREGATE, mask=MaskKind.PARTIAL).type == "VARCHAR"
    assert ColumnPolicy("d", "DATE", Constraint.GROUP, mask=MaskKind.GENERALIZE).type == "DATE"
    assert ColumnPolicy("n", "BIGINT", Constraint.AGGREGATE).type == "BIGINT"


TAX_CSV = "district,taxpayer_no,income\n" + "".join(
    f"{'东区' if i % 2 else '西区'},{91000000 + i},{1000 + i}\n" for i in range(40))


def test_a_sum_over_a_hashed_bigint_column_is_refused_at_submission_not_failed_at_run_time(api) -> None:  # type: ignore[no-untyped-def]
    _, steward = api.actor("provider", "data_steward")
    version = api.register(steward, dataset_id="tax", content=TAX_CSV,
                           columns={"taxpayer_no": {"constraint": "aggregate", "mask": "hash"}})
    column = next(c for c in version["columns"] if c["name"] == "taxpayer_no")
    assert (column["type"], column["query_type"]) == ("BIGINT", "VARCHAR")
    op, key = api.actor("operator", "operator")
    grant = api.grant(op, auto_approve=True)["id"]
    refused = api.call("POST", "/v1/jobs", key, json={
        "grant_id": grant, "title": "t", "purpose": "p",
        "sql": "SELECT district, sum(taxpayer_no) AS s FROM tax GROUP BY district"})
    assert refused.status_code == 422, refused.text
    assert [f["code"] for f in refused.json()["context"]["findings"]] == ["numeric_aggregate_over_text"]
    job = api.ok("POST", "/v1/jobs", key, json={
        "grant_id": grant, "title": "t", "purpose": "p",
        "sql": "SELECT district, count(DISTINCT taxpayer_no) AS n FROM tax GROUP BY district"})
    assert job["state"] == "approved"
    run = api.ok("POST", f"/v1/jobs/{job['id']}/runs", key, json={"params": {}})
    assert run["status"] == "succeeded", run
    rows = api.ok("GET", f"/v1/runs/{run['id']}/result?format=json", key)
    assert sorted(row["n"] for row in rows) == [20, 20]
