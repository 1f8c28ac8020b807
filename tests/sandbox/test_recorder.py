"""Group commit: concurrent callers share transactions, and one bad call fails alone."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from sandbox.recorder import Recorder
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditEvent, Organization


def _audit(i: int) -> AuditEvent:
    return AuditEvent(at=datetime(2026, 6, 1, tzinfo=UTC), via="api", action="run:create", resource=f"r{i}",
                      decision="allow", rule="", reason="", status=201, detail={})


def test_concurrent_records_are_committed_in_shared_batches(store_url: str) -> None:
    engine = make_engine(store_url)
    sessions = session_factory(engine)
    recorder = Recorder(sessions)
    start = threading.Barrier(16)

    def worker(i: int) -> None:
        start.wait()
        for j in range(10):
            recorder.record([_audit(i * 100 + j)])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorder.close()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 160
    assert recorder.items == 160 and recorder.batches < 160
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
    recorder.close()
    assert len(errors) == 1
    with sessions() as s:
        resources = set(s.scalars(select(AuditEvent.resource)))
    assert resources == {f"r{i}" for i in range(7)}
    engine.dispose()


def test_record_after_close_still_commits(store_url: str) -> None:
    engine = make_engine(store_url)
    recorder = Recorder(session_factory(engine))
    recorder.record([_audit(1)])
    recorder.close()
    recorder.record([_audit(2)])
    recorder.close()
    with session_factory(engine)() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)) == 2
    engine.dispose()


