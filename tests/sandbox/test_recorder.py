"""Group commit: concurrent callers share transactions, and one bad call fails alone."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from sandbox.audit import AuditDraft
from sandbox.recorder import Execute, Pending, Recorder, Write, _apply
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditEvent, Organization


def _audit(i: int) -> AuditEvent:
    return AuditEvent(at=datetime(2026, 6, 1, tzinfo=UTC), via="api", action="run:create", resource=f"r{i}",
                      decision="allow", rule="", reason="", status=201, detail={})


def test_concurrent_records_are_committed_in_shared_batches(store_url: str) -> None:
    """Deterministic: the first caller's commit is held until the 15 others have queued; they then share one."""
    engine = make_engine(store_url)
    sessions = session_factory(engine)
    queued = threading.Semaphore(0)
    release = threading.Event()

    class HeldFirstCommit:
        """The session factory the recorder sees: its first transaction waits until every other call queued."""

        calls = 0

        def begin(self) -> Any:
            HeldFirstCommit.calls += 1
            if HeldFirstCommit.calls == 1:
                assert release.wait(60)
            return sessions.begin()

    recorder = Recorder(HeldFirstCommit())  # type: ignore[arg-type]

    def worker(i: int) -> None:
        if i > 0:
            queued.release()
        recorder.record([_audit(i)])

    first = threading.Thread(target=worker, args=(0,))
    first.start()
    while not HeldFirstCommit.calls:  # the first caller leads and is now held inside its commit
        threading.Event().wait(0.01)
    others = [threading.Thread(target=worker, args=(i,)) for i in range(1, 16)]
    for t in others:
        t.start()
    for _ in others:
        assert queued.acquire(timeout=60)
    while len(recorder._pending) < 15:  # each has queued its rows behind the held commit
        threading.Event().wait(0.01)
    release.set()
    for t in [first, *others]:
        t.join()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 16
    assert (recorder.items, recorder.batches) == (16, 2)  # the held one alone, then the 15 others together
    engine.dispose()


