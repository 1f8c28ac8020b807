"""Audit records: one per access decision or change of governance state (docs/audit-log.md).

A request fills an `AuditDraft` as authentication and authorization decide, and `record` adds it to the
caller's transaction, so a record commits with the change it describes or not at all. The sequencer
(`sandbox.audit_log`) later gives each committed record its gapless sequence number and appends its canonical
JSON (`leaf_record`) to the Merkle log. Records never contain data values: ids, hashes, counts and reasons only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from disclosure.checkpoint import rfc3339
from disclosure.signing import MAX_JSON_INT
from sandbox.recorder import Execute, Prepared
from sandbox.store.models import AuditEvent

RECORD_VERSION = 1


class Outcome(StrEnum):
    """What became of an access: the record's `decision`."""

    ALLOW = "allow"  # authorized and done
    DENY = "deny"  # authentication, authorization, or rate limiting refused it
    REFUSED = "refused"  # authorized, then a domain rule (grant state, policy, lifecycle) refused it
    INVALID = "invalid"  # the request was malformed or named something that does not exist
    FAILED = "failed"  # the server failed


# Facts a route may note that have their own field in the record (the rest go to `detail`).
_ROW_FACTS = {"rows_scanned": "scanned", "result_rows": "result", "suppressed_cells": "suppressed_cells",
              "truncated_rows": "truncated", "bytes_scanned": "bytes_scanned", "result_bytes": "result_bytes"}


@dataclass
class AuditDraft:
    """What a request will record, filled in as authentication and authorization decide."""

    action: str
    resource: str
    via: str
    actor_id: str | None = None
    actor_org_id: str | None = None
    decision: str = "deny"
    rule: str = ""
    reason: str = ""
    code: str | None = None
    status: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    actor_key_id: str | None = None
    resource_org_id: str | None = None
    grant_id: str | None = None
    datasets: list[str] = field(default_factory=list)
    sql_sha256: str | None = None
    result_sha256: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    client: str | None = None
    trace_id: str | None = None

    def note(self, **facts: Any) -> None:
        """Add facts: grant, datasets, SQL and result hashes and row counts get their own fields."""
        for key, value in facts.items():
            if key == "grant_id" and isinstance(value, str):
                self.grant_id = value
            elif key in ("dataset", "dataset_id") and isinstance(value, str):
                self._add_datasets([value])
            elif key == "datasets" and isinstance(value, list | tuple):
                self._add_datasets([str(v) for v in value])
            elif key == "dataset_versions" and isinstance(value, Mapping):
                self._add_datasets([str(k) for k in value])
                self.detail[key] = _jsonable(value)
            elif key in ("sql_sha256", "frozen_sql_sha256") and isinstance(value, str):
                self.sql_sha256 = value
            elif key == "result_sha256":
                self.result_sha256 = value if isinstance(value, str) else None
            elif key in _ROW_FACTS and isinstance(value, int) and not isinstance(value, bool):
                self.rows[_ROW_FACTS[key]] = value
            else:
                self.detail[key] = _jsonable(value)

    def _add_datasets(self, names: list[str]) -> None:
        self.datasets = sorted(set(self.datasets) | set(names))

    def to_row(self, at: datetime) -> AuditEvent:
        """The row for this draft (its `seq` is given later by the sequencer)."""
        return AuditEvent(**self.to_values(at))

    def to_insert(self, at: datetime) -> Execute:
        """The row for this draft as a grouped INSERT for the group-commit recorder: the batch's audit rows go to
        the store as one multi-row INSERT, without an ORM object each (the run path)."""
        return Execute(_AUDIT_INSERT, self.to_values(at), grouped=True)

    def to_values(self, at: datetime) -> dict[str, Any]:
        """The row's column values (all but `id` and `seq`)."""
        return dict(at=at, actor_id=self.actor_id, actor_org_id=self.actor_org_id,
                    actor_key_id=self.actor_key_id, via=self.via, action=self.action[:60],
                    resource=self.resource[:200], resource_org_id=self.resource_org_id,
                    decision=self.decision, rule=self.rule[:200], reason=self.reason, code=self.code,
                    status=self.status, grant_id=self.grant_id, datasets=_join(self.datasets),
                    sql_sha256=self.sql_sha256, result_sha256=self.result_sha256,
                    rows=dict(self.rows) or None, client=(self.client or None) and self.client[:64],
                    trace_id=self.trace_id, detail=_jsonable(self.detail))


_AUDIT_INSERT = Prepared(insert(AuditEvent.__table__).inline())  # type: ignore[arg-type]  # the id is not read back


def record(session: Session, draft: AuditDraft, at: datetime) -> AuditEvent:
    """Append one audit record in the caller's transaction (it commits, or fails, with the change)."""
    row = draft.to_row(at)
    session.add(row)
    return row


def _join(datasets: list[str]) -> str:
    """Datasets as stored for filtering: ',a,b,' (so LIKE '%,a,%' finds one exactly)."""
    return f",{','.join(datasets)}," if datasets else ""


def split_datasets(stored: str) -> list[str]:
    """The dataset list of a stored record."""
    return [d for d in (stored or "").split(",") if d]


def _jsonable(value: Any) -> Any:
    """`value` as canonical-JSON-safe data: floats, decimals and times become strings, big ints too."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_JSON_INT else str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return rfc3339(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set | frozenset) else items
    return str(value)


def leaf_record(row: Mapping[str, Any] | Any, seq: int) -> dict[str, Any]:
    """The record as the log holds it: the canonical JSON of this dict is the Merkle leaf."""
    return {
        "v": RECORD_VERSION,
        "seq": seq,
        "time": rfc3339(row["at"]),
        "actor": {"principal": row["actor_id"], "org": row["actor_org_id"], "key": row["actor_key_id"],
                  "via": row["via"]},
        "action": row["action"],
        "resource": {"name": row["resource"], "org": row["resource_org_id"]},
        "decision": row["decision"],
        "rule": row["rule"],
        "reason": row["reason"],
        "code": row["code"],
        "status": row["status"],
        "grant": row["grant_id"],
        "datasets": split_datasets(row["datasets"]),
        "sql_sha256": row["sql_sha256"],
        "result_sha256": row["result_sha256"],
        "rows": row["rows"] or {},
        "client": row["client"],
        "trace_id": row["trace_id"],
        "detail": row["detail"] or {},
    }


def row_mapping(event: AuditEvent) -> dict[str, Any]:
    """An ORM record as the mapping `leaf_record` reads."""
    return {c.key: getattr(event, c.key) for c in AuditEvent.__table__.columns}
