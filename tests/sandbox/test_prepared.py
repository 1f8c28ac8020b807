"""Prepared statements send the driver what `Connection.execute` sends and read back what a Core result reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, bindparam, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from metering.events import DatasetUse, EventKind, UsageEvent, event_id, quantities
from sandbox.audit import AuditDraft
from sandbox.billing.convert import event_values
from sandbox.prepared import Prepared
from sandbox.store.db import make_engine
from sandbox.store.models import AuditEvent, UsageEventRow

AUDIT = AuditEvent.__table__
EVENTS = UsageEventRow.__table__
AT = datetime(2026, 6, 1, 12, 30, 15, 123456, tzinfo=UTC)


def _audit(resource: str) -> dict[str, Any]:
    draft = AuditDraft(action="run:create", resource=resource, via="api", actor_id="prn_a", decision="allow",
                       rule="r", status=201, grant_id="grt_1", trace_id="ab" * 16,
                       detail={"method": "POST", "nested": {"k": [1, "two", None]}, "n": 2.5})
    draft.note(datasets=["nation", "region"], rows_scanned=25, result_rows=5, sql_sha256="cd" * 32)
    return draft.to_values(AT)


def _event(source: str) -> dict[str, Any]:
    return event_values(UsageEvent(
        id=event_id(EventKind.RUN, source), kind=EventKind.RUN.value, relation="platform", event_time=AT,
        ingested_at=AT, issuer_org_id="org_p", payer_org_id="org_o", operator_org_id="org_o",
        purpose_class="industry", outcome="succeeded", quantities=quantities({"runs": 1, "rows_scanned": 25}),
        grant_id="grt_1", datasets=(DatasetUse("nation", 25, 100),), trace_id="ab" * 16, source_id=source))


def _raw(connection: Connection, table: str, where: str, *, but: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows as the database holds them (no result processing), without the generated id and the columns `but`."""
    rows = connection.execute(text(f"SELECT * FROM {table} WHERE {where} ORDER BY id"))
    return [{k: v for k, v in row._mapping.items() if k not in ("id", *but)} for row in rows]


def test_prepared_inserts_store_what_core_stores(store_url: str) -> None:
    engine = make_engine(store_url)
    with engine.begin() as c:
        c.execute(insert(AUDIT), _audit("core/1"))
        c.execute(insert(AUDIT), [_audit("core/2"), _audit("core/3")])
        c.execute(insert(EVENTS), _event("core"))
        audit, events = Prepared(insert(AUDIT).inline()), Prepared(insert(EVENTS))
        assert audit.plan(c, tuple(_audit("x"))) is not None  # the store's engine takes the prepared path
        audit.execute(c, _audit("ours/1"))
        audit.executemany(c, [_audit("ours/2"), _audit("ours/3")])
        events.execute(c, _event("ours"))
    with engine.connect() as c:
        core = _raw(c, "audit_events", "resource LIKE 'core/%'", but=("resource",))
        assert len(core) == 3 and core == _raw(c, "audit_events", "resource LIKE 'ours/%'", but=("resource",))
        assert isinstance(core[0]["detail"], str | dict) and core[0]["detail"]  # the stored JSON, as stored
        differ = ("source_id", "payload_sha256")  # the id is derived from the source, and the digest covers both
        assert _raw(c, "usage_events", "source_id = 'core'", but=differ) == \
            _raw(c, "usage_events", "source_id = 'ours'", but=differ)
    engine.dispose()


def test_a_prepared_update_counts_the_rows_it_matched(store_url: str) -> None:
    engine = make_engine(store_url)
    finish = Prepared(update(AUDIT).where(AUDIT.c.resource == bindparam("r"), AUDIT.c.code.is_(None))
                      .values(code=bindparam("code")))
    with engine.begin() as c:
        c.execute(insert(AUDIT), _audit("a"))
        assert finish.execute(c, {"r": "a", "code": "done"}) == 1
        assert finish.execute(c, {"r": "a", "code": "again"}) == 0  # no longer matches
    engine.dispose()


def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(store_url: str) -> None:
    engine = make_engine(store_url)
    events = Prepared(insert(EVENTS))
    with engine.begin() as c:
        events.execute(c, _event("dup"))
    with pytest.raises(IntegrityError), engine.begin() as c:
        events.execute(c, _event("dup"))  # the same deterministic id
    with engine.connect() as c:
        assert len(_raw(c, "usage_events", "source_id = 'dup'")) == 1
    engine.dispose()


def test_a_prepared_read_returns_what_a_core_result_returns(store_url: str) -> None:
    engine = make_engine(store_url)
    query = select(AUDIT.c.at, AUDIT.c.detail, AUDIT.c.rows, AUDIT.c.status, AUDIT.c.code,
                   (select(EVENTS.c.quantities).where(EVENTS.c.source_id == bindparam("source"))
                    .scalar_subquery().label("q"))).where(AUDIT.c.resource == bindparam("r"))
    with engine.begin() as c:
        c.execute(insert(AUDIT), _audit("read"))
        c.execute(insert(EVENTS), _event("read"))
    with engine.connect() as c:
        core = c.execute(query, {"r": "read", "source": "read"}).first()
        ours = Prepared(query).first(c, {"r": "read", "source": "read"})
        assert core is not None and ours == tuple(core)
        assert ours[0] == AT and ours[1]["nested"] == {"k": [1, "two", None]}  # an aware time, parsed JSON
        assert Prepared(query).first(c, {"r": "none", "source": "none"}) is None
    engine.dispose()


def test_with_an_event_listener_the_statement_takes_sqlalchemys_own_path(store_url: str) -> None:
    engine = make_engine(store_url)
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: seen.append(statement))
    audit = Prepared(insert(AUDIT).inline())
    with engine.begin() as c:
        assert audit.plan(c, tuple(_audit("x"))) is None
        audit.execute(c, _audit("listened"))
    assert any(s.startswith("INSERT INTO audit_events") for s in seen)
    engine.dispose()


def test_the_run_paths_statements_take_the_prepared_path_on_the_store(store_url: str) -> None:
    """Each of the run path's hot statements compiles to a plan on both backends (none falls back unseen)."""
    from sandbox.audit import _AUDIT_INSERT
    from sandbox.billing.convert import _EVENT_INSERT
    from sandbox.billing.usage import _FINISH, _INSERT
    from sandbox.run_inputs import _statement
    from sandbox.run_record import COLUMNS, RunRecord, finish_params

    engine = make_engine(store_url)
    run = RunRecord(id="run_1", job_id="job_1", grant_id="grt_1", operator_org_id="org_o", requested_by="prn_a",
                    idempotency_key=None, params={}, status="running", frozen_sql_sha256="", dataset_versions={},
                    created_at=AT)
    finish = tuple(finish_params(run, "running"))
    with engine.connect() as c:
        assert _AUDIT_INSERT.plan(c, tuple(_audit("x"))) is not None
        assert _EVENT_INSERT.plan(c, tuple(_event("x"))) is not None
        assert _INSERT.plan(c, COLUMNS) is not None and _FINISH.plan(c, finish) is not None
        assert _statement(1).plan(c, ("job_id", "dataset_0")) is not None
    engine.dispose()
