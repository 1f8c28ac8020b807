"""The sequencer and the stored Merkle log: gapless sequence numbers, a consistent tree across processes,
checkpoints that include every committed record and move forward in time, proofs from O(log n) node reads."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from disclosure.checkpoint import VerifierKey, verify_checkpoint
from disclosure.merkle import leaf_hash, root_from_leaf_hashes, roots_at, verify_consistency, verify_inclusion
from disclosure.signing import KeyRing, canonical_json
from sandbox.audit import AuditDraft, leaf_record, record
from sandbox.audit_log import AuditLog, SqlNodes
from sandbox.clock import ManualClock
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import AuditEvent, AuditLogState

ORIGIN = "sluice.test/audit-log"


def _log(store_url: str, tmp_path: Path, clock: ManualClock | None = None, batch: int = 5000) -> AuditLog:
    ring = KeyRing(tmp_path / "keys")
    ring.ensure("checkpoint")
    return AuditLog(session_factory(make_engine(store_url)), ring, ORIGIN, clock or ManualClock(), batch=batch)


def _add(log: AuditLog, n: int, start: int = 0) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with log.sessions.begin() as s:
        for i in range(start, start + n):
            record(s, AuditDraft(action="run:create", resource=f"run/r{i}", via="api", decision="allow",
                                 status=201, actor_id=f"prn_{i % 7}", rows={"result": i},
                                 detail={"ratio": 0.5, "i": i}), now + timedelta(microseconds=i))


def _bulk(log: AuditLog, n: int) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    rows = [AuditDraft(action="x:y", resource=f"r/{i}", via="api", decision="allow", status=200).to_row(now)
            for i in range(n)]
    values = [{c.key: getattr(r, c.key) for c in AuditEvent.__table__.columns if c.key != "id"} for r in rows]
    with log.sessions.begin() as s:
        s.execute(insert(AuditEvent), values)


def _stored_leaves(log: AuditLog) -> list[bytes]:
    with log.sessions() as s:
        rows = s.execute(select(AuditEvent.__table__).where(AuditEvent.seq.is_not(None))
                         .order_by(AuditEvent.seq)).mappings().all()
    assert [r["seq"] for r in rows] == list(range(len(rows))), "sequence numbers are not gapless"
    return [leaf_hash(canonical_json(leaf_record(r, r["seq"]))) for r in rows]


def test_committed_records_get_gapless_numbers_and_the_tree_matches_them(store_url: str, tmp_path: Path) -> None:
    log = _log(store_url, tmp_path, batch=7)
    _add(log, 10)
    assert log.pending() == 10
    assert log.integrate() == 10
    _add(log, 13, start=10)
    assert log.integrate() == 13 and log.pending() == 0
    leaves = _stored_leaves(log)
    assert len(leaves) == 23 and log.head().root == root_from_leaf_hashes(leaves)


def test_a_checkpoint_holds_every_committed_record_and_is_later_than_the_last(store_url: str, tmp_path: Path
                                                                              ) -> None:
    clock = ManualClock(datetime(2026, 6, 1, 9, tzinfo=UTC))
    log = _log(store_url, tmp_path, clock)
    _add(log, 5)
    first = log.checkpoint("test")
    assert first.size == 5  # committed, not yet integrated: the checkpoint integrates first
    assert log.checkpoint("again") .id == first.id  # no growth, no new checkpoint
    _add(log, 3, start=5)
    clock.set(datetime(2026, 5, 1, tzinfo=UTC))  # the clock went back
    second = log.checkpoint("test")
    assert second.size == 8 and second.timestamp > first.timestamp
    key = VerifierKey(ORIGIN, next(iter(log.keyring.public_keys("checkpoint").values())))
    a, b = verify_checkpoint(first.note, [key]), verify_checkpoint(second.note, [key])
    with log.sessions() as s:
        proof = log.consistency(s, a.size, b.size)
        inclusion = log.inclusion(s, 6, b.size)
    assert verify_consistency(a.size, b.size, a.root, b.root, proof)
    assert verify_inclusion(6, b.size, _stored_leaves(log)[6], inclusion, b.root)
    forced = log.checkpoint("period closed", force=True)
    assert forced.size == 8 and forced.timestamp > second.timestamp and forced.reason == "period closed"


def test_proofs_read_a_logarithmic_number_of_nodes_in_one_query(store_url: str, tmp_path: Path) -> None:
    log = _log(store_url, tmp_path)
    _bulk(log, 3000)
    log.integrate()
    leaves = _stored_leaves(log)
    roots = roots_at(leaves, [1234, 3000])
    bound = 2 * (3000).bit_length() + 2
    with log.sessions() as s:
        nodes = SqlNodes(s)
        from disclosure.proofs import consistency_plan, evaluate, inclusion_plan

        proof = evaluate(inclusion_plan(2999, 3000), nodes)
        assert verify_inclusion(2999, 3000, leaves[2999], proof, roots[3000])
        assert nodes.queries == 1 and nodes.reads <= bound
        nodes.reads = nodes.queries = 0
        proof = evaluate(consistency_plan(1234, 3000), nodes)
        assert verify_consistency(1234, 3000, roots[1234], roots[3000], proof)
        assert nodes.queries == 1 and nodes.reads <= bound


def test_proofs_beyond_the_tree_are_refused(store_url: str, tmp_path: Path) -> None:
    from sandbox.errors import Conflict, InvalidInput

    log = _log(store_url, tmp_path)
    _add(log, 4)
    log.integrate()
    with log.sessions() as s:
        with pytest.raises(Conflict):
            log.inclusion(s, 1, 5)
        with pytest.raises(InvalidInput):
            log.inclusion(s, 4, 4)
        with pytest.raises(InvalidInput):
            log.consistency(s, 4, 3)


def _append_and_integrate(url: str, keys: str, worker: int, rounds: int) -> None:
    log = AuditLog(session_factory(make_engine(url)), KeyRing(Path(keys)), ORIGIN, ManualClock(), batch=16)
    for r in range(rounds):
        _add(log, 5, start=worker * 1000 + r * 5)
        log.integrate()
        if r % 4 == 3:
            log.checkpoint(f"worker {worker}")


@pytest.mark.slow
def test_several_processes_append_and_integrate_concurrently(store_url: str, tmp_path: Path) -> None:
    log = _log(store_url, tmp_path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_and_integrate, args=(store_url, str(tmp_path / "keys"), w, 12))
             for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    log.integrate()
    leaves = _stored_leaves(log)
    assert len(leaves) == 4 * 12 * 5
    assert log.head().root == root_from_leaf_hashes(leaves)
    with log.sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditLogState)) == 1
        from sandbox.store.models import AuditCheckpoint

        checkpoints = list(s.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.timestamp)))
    assert checkpoints and [c.size for c in checkpoints] == sorted(c.size for c in checkpoints)
    roots = roots_at(leaves, {c.size for c in checkpoints})
    assert all(bytes(c.root) == roots[c.size] for c in checkpoints)


def test_the_sequencer_writes_stored_times_as_rfc3339_utc_whatever_form_the_store_returns() -> None:
    from sandbox.audit_sequence import _time

    expected = "2026-06-01T09:00:00.000001Z"
    assert _time("2026-06-01 09:00:00.000001") == expected  # SQLite, as SQLAlchemy stores it
    assert _time(expected) == expected  # PostgreSQL's to_char
    assert _time("2026-06-01 09:00:00") == "2026-06-01T09:00:00.000000Z"
    assert _time(datetime(2026, 6, 1, 11, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))) == expected


def test_the_sequencers_leaves_are_leaf_records_canonical_json_with_every_field_set(store_url: str,
                                                                                   tmp_path: Path) -> None:
    log = _log(store_url, tmp_path)
    now = datetime(2026, 6, 1, 9, 30, 0, 123456, tzinfo=UTC)
    with log.sessions.begin() as s:
        for i in range(3):
            draft = AuditDraft(action="run:create", resource=f"run/r{i}", via="api", actor_id="prn_a",
                               actor_org_id="org_a", actor_key_id="k1", decision="refused", rule="grant.active",
                               reason="grant 过期 — expired", status=409, code="grant_expired", grant_id="grt_1",
                               datasets=["b", "a"], sql_sha256="a" * 64, result_sha256="b" * 64,
                               rows={"scanned": 10, "result": i}, client="10.0.0.1", trace_id="f" * 32,
                               resource_org_id="org_b", detail={"nested": {"z": 1, "a": [1, "x"]}, "n": None})
            record(s, draft, now)
    assert log.integrate() == 3
    with log.sessions() as s:
        rows = s.execute(select(AuditEvent.__table__).order_by(AuditEvent.seq)).mappings().all()
    expected = [leaf_hash(canonical_json(leaf_record(r, r["seq"]))) for r in rows]
    assert all(r["client"] == "10.0.0.1" and r["trace_id"] for r in rows)
    assert log.head().root == root_from_leaf_hashes(expected)


def test_an_idle_tick_reads_but_never_writes_the_store(store_url: str, tmp_path: Path) -> None:
    from sqlalchemy import event

    log = _log(store_url, tmp_path)
    _add(log, 3)
    assert log.integrate() == 3
    statements: list[str] = []
    engine = log.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, sql, *a: statements.append(sql))
    assert log.integrate() == 0 and log.integrate() == 0
    writes = [s for s in statements if s.lstrip().split()[0].upper() in ("UPDATE", "INSERT", "DELETE")]
    assert statements and writes == []
    _add(log, 2, start=3)  # and a record committed later is still picked up
    assert log.integrate() == 2 and log.pending() == 0
