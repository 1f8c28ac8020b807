"""A pool of long-lived worker processes, each serving one run at a time, replaced when one dies."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import multiprocessing
import os
import pickle
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType
from typing import Any

from sandbox.executor.engine import DEFAULT_MAX_INSTANCES, failed_outcome
from sandbox.executor.errors import ExecutorError, PoolClosed, QueryTimedOut, WorkerLost, WorkerStartFailed
from sandbox.executor.types import EngineLimits, InputTable, RunOutcome, RunSpec
from sandbox.executor.worker import READY, worker_main

log = logging.getLogger(__name__)
_Hooks = tuple[Callable[[], None], Callable[[], None]]
_WHILE_RUNNING: ContextVar[_Hooks | None] = ContextVar("sluice_while_running", default=None)


@contextlib.contextmanager
def while_running(on_wait: Callable[[], None], on_dispatch: Callable[[], None]) -> Iterator[None]:
    """Have each run this thread starts in the block call, once, `on_wait` before it waits for a busy worker, or
    else `on_dispatch` right after sending the spec (the worker executes it meanwhile). Neither may raise (an error
    is logged), and `on_dispatch` must return at once (it delays reading the outcome, and the worker stays taken
    until then); a run refused before dispatch (a spec that cannot be sent) calls neither."""
    token = _WHILE_RUNNING.set((on_wait, on_dispatch))
    try:
        yield
    finally:
        _WHILE_RUNNING.reset(token)


def _meanwhile(task: Callable[[], None] | None) -> None:
    if task is not None:
        try:
            task()
        except Exception:  # pragma: no cover - tasks keep their own errors; the run must go on regardless
            log.exception("a task run while waiting for a sandbox worker failed")

START_TIMEOUT_S = 60.0
REPLACEMENT_ATTEMPTS = 3
BASELINE_ADDRESS_SPACE_MB = 3072  # warm worker ~2.3 GiB + ~80 MiB per cached instance (docs/sandbox.md)


@dataclasses.dataclass(eq=False)
class _Worker:
    """The parent's handle on one worker process."""

    slot: int
    process: BaseProcess
    conn: Connection
    pid: int
    startup_ms: float
    keys: OrderedDict[str, None] = dataclasses.field(default_factory=OrderedDict)
    readable: Any = None  # a select.poll on the pipe: one C call per wait (`Connection.poll` builds a selector)

    def __post_init__(self) -> None:
        self.readable = select.poll()
        self.readable.register(self.conn.fileno(), select.POLLIN)

    def answered(self, timeout: float) -> bool:
        """Whether the worker's pipe has something to read (an answer, or its end) within `timeout` seconds."""
        return bool(self.readable.poll(math.ceil(timeout * 1000.0)))

    def remember(self, key: str, bound: int) -> None:
        """Mirror the worker's instance LRU, so runs can prefer the worker that already has the instance."""
        self.keys[key] = None
        self.keys.move_to_end(key)
        while len(self.keys) > bound:
            self.keys.popitem(last=False)


class _DeadlinePassed(Exception):
    """The worker did not answer within the run's hard deadline."""


