"""The sequencer's hot path: number a batch of committed audit records and build their leaves, in plain SQL.

`number_pending` gives the oldest committed records without a `seq` the next gapless numbers and returns their
leaf columns in one statement (`UPDATE … RETURNING`: one round trip and one pass over the rows, no ORM objects).
`leaf_bytes` builds the canonical JSON leaf from such a row; it equals
`canonical_json(leaf_record(row, seq))` byte for byte (tests/sandbox/test_audit_log.py checks it against
`leaf_record`, which the verifier and the export use). The caller holds the log-state lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.engine import Connection

from disclosure.checkpoint import rfc3339
from sandbox.audit import RECORD_VERSION

_COLUMNS = ("seq, at, actor_id, actor_org_id, actor_key_id, via, action, resource, resource_org_id, decision, "
            "rule, reason, code, status, grant_id, datasets, sql_sha256, result_sha256, {rows}, client, trace_id, "
            "{detail}")

# PostgreSQL formats the time itself (as disclosure.checkpoint.rfc3339 does) and hands JSON back as text.
_POSTGRESQL = (
    "WITH p AS (SELECT q.id, %s + row_number() OVER (ORDER BY q.id) - 1 AS s "
    "FROM (SELECT id FROM audit_events WHERE seq IS NULL ORDER BY id LIMIT %s) AS q) "
    "UPDATE audit_events AS e SET seq = p.s FROM p WHERE e.id = p.id RETURNING "
    + _COLUMNS.replace("at,", "to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),", 1)
    .format(rows="e.rows::text", detail="e.detail::text").replace("seq,", "e.seq,", 1))
_SQLITE = (
    "UPDATE audit_events SET seq = p.s FROM (SELECT id, ? + row_number() OVER (ORDER BY id) - 1 AS s "
    "FROM (SELECT id FROM audit_events WHERE seq IS NULL ORDER BY id LIMIT ?)) AS p "
    "WHERE audit_events.id = p.id RETURNING " + _COLUMNS.format(rows="rows", detail="detail"))


def number_pending(connection: Connection, base: int, limit: int) -> list[Sequence[Any]]:
    """Number up to `limit` committed records without a `seq` as `base`, `base + 1`, … in id order; return
    their leaf columns (`_COLUMNS`) ordered by the new `seq`."""
    cursor = connection.connection.cursor()
    try:
        if connection.dialect.name == "postgresql":
            cursor.execute(_POSTGRESQL, (base, limit))
        else:
            cursor.execute(_SQLITE, (base, limit))
        rows: list[Sequence[Any]] = list(cursor.fetchall())
    finally:
        cursor.close()
    rows.sort(key=_first)
    return rows


def _first(row: Sequence[Any]) -> int:
    return int(row[0])


def _time(value: Any) -> str:
    """RFC 3339 UTC text of a stored time: PostgreSQL's already is; SQLite's 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC)
    is rewritten in place; anything else goes through `rfc3339`."""
    if isinstance(value, str):
        if len(value) == 27 and value[10] == "T" and value[-1] == "Z":
            return value
        if len(value) == 26 and value[10] == " " and value[19] == ".":
            return f"{value[:10]}T{value[11:]}Z"
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return rfc3339(value if value.tzinfo else value.replace(tzinfo=UTC))
    raise ValueError(f"not a stored time: {value!r}")


def _json(value: Any) -> Any:
    if value is None or isinstance(value, dict):
        return value
    return orjson.loads(value)


def leaf_bytes(row: Sequence[Any]) -> bytes:
    """The canonical JSON leaf of a row `number_pending` returned (see sandbox.audit.leaf_record)."""
    (seq, at, actor_id, actor_org_id, actor_key_id, via, action, resource, resource_org_id, decision, rule, reason,
     code, status, grant_id, datasets, sql_sha256, result_sha256, rows, client, trace_id, detail) = row
    return orjson.dumps({
        "v": RECORD_VERSION, "seq": seq, "time": _time(at),
        "actor": {"principal": actor_id, "org": actor_org_id, "key": actor_key_id, "via": via},
        "action": action, "resource": {"name": resource, "org": resource_org_id}, "decision": decision,
        "rule": rule, "reason": reason, "code": code, "status": status, "grant": grant_id,
        "datasets": [d for d in datasets.split(",") if d] if datasets else [], "sql_sha256": sql_sha256,
        "result_sha256": result_sha256, "rows": _json(rows) or {}, "client": client, "trace_id": trace_id,
        "detail": _json(detail) or {}}, option=orjson.OPT_SORT_KEYS)
