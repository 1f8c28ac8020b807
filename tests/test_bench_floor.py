"""The floor of a governed run (bench/floor.py) really takes every step it claims, so its throughput bounds the run
path's honestly: authentication, the fresh job read, the start record, the locked worker, the result file and its
hash, and the final record, usage event and chained audit row."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

SQL = "SELECT g, count(*) AS n FROM t GROUP BY 1 ORDER BY 1"


@pytest.fixture()
def floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Path]]:
    pq.write_table(pa.table({"g": [1, 1, 1, 2, 2, 2, 2]}), tmp_path / "t.parquet")
    monkeypatch.setenv("FLOOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOOR_PARQUET", str(tmp_path / "t.parquet"))
    monkeypatch.setenv("FLOOR_SQL", SQL)
    from bench import floor as module

    with TestClient(module.app) as client:
        yield client, tmp_path / "home"


def test_a_floor_run_commits_its_run_usage_and_chained_audit_row_and_writes_the_hashed_result(
        floor: tuple[TestClient, Path]) -> None:
    client, home = floor
    auth = {"Authorization": "Bearer floor-key"}
    answers = [client.post("/v1/jobs/job-1/runs", headers=auth).json() for _ in range(2)]
    assert [a["rows"] for a in answers] == [[{"g": 1, "n": 3}, {"g": 2, "n": 4}]] * 2
    con = sqlite3.connect(home / "floor.db")
    assert con.execute("SELECT count(*) FROM runs WHERE status = 'succeeded'").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM usage_events").fetchone() == (2,)
    audit = con.execute("SELECT body, leaf_hash, chain_hash FROM audit ORDER BY seq").fetchall()
    chain = "0" * 64
    for body, leaf, linked in audit:
        assert leaf == hashlib.sha256(b"\x00" + body.encode()).hexdigest()
        chain = hashlib.sha256(bytes.fromhex(chain + leaf)).hexdigest()
        assert linked == chain
    assert [json.loads(b)["resource"] for b, _, _ in audit] == [f"run/{a['id']}" for a in answers]
    stored = (home / "results" / f"{answers[0]['id']}.parquet").read_bytes()
    assert hashlib.sha256(stored).hexdigest() == answers[0]["result_sha256"]


def test_a_floor_run_without_the_key_is_refused_and_nothing_runs(floor: tuple[TestClient, Path]) -> None:
    client, home = floor
    assert client.post("/v1/jobs/job-1/runs").status_code == 401
    assert client.post("/v1/jobs/job-2/runs", headers={"Authorization": "Bearer floor-key"}).status_code == 404
    con = sqlite3.connect(home / "floor.db")
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