def test_a_failing_call_fails_alone_and_the_others_commit(store_url: str) -> None:
    engine = make_engine(store_url)
    sessions = session_factory(engine)
    recorder = Recorder(sessions)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    recorder.record([Organization(id="org_dup", name="a", kind="operator", is_platform=False, created_at=now)])
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def good(i: int) -> None:
        barrier.wait()
        recorder.record([_audit(i)])

    def bad() -> None:
        barrier.wait()
        try:
            recorder.record([Organization(id="org_dup", name="b", kind="operator", is_platform=False,
                                          created_at=now), _audit(999)])
        except IntegrityError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=good, args=(i,)) for i in range(7)] + [threading.Thread(target=bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 1
    with sessions() as s:
        resources = set(s.scalars(select(AuditEvent.resource)))
    assert resources == {f"r{i}" for i in range(7)}
    engine.dispose()


def test_records_commit_one_after_another(store_url: str) -> None:
    engine = make_engine(store_url)
    recorder = Recorder(session_factory(engine))
    recorder.record([_audit(1)])
    recorder.record([_audit(2)])
    with session_factory(engine)() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 2
    assert (recorder.items, recorder.batches) == (2, 2)
    engine.dispose()


def test_grouped_inserts_of_a_batch_go_as_one_statement_after_the_other_writes(store_url: str) -> None:
    """The audit rows and usage events of a batch's calls: held back, then one multi-row INSERT per statement."""
    engine = make_engine(store_url)
    sessions = session_factory(engine)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    sent: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement.split("(")[0].strip())

    def audit(i: int) -> Execute:
        draft = AuditDraft(action="run:create", resource=f"r{i}", via="api", decision="allow", status=201)
        return draft.to_insert(now)

    calls: list[list[Write]] = [[Organization(id=f"org_{i}", name=f"o{i}", kind="operator", is_platform=False,
                                              created_at=now), audit(i)] for i in range(5)]
    with sessions() as s:
        _apply(s, calls)
        s.commit()
    inserts = [stmt for stmt in sent if stmt.startswith("INSERT")]
    assert inserts[-1] == "INSERT INTO audit_events" and inserts.count("INSERT INTO audit_events") == 1
    with sessions() as s:
        assert set(s.scalars(select(AuditEvent.resource))) == {f"r{i}" for i in range(5)}
    engine.dispose()


class _HeldFirstCommit:
    """A session factory whose first transaction signals `entered` and waits for `release` before it begins (a
    commit held in progress)."""

    def __init__(self, sessions: Any, entered: threading.Event, release: threading.Event) -> None:
        self.sessions, self.entered, self.release, self.calls = sessions, entered, release, 0

    def begin(self) -> Any:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.release.wait(60)
        return self.sessions.begin()


def test_a_call_submitted_during_a_commit_returns_at_once_and_the_leader_commits_it(store_url: str) -> None:
    """`submit` while another caller leads: no wait in the submitting thread; the leader commits the queued call
    before it stops leading (so a run's start record is durable while the run executes)."""
    engine = make_engine(store_url)
    sessions = session_factory(engine)
    entered, release = threading.Event(), threading.Event()
    recorder = Recorder(_HeldFirstCommit(sessions, entered, release))  # type: ignore[arg-type]
    leader = threading.Thread(target=recorder.record, args=([_audit(1)],))
    leader.start()
    assert entered.wait(60)
    queued = recorder.submit(Pending([_audit(2)]))  # returns while the leader is held in its commit
    assert not queued.done()
    release.set()
    queued.wait(10)
    leader.join(60)
    assert queued.done() and queued.error is None
    with sessions() as s:
        assert set(s.scalars(select(AuditEvent.resource))) == {"r1", "r2"}
    assert (recorder.items, recorder.batches) == (2, 2)
    engine.dispose()


def test_a_call_submitted_with_no_commit_in_progress_is_committed_by_its_own_thread(store_url: str) -> None:
    engine = make_engine(store_url)
    recorder = Recorder(session_factory(engine))
    committed_in: list[str] = []

    @event.listens_for(engine, "commit")
    def _seen(_conn: Any) -> None:
        committed_in.append(threading.current_thread().name)

    call = recorder.submit(Pending([_audit(1)]))
    assert call.done() and call.error is None
    assert committed_in == [threading.current_thread().name]
    engine.dispose()


def test_a_failed_call_raises_its_error_to_every_wait(store_url: str) -> None:
    engine = make_engine(store_url)
    recorder = Recorder(session_factory(engine))
    now = datetime(2026, 6, 1, tzinfo=UTC)
    recorder.record([Organization(id="org_dup", name="a", kind="operator", is_platform=False, created_at=now)])
    call = recorder.submit(Pending([Organization(id="org_dup", name="b", kind="operator", is_platform=False,
                                                 created_at=now)]))
    for _ in range(2):
        try:
            call.wait(5)
        except IntegrityError:
            pass
        else:
            raise AssertionError("the duplicate was committed")
    engine.dispose()


def test_join_queues_a_call_only_behind_a_commit_in_progress(store_url: str) -> None:
    """`join`: with no commit in progress nothing is queued (the caller hands the call off instead); during one,
    the call is queued and its leader commits it."""
    engine = make_engine(store_url)
    sessions = session_factory(engine)
    entered, release = threading.Event(), threading.Event()
    recorder = Recorder(_HeldFirstCommit(sessions, entered, release))  # type: ignore[arg-type]
    alone = Pending([_audit(0)])
    assert not recorder.join(alone) and not recorder._pending
    leader = threading.Thread(target=recorder.record, args=([_audit(1)],))
    leader.start()
    assert entered.wait(60)
    behind = Pending([_audit(2)])
    assert recorder.join(behind)
    release.set()
    behind.wait(10)
    leader.join(60)
    with sessions() as s:
        assert set(s.scalars(select(AuditEvent.resource))) == {"r1", "r2"}
    engine.dispose()


def test_statement_batches_reuse_one_connection_between_leaders(store_url: str) -> None:
    engine = make_engine(store_url)
    recorder = Recorder(session_factory(engine))
    checkouts: list[int] = []
    event.listen(engine, "checkout", lambda *_: checkouts.append(1))
    now = datetime(2026, 6, 1, tzinfo=UTC)
    for i in range(5):
        draft = AuditDraft(action="run:create", resource=f"r{i}", via="api", decision="allow", status=201)
        recorder.record([draft.to_insert(now)])
    assert len(checkouts) == 1 and recorder.batches == 5
    recorder.close()
    engine.dispose()


def test_a_held_connection_found_disconnected_is_replaced_and_the_batch_commits(store_url: str) -> None:
    engine = make_engine(store_url)
    sessions = session_factory(engine)
    recorder = Recorder(sessions)
    now = datetime(2026, 6, 1, tzinfo=UTC)

    def audit(i: int) -> Execute:
        return AuditDraft(action="run:create", resource=f"r{i}", via="api", decision="allow",
                          status=201).to_insert(now)

    recorder.record([audit(1)])
    held = recorder._held
    assert held is not None
    held.connection.dbapi_connection.close()  # type: ignore[union-attr]  # e.g. the server dropped it
    recorder.record([audit(2)])
    with sessions() as s:
        assert set(s.scalars(select(AuditEvent.resource))) == {"r1", "r2"}
    recorder.close()
    engine.dispose()


def test_a_connection_lost_at_commit_is_not_retried(store_url: str, monkeypatch: Any) -> None:
    """Lost while COMMIT was sent, the batch may have been committed: sending it again could record it twice (an
    audit row has no natural key), so the call fails instead."""
    from sqlalchemy.exc import DBAPIError

    from sandbox import recorder as recorder_module

    engine = make_engine(store_url)
    recorder = Recorder(session_factory(engine))
    now = datetime(2026, 6, 1, tzinfo=UTC)
    applied = recorder_module._apply
    lost: list[int] = []

    def then_lost(connection: Any, calls: Any) -> None:
        applied(connection, calls)
        if not lost:  # once: a second attempt would succeed
            lost.append(1)
            connection.connection.dbapi_connection.close()  # dropped before the COMMIT gets through

    monkeypatch.setattr(recorder_module, "_apply", then_lost)
    draft = AuditDraft(action="run:create", resource="r1", via="api", decision="allow", status=201)
    try:
        recorder.record([draft.to_insert(now)])
    except DBAPIError as exc:
        assert exc.connection_invalidated
    else:
        raise AssertionError("the batch was sent again after its COMMIT was lost")
    recorder.close()
    engine.dispose()
