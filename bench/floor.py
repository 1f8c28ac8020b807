"""The floor of a governed run: the steps every governed run must take, each done the cheapest way Python offers,
so that the throughput benchmark can say how far the real run path is from what its stack allows.

`uvicorn bench.floor:app` with FLOOR_PARQUET (the open dataset), FLOOR_SQL (the approved query over the view `t`)
and FLOOR_HOME (an empty directory for its SQLite store and result files). One request to
`POST /v1/jobs/job-1/runs` (header `Authorization: Bearer floor-key`):

1. authenticates the key (SHA-256 of the key, a dictionary lookup) and authorizes the caller (a dictionary lookup);
2. reads the job and its grant fresh, in one raw `sqlite3` query, and checks that the job is approved and the grant
   active;
3. commits the run's start record (crash safety) through a group-commit thread;
4. sends the run to one of two long-lived, locked-down DuckDB worker processes over a pipe; the worker runs the
   query to Arrow, checks k on the count column, writes the result as Parquet into memory, hashes it with SHA-256,
   writes the file and answers the rows, the hash and the row count;
5. commits the run's final record, its usage event (deterministic id) and its audit row (canonical JSON, its leaf
   hash chained to the previous one) in one group commit;
6. answers the run record as JSON.

Nothing else: no casbin, no ORM, no OpenTelemetry, no metrics, no release audit (open data), no Merkle tree
beyond the chained leaf hash, no idempotency keys, no pricing. Every real governed run does all of the above and
more, so the floor's throughput bounds the real run path's from above on the same machine and stack. This is a
measuring instrument for `bench.throughput --floor`, not a second implementation: nothing in Sluice imports it.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import queue
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException

KEY_SHA256 = hashlib.sha256(b"floor-key").hexdigest()
PRINCIPALS = {KEY_SHA256: ("op-1", "org-1")}
ALLOWED = {("org-1", "run", "create")}
K = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS grants (id TEXT PRIMARY KEY, org TEXT, status TEXT, expires_at TEXT);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, grant_id TEXT, org TEXT, state TEXT, sql_sha256 TEXT);
CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, job_id TEXT, status TEXT, started_at TEXT, finished_at TEXT,
                                 result_sha256 TEXT, result_rows INTEGER, result_path TEXT);
CREATE TABLE IF NOT EXISTS usage_events (id TEXT PRIMARY KEY, run_id TEXT, kind TEXT, quantity INTEGER, at TEXT);
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, body TEXT, leaf_hash TEXT, chain_hash TEXT);
"""


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def worker(conn: Connection, parquet: str, sql: str, results: str) -> None:
    """A locked-down DuckDB worker: the dataset loaded once, external access off, then runs until the pipe closes."""
    import duckdb
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    con = duckdb.connect(config={"threads": 1})
    table = pq.read_table(parquet)
    con.register("t_data", table)
    con.execute("CREATE VIEW t AS SELECT * FROM t_data")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    while True:
        try:
            run_id = conn.recv()
        except EOFError:
            return
        result = con.sql(sql).to_arrow_table()
        counts = result.column(result.num_columns - 1)
        if len(counts) and pc.min(counts).as_py() < K:
            conn.send(("refused", "", 0, []))
            continue
        sink = io.BytesIO()
        pq.write_table(result, sink)
        data = sink.getvalue()
        path = os.path.join(results, f"{run_id}.parquet")
        with open(path, "wb") as out:
            out.write(data)
        conn.send(("succeeded", hashlib.sha256(data).hexdigest(), result.num_rows, result.to_pylist()))


