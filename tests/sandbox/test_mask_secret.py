"""The mask secret is created once per SLUICE_HOME: concurrent first runs in threads or processes share one key."""

from __future__ import annotations

import multiprocessing
import stat
import threading
from pathlib import Path

from sandbox.executor import EngineLimits
from sandbox.runs import RunService, _mask_secret

WRITERS = 8
LIMITS = EngineLimits(memory_limit_mb=256, threads=1, timeout_ms=1500, address_space_mb=3072)


def _race_threads(path: Path) -> list[bytes | BaseException]:
    barrier = threading.Barrier(WRITERS)
    out: list[bytes | BaseException] = [b""] * WRITERS

    def write(i: int) -> None:
        barrier.wait()
        try:
            out[i] = _mask_secret(path)
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def _in_process(path: str, barrier: threading.Barrier, answers: multiprocessing.Queue[bytes]) -> None:
    barrier.wait()
    answers.put(_mask_secret(Path(path)))


def test_concurrent_first_runs_in_threads_share_one_secret(tmp_path: Path) -> None:
    for attempt in range(20):
        path = tmp_path / str(attempt) / "keys" / "mask.secret"
        out = _race_threads(path)
        assert not [o for o in out if isinstance(o, BaseException)], out
        assert {*out} == {path.read_bytes()}
        assert len(path.read_bytes()) == 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sorted(p.name for p in path.parent.iterdir()) == ["mask.secret"]  # no temporary file left behind


def test_concurrent_first_runs_in_processes_share_one_secret(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for attempt in range(5):
        path = tmp_path / str(attempt) / "keys" / "mask.secret"
        barrier = context.Barrier(4)
        answers: multiprocessing.Queue[bytes] = context.Queue()
        procs = [context.Process(target=_in_process, args=(str(path), barrier, answers)) for _ in range(4)]
        for proc in procs:
            proc.start()
        got = [answers.get(timeout=30) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        assert {*got} == {path.read_bytes()}


def test_an_existing_secret_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "mask.secret"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"k" * 32)
    assert _mask_secret(path) == b"k" * 32
    assert path.read_bytes() == b"k" * 32


def test_grant_keys_agree_across_services_on_one_home_and_differ_by_grant(tmp_path: Path) -> None:
    one, two = (RunService(home=tmp_path, pool_size=1, limits=LIMITS) for _ in range(2))
    assert one.grant_key("grt_a") == two.grant_key("grt_a")
    assert one.grant_key("grt_a") != one.grant_key("grt_b")
    assert len(one.grant_key("grt_a")) == 32
