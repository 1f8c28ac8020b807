"""The worker pool with real spawned processes: memory bombs, killed and hung workers, concurrent callers."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sandbox.executor import (
    EngineLimits,
    ExecutorError,
    InputTable,
    PoolClosed,
    RunOutcome,
    RunSpec,
    WorkerPool,
)
from sandbox.executor.pool import while_running

LIMITS = EngineLimits(memory_limit_mb=256, threads=2, timeout_ms=1500, address_space_mb=3072)


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "people.parquet"
    pq.write_table(pa.table({"person_id": list(range(5000)), "age": [i % 90 for i in range(5000)]}), path)
    return path


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    with WorkerPool(2, LIMITS, work_dir=tmp_path_factory.mktemp("work")) as p:
        yield p


@pytest.fixture(scope="module")
def bomb_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    """One worker with the same memory limits and a long time limit: a bomb must end for memory, not time.

    Under load the sort bomb took 1.2-1.5 s to reach memory_limit, past the 1.5 s of `pool`.
    """
    with WorkerPool(1, dataclasses.replace(LIMITS, timeout_ms=20_000), work_dir=tmp_path_factory.mktemp("bombs")) as p:
        yield p


def _spec(people: Path, sql: str, key: str = "grant-a") -> RunSpec:
    return RunSpec(instance_key=key, inputs=(InputTable("people", people),), sql=sql, params={}, k=1,
                   max_rows=None, result_path=people.parent / "results" / f"{time.perf_counter_ns()}.parquet")


def _count(outcome: RunOutcome) -> int:
    assert outcome.status == "succeeded", outcome
    assert outcome.result_path is not None
    return int(pq.read_table(outcome.result_path).column(0)[0].as_py())


COUNT = "SELECT count(*) AS n FROM people"


def test_workers_are_reused_across_runs(pool: WorkerPool, people: Path) -> None:
    pids = set(pool.worker_pids())
    for _ in range(5):
        assert _count(pool.run(_spec(people, COUNT))) == 5000
    assert set(pool.worker_pids()) == pids


def test_the_result_file_matches_the_reported_hash_size_and_rows(pool: WorkerPool, people: Path) -> None:
    outcome = pool.run(_spec(people, "SELECT age, count(*) AS n FROM people GROUP BY age"))
    assert outcome.result_path is not None and outcome.result_path.is_absolute()
    data = outcome.result_path.read_bytes()
    assert outcome.result_sha256 == hashlib.sha256(data).hexdigest()
    assert outcome.result_bytes == len(data)
    assert outcome.result_rows == 90 == pq.read_table(outcome.result_path).num_rows


@pytest.mark.parametrize("sql", [
    "SELECT length(repeat('x', 2000000000)) AS n",
    "SELECT len(list(range(1000000000))) AS n",
    "SELECT max(i) FROM (SELECT * FROM range(300000000) r(i) ORDER BY i DESC)",
])
def test_a_memory_bomb_fails_the_run_and_the_worker_survives_to_serve_the_next(
    bomb_pool: WorkerPool, people: Path, sql: str
) -> None:
    pids = set(bomb_pool.worker_pids())
    outcome = bomb_pool.run(_spec(people, sql))
    assert (outcome.status, outcome.error_code) == ("failed", "resource_exhausted")
    assert outcome.error_message == "the query needed more memory than a run may use"
    assert set(bomb_pool.worker_pids()) == pids
    assert _count(bomb_pool.run(_spec(people, COUNT))) == 5000


def test_a_sleeping_query_ends_timed_out_and_the_worker_survives(pool: WorkerPool, people: Path) -> None:
    pids = set(pool.worker_pids())
    outcome = pool.run(_spec(people, "SELECT sleep_ms(20000)"))
    assert (outcome.status, outcome.error_code) == ("timed_out", "timed_out")
    assert outcome.wall_ms < 5000
    assert set(pool.worker_pids()) == pids
    assert _count(pool.run(_spec(people, COUNT))) == 5000


def test_a_cast_error_reaches_the_caller_without_the_value(pool: WorkerPool, people: Path) -> None:
    outcome = pool.run(_spec(people, "SELECT sum(CAST(person_id AS TINYINT)) FROM people"))
    assert (outcome.status, outcome.error_code) == ("failed", "conversion_error")
    assert not any(ch.isdigit() for ch in str(outcome.error_message))


def test_a_refused_statement_never_reaches_the_data(pool: WorkerPool, people: Path) -> None:
    outcome = pool.run(_spec(people, "SELECT 1; DROP VIEW people"))
    assert (outcome.status, outcome.error_code) == ("refused", "multiple_statements")
    assert _count(pool.run(_spec(people, COUNT))) == 5000


def test_concurrent_callers_from_several_threads_all_get_their_own_results(pool: WorkerPool,
                                                                          people: Path) -> None:
    results: dict[int, list[int]] = {}

    def caller(n: int) -> None:
        results[n] = [_count(pool.run(_spec(people, f"SELECT count(*) FROM people WHERE age < {n}",
                                            key=f"grant-{n % 3}"))) for _ in range(8)]

    threads = [threading.Thread(target=caller, args=(n,)) for n in (10, 20, 30, 45, 60, 89)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    expected = {n: sum(1 for i in range(5000) if i % 90 < n) for n in (10, 20, 30, 45, 60, 89)}
    assert results == {n: [c] * 8 for n, c in expected.items()}


@pytest.mark.slow
def test_a_worker_killed_mid_run_fails_that_run_and_is_replaced(tmp_path: Path, people: Path) -> None:
    with WorkerPool(1, LIMITS, work_dir=tmp_path) as pool:
        [pid] = pool.worker_pids()
        threading.Timer(0.3, os.kill, args=(pid, signal.SIGKILL)).start()
        outcome = pool.run(_spec(people, "SELECT sleep_ms(1200)"))
        assert (outcome.status, outcome.error_code) == ("failed", "worker_lost")
        assert _count(pool.run(_spec(people, COUNT))) == 5000
        assert pool.worker_pids() != [pid]
        assert pool.replacements == 1


@pytest.mark.slow
def test_a_worker_killed_while_idle_is_replaced_before_the_next_run(tmp_path: Path, people: Path) -> None:
    with WorkerPool(1, LIMITS, work_dir=tmp_path) as pool:
        [pid] = pool.worker_pids()
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
        assert _count(pool.run(_spec(people, COUNT))) == 5000
        assert pool.worker_pids() != [pid]


@pytest.mark.slow
def test_a_hung_worker_is_killed_at_the_hard_deadline_and_the_run_ends_timed_out(tmp_path: Path,
                                                                                 people: Path) -> None:
    limits = EngineLimits(memory_limit_mb=256, threads=1, timeout_ms=300, address_space_mb=3072)
    with WorkerPool(1, limits, work_dir=tmp_path, grace_ms=300) as pool:
        [pid] = pool.worker_pids()
        os.kill(pid, signal.SIGSTOP)  # a worker that no longer answers, whatever it was doing
        started = time.monotonic()
        outcome = pool.run(_spec(people, COUNT))
        assert (outcome.status, outcome.error_code) == ("timed_out", "timed_out")
        assert time.monotonic() - started < 3
        assert _count(pool.run(_spec(people, COUNT))) == 5000


def test_a_spec_that_cannot_be_sent_is_rejected_without_costing_a_worker(pool: WorkerPool,
                                                                         people: Path) -> None:
    pids = set(pool.worker_pids())
    spec = dataclasses.replace(_spec(people, "SELECT $x AS x"), params={"x": lambda: 1})
    with pytest.raises(ExecutorError) as err:
        pool.run(spec)
    assert err.value.code == "invalid_run_spec"
    assert set(pool.worker_pids()) == pids
    assert _count(pool.run(dataclasses.replace(spec, params={"x": 7}))) == 7


def test_a_closed_pool_refuses_runs(tmp_path: Path, people: Path) -> None:
    pool = WorkerPool(1, LIMITS, work_dir=tmp_path)
    with pytest.raises(PoolClosed):
        pool.run(_spec(people, COUNT))
    pool.start()
    pids = pool.worker_pids()
    pool.close()
    with pytest.raises(PoolClosed):
        pool.run(_spec(people, COUNT))
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_worker_with_its_instances_stays_well_below_its_address_space_limit(pool: WorkerPool,
                                                                           people: Path) -> None:
    for key in ("grant-a", "grant-0", "grant-1", "grant-2", "grant-3", "grant-4"):
        for _ in range(2):  # six instances between the two workers (a key stays on the worker that has it)
            assert _count(pool.run(_spec(people, COUNT, key=key))) == 5000
    for pid in pool.worker_pids():
        status = Path(f"/proc/{pid}/status").read_text()
        size_kb = int(next(line for line in status.splitlines() if line.startswith("VmSize")).split()[1])
        # Unbounded glibc arenas (8 per core, 64 MiB each) put such a worker at ~2.9 GiB, and a small scan then
        # failed for memory under this 3 GiB limit; with max(2, threads) arenas it maps ~2 GiB.
        assert size_kb < 2.5 * 1024 * 1024, f"worker {pid} maps {size_kb} kB"


def test_the_address_space_limit_is_set_inside_each_worker(pool: WorkerPool) -> None:
    for pid in pool.worker_pids():
        limits = Path(f"/proc/{pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max address space"))
        assert str(LIMITS.address_space_mb * 1024 * 1024) in line


def test_relative_paths_in_a_spec_are_read_and_written_from_the_callers_directory(
    pool: WorkerPool, people: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(people.parent)  # the workers run in their own directories
    name = f"relative-{time.perf_counter_ns()}.parquet"
    spec = RunSpec(instance_key="grant-relative", inputs=(InputTable("people", Path(people.name)),), sql=COUNT,
                   params={}, k=1, max_rows=None, result_path=Path(name))
    outcome = pool.run(spec)
    assert _count(outcome) == 5000
    assert outcome.result_path == people.parent / name


def test_with_a_worker_idle_on_dispatch_runs_once_in_the_callers_thread_while_the_worker_executes(
        pool: WorkerPool, people: Path) -> None:
    """The run path hands a run's start record to its run-start thread this way, as the spec is sent."""
    waited: list[int] = []
    dispatched: list[int] = []

    def on_dispatch() -> None:
        dispatched.append(threading.get_ident())
        time.sleep(0.3)  # the worker's outcome is read only after it

    with while_running(lambda: waited.append(1), on_dispatch):
        outcome = pool.run(_spec(people, COUNT))
    assert _count(outcome) == 5000
    assert waited == [] and dispatched == [threading.get_ident()] and outcome.wall_ms >= 300  # from dispatch