class Committer:
    """Group commit: callers hand over statements and wait; one thread commits everything waiting in one
    transaction, allocating audit sequence numbers and chaining leaf hashes in order."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con, self.todo = con, queue.SimpleQueue[tuple[list[tuple[str, tuple[Any, ...]]],
                                                          dict[str, Any] | None, threading.Event]]()
        row = con.execute("SELECT seq, chain_hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        self.seq, self.chain = (row[0], row[1]) if row else (0, "0" * 64)
        threading.Thread(target=self.loop, daemon=True).start()

    def commit(self, statements: list[tuple[str, tuple[Any, ...]]], audit: dict[str, Any] | None) -> None:
        """Commit `statements` and the audit record (if any) before returning."""
        done = threading.Event()
        self.todo.put((statements, audit, done))
        done.wait()

    def loop(self) -> None:
        while True:
            batch = [self.todo.get()]
            while True:
                try:
                    batch.append(self.todo.get_nowait())
                except queue.Empty:
                    break
            self.con.execute("BEGIN")
            for statements, audit, _ in batch:
                for sql, values in statements:
                    self.con.execute(sql, values)
                if audit is not None:
                    self.seq += 1
                    body = json.dumps({"seq": self.seq, **audit}, sort_keys=True, separators=(",", ":"))
                    leaf = hashlib.sha256(b"\x00" + body.encode()).hexdigest()
                    self.chain = hashlib.sha256(bytes.fromhex(self.chain + leaf)).hexdigest()
                    self.con.execute("INSERT INTO audit VALUES (?, ?, ?, ?)", (self.seq, body, leaf, self.chain))
            self.con.execute("COMMIT")
            for _, _, done in batch:
                done.set()


class Floor:
    """The store, the workers and the committer of one process."""

    def __init__(self, home: Path, parquet: str, sql: str, workers: int = 2) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.results = home / "results"
        self.results.mkdir(exist_ok=True)
        con = _connect(home / "floor.db")
        con.executescript(SCHEMA)
        con.execute("INSERT OR IGNORE INTO grants VALUES ('grant-1', 'org-1', 'active', '2099-01-01')")
        con.execute("INSERT OR IGNORE INTO jobs VALUES ('job-1', 'grant-1', 'org-1', 'approved', ?)",
                    (hashlib.sha256(sql.encode()).hexdigest(),))
        self.committer = Committer(con)
        self.path = home / "floor.db"
        self.local = threading.local()
        self.idle: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        ctx = mp.get_context("spawn")
        self.procs = []
        for _ in range(workers):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(theirs, parquet, sql, str(self.results)), daemon=True)
            proc.start()
            self.procs.append(proc)
            self.idle.put(mine)

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        con = getattr(self.local, "con", None)
        if con is None:
            con = self.local.con = _connect(self.path)
        return con

    def execute(self, run_id: str) -> tuple[str, str, int, list[dict[str, Any]]]:
        """Run on an idle worker."""
        conn = self.idle.get()
        try:
            conn.send(run_id)
            answer: tuple[str, str, int, list[dict[str, Any]]] = conn.recv()
            return answer
        finally:
            self.idle.put(conn)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()


state: dict[str, Floor] = {}


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    floor = Floor(Path(os.environ["FLOOR_HOME"]), os.environ["FLOOR_PARQUET"], os.environ["FLOOR_SQL"])
    state["floor"] = floor
    yield
    floor.stop()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/jobs/{job_id}/runs", status_code=201)
def run(job_id: str, authorization: str = Header("")) -> dict[str, Any]:
    """One governed run at the floor: authenticate, authorize, check, start, execute, commit, answer."""
    floor = state["floor"]
    caller = PRINCIPALS.get(hashlib.sha256(authorization.removeprefix("Bearer ").encode()).hexdigest())
    if caller is None:
        raise HTTPException(401, "unauthenticated")
    row = floor.reader().execute(
        "SELECT j.org, j.state, j.sql_sha256, g.id, g.status, g.expires_at FROM jobs j JOIN grants g "
        "ON g.id = j.grant_id WHERE j.id = ?", (job_id,)).fetchone()
    if row is None or (row[0], "run", "create") not in ALLOWED or caller[1] != row[0]:
        raise HTTPException(404, "no such job")
    now = datetime.now(UTC).isoformat()
    if row[1] != "approved" or row[4] != "active" or row[5] <= now:
        raise HTTPException(409, "not runnable")
    run_id = uuid.uuid4().hex
    floor.committer.commit([("INSERT INTO runs (id, job_id, status, started_at) VALUES (?, ?, 'running', ?)",
                             (run_id, job_id, now))], None)
    status, sha, rows, result = floor.execute(run_id)
    finished = datetime.now(UTC).isoformat()
    usage_id = hashlib.sha256(f"run:{run_id}".encode()).hexdigest()
    floor.committer.commit([
        ("UPDATE runs SET status = ?, finished_at = ?, result_sha256 = ?, result_rows = ?, result_path = ? "
         "WHERE id = ?", (status, finished, sha, rows, f"results/{run_id}.parquet", run_id)),
        ("INSERT INTO usage_events VALUES (?, ?, 'run', 1, ?)", (usage_id, run_id, finished))],
        {"action": "run:create", "principal": caller[0], "org": caller[1], "resource": f"run/{run_id}",
         "decision": "allow", "rule": "operator runs own org's approved jobs", "job_id": job_id, "grant_id": row[3],
         "sql_sha256": row[2], "status": status, "result_sha256": sha, "result_rows": rows, "at": finished})
    return {"id": run_id, "job_id": job_id, "grant_id": row[3], "status": status, "created_at": now,
            "finished_at": finished, "result_sha256": sha, "result_rows": rows, "rows": result}