class WorkerPool:
    """Long-lived spawned workers with an address-space cap; `run` is safe to call from many threads."""

    def __init__(
        self,
        size: int,
        limits: EngineLimits,
        *,
        work_dir: Path,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        grace_ms: int = 10_000,
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        if limits.address_space_mb < limits.memory_limit_mb + BASELINE_ADDRESS_SPACE_MB:
            log.warning("worker address space %d MiB leaves less than %d MiB above memory_limit %d MiB; "
                        "queries may fail with resource_exhausted well below memory_limit",
                        limits.address_space_mb, BASELINE_ADDRESS_SPACE_MB, limits.memory_limit_mb)
        self.size = size
        self.limits = limits
        self.work_dir = Path(work_dir).resolve()
        self.max_instances = max_instances
        self.grace_ms = grace_ms
        self._ctx = multiprocessing.get_context("spawn")
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._workers: dict[int, _Worker] = {}
        self._live_slots = 0
        self._closed = False
        self._started = False
        self.replacements = 0

    # lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn every worker in parallel and wait until each is locked down and warm."""
        with self._cond:
            if self._started:
                return
            self._started = True
        launched = [self._launch(slot) for slot in range(self.size)]
        workers: list[_Worker] = []
        try:
            for slot, (process, conn) in enumerate(launched):
                workers.append(self._await_ready(slot, process, conn))
        except BaseException:
            for process, conn in launched:
                _kill(process, conn)
            raise
        with self._cond:
            for worker in workers:
                self._workers[worker.slot] = worker
                self._idle.append(worker)
            self._live_slots = len(workers)
            self._cond.notify_all()

    def close(self) -> None:
        """Stop taking runs and end every worker; runs still in flight end `failed` with `worker_lost`."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            workers = list(self._workers.values())
            idle = set(map(id, self._idle))
            self._idle.clear()
            self._workers.clear()
            self._cond.notify_all()
        for worker in workers:
            if id(worker) in idle:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        deadline = time.monotonic() + 2.0
        for worker in workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            _kill(worker.process, worker.conn)

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers, idle or busy."""
        with self._cond:
            return [worker.pid for worker in self._workers.values()]

    def startup_ms(self) -> list[float]:
        """Spawn-to-ready time of each current worker, in ms."""
        with self._cond:
            return [worker.startup_ms for worker in self._workers.values()]

    # runs ------------------------------------------------------------------------------------------------

    def run(self, spec: RunSpec) -> RunOutcome:
        """Run `spec` on an idle worker (waiting for one if all are busy) and return its outcome."""
        if not (spec.result_path.is_absolute() and all(t.path.is_absolute() for t in spec.inputs)):
            spec = dataclasses.replace(  # workers run in their own directory: paths must be absolute
                spec, result_path=Path(os.path.abspath(spec.result_path)),
                inputs=tuple(InputTable(t.name, Path(os.path.abspath(t.path))) for t in spec.inputs))
        try:
            # before taking a worker: a bad spec must not cost one. A spec holds plain data (no handles or
            # connections), so pickle's own C pickler does what ForkingPickler (its Python subclass, which copies
            # the copyreg table on each call) does; the worker reads it with `Connection.recv` as before.
            payload = pickle.dumps(spec, pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise ExecutorError("the run's parameters cannot be sent to a worker", code="invalid_run_spec",
                                detail=type(exc).__name__) from None
        queued = time.time_ns()
        hooks = _WHILE_RUNNING.get()
        task = None if hooks is None else hooks[1]
        if hooks is not None and not self._has_idle():
            _meanwhile(hooks[0])  # before waiting for a worker; nothing after dispatch then
            task = None
        worker = self._acquire(spec.instance_key)
        dispatched = time.time_ns()
        started = time.perf_counter()  # wall time counts from dispatch, not from waiting for a worker
        healthy = False
        try:
            outcome = self._call(worker, spec.instance_key, payload, task)
            healthy = True
        except WorkerLost as error:
            outcome = failed_outcome(error)
        except _DeadlinePassed:
            outcome = failed_outcome(QueryTimedOut(
                f"the query ran past the time limit of {self.limits.timeout_ms} ms and was stopped",
                detail="worker killed at the hard deadline"))
        finally:
            if healthy:
                self._release(worker)
            else:
                self._retire(worker)
        return dataclasses.replace(outcome, wall_ms=(time.perf_counter() - started) * 1000.0,
                                   phases=(("queue", queued, dispatched), *outcome.phases))

    def _call(self, worker: _Worker, key: str, payload: bytes, task: Callable[[], None] | None = None
              ) -> RunOutcome:
        """Send a pickled spec to `worker`, call `task` (`on_dispatch` of `while_running`), and wait for the worker's
        outcome until the hard deadline."""
        try:
            worker.conn.send_bytes(payload)
        except (OSError, ValueError):
            raise _lost(worker) from None
        worker.remember(key, self.max_instances)
        _meanwhile(task)
        deadline = time.monotonic() + (self.limits.timeout_ms + self.grace_ms) / 1000.0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _DeadlinePassed
            try:
                if worker.answered(min(remaining, 1.0)):
                    answer: Any = worker.conn.recv()
                    if not isinstance(answer, RunOutcome):
                        raise _lost(worker)
                    return answer
            except (EOFError, OSError):
                raise _lost(worker) from None
            if not worker.process.is_alive():
                raise _lost(worker)

    def _has_idle(self) -> bool:
        """Whether a run would get a worker (or fail) without waiting."""
        with self._cond:
            return bool(self._idle) or self._closed or not self._started

    def _acquire(self, key: str) -> _Worker:
        """An idle, live worker, preferring one that already holds the instance for `key`."""
        with self._cond:
            while True:
                if self._closed:
                    raise PoolClosed("the executor is closed")
                if not self._started:
                    raise PoolClosed("the executor has not been started", code="executor_not_started")
                if not self._idle and self._live_slots == 0:
                    raise WorkerStartFailed("no sandbox worker could be started")
                if self._idle:
                    index = next((i for i, w in enumerate(self._idle) if key in w.keys), 0)
                    worker = self._idle.pop(index)
                    if worker.process.is_alive():
                        return worker
                    self._replace_later(worker)
                    continue
                self._cond.wait()

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                _kill(worker.process, worker.conn)
                return
            self._idle.append(worker)
            self._cond.notify()

    def _retire(self, worker: _Worker) -> None:
        """Kill `worker` and start its replacement in the background."""
        with self._cond:
            self._replace_later(worker)

    def _replace_later(self, worker: _Worker) -> None:
        """(Caller holds the lock.) Drop `worker`; a background thread kills it and spawns its replacement."""
        if self._workers.get(worker.slot) is worker:
            del self._workers[worker.slot]
        if self._closed:
            _kill(worker.process, worker.conn)
            return
        thread = threading.Thread(target=self._replace, args=(worker,), daemon=True,
                                  name=f"sluice-worker-{worker.slot}-replacement")
        thread.start()

    def _replace(self, old: _Worker) -> None:
        """Kill `old`, spawn a worker for its slot; after REPLACEMENT_ATTEMPTS failures give the slot up."""
        _kill(old.process, old.conn)
        slot = old.slot
        for attempt in range(REPLACEMENT_ATTEMPTS):
            if self._closed:
                return
            process, conn = self._launch(slot)
            try:
                worker = self._await_ready(slot, process, conn)
            except ExecutorError:
                _kill(process, conn)
                log.warning("sandbox worker %d failed to start (attempt %d)", slot, attempt + 1)
                time.sleep(0.5 * (attempt + 1))
                continue
            with self._cond:
                if self._closed:
                    _kill(process, conn)
                    return
                self.replacements += 1
                self._workers[slot] = worker
                self._idle.append(worker)
                self._cond.notify()
            return
        with self._cond:
            self._live_slots -= 1
            self._cond.notify_all()

    # processes -------------------------------------------------------------------------------------------

    def _launch(self, slot: int) -> tuple[BaseProcess, Connection]:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        work_dir = str(self.work_dir / f"worker-{slot}")
        process = self._ctx.Process(
            target=worker_main, args=(child_conn, self.limits, self.max_instances, work_dir, time.time()),
            name=f"sluice-worker-{slot}", daemon=True,
        )
        process.start()
        child_conn.close()
        return process, parent_conn

    def _await_ready(self, slot: int, process: BaseProcess, conn: Connection) -> _Worker:
        """Wait for the worker's ready message."""
        try:
            if not conn.poll(START_TIMEOUT_S):
                raise WorkerStartFailed("a sandbox worker did not start in time", detail="start timeout")
            message: Any = conn.recv()
        except (EOFError, OSError):
            raise WorkerStartFailed("a sandbox worker exited while starting",
                                    detail=f"exitcode={process.exitcode}") from None
        if not (isinstance(message, tuple) and message and message[0] == READY):
            detail = str(message[1]) if isinstance(message, tuple) and len(message) > 1 else None
            raise WorkerStartFailed("a sandbox worker failed to start", detail=detail)
        _, pid, startup_ms = message
        return _Worker(slot=slot, process=process, conn=conn, pid=int(pid), startup_ms=float(startup_ms))


def _lost(worker: _Worker) -> WorkerLost:
    worker.process.join(timeout=0.5)
    return WorkerLost("the sandbox worker stopped during the run; the run did not complete",
                      detail=f"pid={worker.pid} exitcode={worker.process.exitcode}")


def _kill(process: BaseProcess, conn: Connection) -> None:
    """End `process` for certain and close its pipe."""
    if process.is_alive():
        process.kill()
    process.join(timeout=5)
    conn.close()