def test_with_every_worker_busy_on_wait_runs_once_before_waiting_and_on_dispatch_not_at_all(
        tmp_path: Path, people: Path) -> None:
    """The run path commits a run's start record this way, in its own thread, while it queues for a worker."""
    ended: list[float] = []
    waited: list[tuple[int, float]] = []
    dispatched: list[bool] = []
    with WorkerPool(1, LIMITS, work_dir=tmp_path) as one:
        busy = threading.Thread(target=lambda: (one.run(_spec(people, "SELECT sleep_ms(800)")),
                                                ended.append(time.monotonic())))
        busy.start()
        while one._idle:  # the only worker is taken
            time.sleep(0.01)
        with while_running(lambda: waited.append((threading.get_ident(), time.monotonic())),
                           lambda: dispatched.append(True)):
            assert _count(one.run(_spec(people, COUNT))) == 5000
        busy.join(timeout=30)
    assert len(waited) == 1 and len(ended) == 1 and dispatched == []
    assert waited[0][0] == threading.get_ident() and waited[0][1] < ended[0]


def test_a_run_that_never_reaches_a_worker_calls_neither(pool: WorkerPool, people: Path) -> None:
    called: list[bool] = []
    spec = dataclasses.replace(_spec(people, COUNT), params={"x": threading.Lock()})  # cannot be pickled
    with while_running(lambda: called.append(True), lambda: called.append(True)), pytest.raises(ExecutorError):
        pool.run(spec)
    assert called == []
