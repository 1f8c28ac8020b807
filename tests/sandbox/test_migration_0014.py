"""Migration 0014 regroups the stored Merkle nodes into tiles and back without changing the tree."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from sqlalchemy import insert, text

from disclosure.merkle import leaf_hash, root_from_leaf_hashes
from disclosure.proofs import MemoryNodes, node_id
from disclosure.signing import KeyRing, canonical_json
from sandbox.audit import AuditDraft, leaf_record
from sandbox.audit_log import AuditLog
from sandbox.clock import ManualClock
from sandbox.store.db import alembic_config, make_engine, session_factory, upgrade
from sandbox.store.models import AuditEvent


def _migrate(url: str, revision: str, down: bool) -> None:
    cfg = alembic_config()
    engine = make_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
    engine.dispose()


def _add(log: AuditLog, n: int) -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    rows = [AuditDraft(action="x:y", resource=f"r/{i}", via="api", decision="allow", status=200).to_row(now)
            for i in range(n)]
    with log.sessions.begin() as s:
        s.execute(insert(AuditEvent), [{c.key: getattr(r, c.key) for c in AuditEvent.__table__.columns
                                        if c.key != "id"} for r in rows])


def _leaves(url: str) -> list[bytes]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(AuditEvent.__table__.select().where(AuditEvent.seq.is_not(None))
                            .order_by(AuditEvent.seq)).mappings().all()
    engine.dispose()
    return [leaf_hash(canonical_json(leaf_record(r, r["seq"]))) for r in rows]


def test_tiles_become_every_node_and_back_and_the_log_goes_on(store_url: str, tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys")
    ring.ensure("checkpoint")
    log = AuditLog(session_factory(make_engine(store_url)), ring, "sluice.test/m", ManualClock(), batch=97)
    _add(log, 300)
    log.integrate()
    engine = make_engine(store_url)
    with engine.connect() as conn:
        tiles = dict(conn.execute(text("SELECT id, hashes FROM audit_log_tiles")).all())
    engine.dispose()

    _migrate(store_url, "0012", down=True)
    expected = MemoryNodes()
    expected.append(_leaves(store_url))
    engine = make_engine(store_url)
    with engine.connect() as conn:
        nodes = {int(i): bytes(h) for i, h in conn.execute(text("SELECT id, hash FROM audit_log_nodes"))}
    engine.dispose()
    assert nodes == {node_id(*key): value for key, value in expected.nodes.items()}

    _migrate(store_url, "head", down=False)
    engine = make_engine(store_url)
    upgrade(engine)
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT id, hashes FROM audit_log_tiles")).all()) == tiles
    engine.dispose()
    _add(log, 50)
    assert log.integrate() == 50
    assert log.head().root == root_from_leaf_hashes(_leaves(store_url))
