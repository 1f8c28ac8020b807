"""The regulator's interfaces to the audit log: events, checkpoints, proofs and exports (docs/audit-log.md)."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from sqlalchemy import or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from disclosure.checkpoint import verifier_key
from disclosure.export import EXPORT_TYPE
from sandbox.app.deps import SESSION, AppState, Guard, app_state, require
from sandbox.audit import leaf_record
from sandbox.audit_log import SqlNodes, checkpoint_of
from sandbox.errors import InvalidInput
from sandbox.store.models import AuditCheckpoint, AuditEvent

router = APIRouter(prefix="/v1/audit", tags=["audit"])
_EVENTS = AuditEvent.__table__
MAX_PAGE = 1000


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} must be an RFC 3339 time such as 2026-06-01T00:00:00Z", code="invalid_time"
                           ) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{name} needs a UTC offset, e.g. 2026-06-01T00:00:00Z", code="naive_timestamp")
    return parsed


class Filters:
    """The filters events and exports share; operators are always narrowed to their own organization."""

    def __init__(self, actor: str | None = Query(None, description="principal id of the actor"),
                 org: str | None = Query(None, description="organization of the actor or of the resource"),
                 dataset: str | None = Query(None, description="dataset id the record concerns"),
                 action: str | None = Query(None, description="e.g. run:create, or a prefix such as run:"),
                 decision: str | None = Query(None, pattern="^(allow|deny|refused|invalid|failed)$"),
                 since: str | None = Query(None, description="RFC 3339; records at or after"),
                 until: str | None = Query(None, description="RFC 3339; records before")) -> None:
        self.actor, self.org, self.dataset, self.action, self.decision = actor, org, dataset, action, decision
        self.since_text, self.until_text = since, until

    def given(self) -> dict[str, str]:
        """The filters that were set, as given."""
        out = {"actor": self.actor, "org": self.org, "dataset": self.dataset, "action": self.action,
               "decision": self.decision, "since": self.since_text, "until": self.until_text}
        return {k: v for k, v in out.items() if v is not None}

    def where(self, guard: Guard) -> list[ColumnElement[bool]]:
        """SQL conditions for these filters and the caller's scope (times are parsed here, inside the audited
        request, so a bad time is an audited `invalid` request)."""
        since, until = _time(self.since_text, "since"), _time(self.until_text, "until")
        c = _EVENTS.c
        out: list[ColumnElement[bool]] = [c.seq.is_not(None)]
        if not guard.any_org:
            own = guard.caller.org_id
            out.append(or_(c.actor_org_id == own, c.resource_org_id == own))
        if self.actor:
            out.append(c.actor_id == self.actor)
        if self.org:
            out.append(or_(c.actor_org_id == self.org, c.resource_org_id == self.org))
        if self.dataset:
            out.append(c.datasets.like(f"%,{self.dataset},%"))
        if self.action:
            out.append(c.action.like(f"{self.action}%") if self.action.endswith(":") else c.action == self.action)
        if self.decision:
            out.append(c.decision == self.decision)
        if since:
            out.append(c.at >= since)
        if until:
            out.append(c.at < until)
        return out


def _checkpoint_out(row: AuditCheckpoint, state: AppState) -> dict[str, Any]:
    cp = checkpoint_of(row)
    keys = state.keyring.public_keys("checkpoint")
    return {"origin": cp.origin, "tree_size": row.size, "root_hash": _b64(bytes(row.root)),
            "timestamp": row.timestamp.isoformat(), "kid": row.kid, "reason": row.reason, "note": row.note,
            "verifier_key": verifier_key(cp.origin, keys[row.kid]) if row.kid in keys else None}


@router.get("/events")
def list_events(filters: Filters = Depends(), cursor: int = Query(0, ge=0, description="next_cursor of a page"),
                limit: int = Query(100, ge=1, le=MAX_PAGE), latest: int | None = Query(None, ge=1, le=MAX_PAGE),
                proofs: bool = Query(False, description="inclusion proof per record (always for operators)"),
                guard: Guard = require("audit", "read"), session: Session = SESSION,
                state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Audit records in sequence order with filters and a cursor; `latest=N` gives the newest N."""
    with_proofs = proofs or not guard.any_org
    checkpoint = state.audit_log.checkpoint("events read") if with_proofs else None
    if checkpoint is None:
        state.audit_log.integrate()
    conditions = filters.where(guard)
    if checkpoint is not None:
        conditions.append(_EVENTS.c.seq < checkpoint.size)
    query = select(_EVENTS).where(*conditions)
    if latest is not None:
        rows = list(reversed(session.execute(query.order_by(_EVENTS.c.seq.desc()).limit(latest + 1))
                             .mappings().all()))
        more = len(rows) > latest
        rows = rows[1:] if more else rows
        next_cursor = None
    else:
        rows = list(session.execute(query.where(_EVENTS.c.seq >= cursor).order_by(_EVENTS.c.seq).limit(limit + 1))
                    .mappings().all())
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = int(rows[-1]["seq"]) + 1 if more else None
    events = []
    for row in rows:
        item = leaf_record(row, int(row["seq"]))
        if checkpoint is not None:
            item["inclusion_proof"] = [_b64(p) for p in
                                       state.audit_log.inclusion(session, int(row["seq"]), checkpoint.size)]
        events.append(item)
    guard.note(filters=filters.given(), returned=len(events), proofs=with_proofs)
    return {"events": events, "more": more, "next_cursor": next_cursor,
            "tree_size": checkpoint.size if checkpoint else state.audit_log.head().size,
            "checkpoint": _checkpoint_out(checkpoint, state) if checkpoint else None}


@router.get("/checkpoint", response_model=None)
def get_checkpoint(format: str = Query("json", pattern="^(json|note)$"),
                   guard: Guard = require("audit", "read"), state: AppState = Depends(app_state)
                   ) -> dict[str, Any] | Response:
    """The latest checkpoint, signed now if the log grew since the last one (`format=note`: the signed note)."""
    row = state.audit_log.checkpoint("on demand")
    guard.note(tree_size=row.size, checkpoint_timestamp=row.timestamp)
    if format == "note":
        return PlainTextResponse(row.note, media_type="text/plain; charset=utf-8")
    return _checkpoint_out(row, state)


@router.get("/proofs/inclusion")
def inclusion_proof(index: int = Query(..., ge=0), tree_size: int = Query(..., ge=1),
                    guard: Guard = require("audit", "read"), session: Session = SESSION,
                    state: AppState = Depends(app_state)) -> dict[str, Any]:
    """RFC 9162 inclusion proof of entry `index` in the tree of `tree_size`."""
    proof = state.audit_log.inclusion(session, index, tree_size)
    guard.note(index=index, tree_size=tree_size)
    leaf = SqlNodes(session).read_nodes([(0, index)]).get((0, index))
    return {"index": index, "tree_size": tree_size, "leaf_hash": _b64(bytes(leaf)) if leaf else None,
            "proof": [_b64(p) for p in proof]}


@router.get("/proofs/consistency")
def consistency_proof(first: int = Query(..., ge=0), second: int = Query(..., ge=0),
                      guard: Guard = require("audit", "read"), session: Session = SESSION,
                      state: AppState = Depends(app_state)) -> dict[str, Any]:
    """RFC 9162 consistency proof from the tree of size `first` to the tree of size `second`."""
    proof = state.audit_log.consistency(session, first, second)
    guard.note(first=first, second=second)
    return {"first": first, "second": second, "proof": [_b64(p) for p in proof]}


@router.get("/export", response_model=None)
def export(filters: Filters = Depends(),
           consistency_from: list[int] = Query([], description="tree sizes of checkpoints you hold: the export "
                                                               "carries a consistency proof from each"),
           guard: Guard = require("audit", "export"), session: Session = SESSION,
           state: AppState = Depends(app_state)) -> Response:
    """JSON lines: a header with the signed checkpoint, then one record per line. A filtered export (any
    filter, or an operator's) carries an inclusion proof per record; a full one carries each leaf hash."""
    checkpoint = state.audit_log.checkpoint("export")
    size = checkpoint.size
    filtered = bool(filters.given()) or not guard.any_org
    consistency = []
    for first in sorted(set(consistency_from)):
        if first > size:
            raise InvalidInput(f"consistency_from={first} is beyond the export's tree size {size}",
                               code="invalid_proof_request")
        consistency.append({"from": first, "proof": [_b64(p) for p in state.audit_log.consistency(session, first,
                                                                                                  size)]})
    conditions = [*filters.where(guard), _EVENTS.c.seq < size]
    spool = tempfile.SpooledTemporaryFile(max_size=16 << 20)  # noqa: SIM115 - handed to the response
    header = {"type": EXPORT_TYPE, "origin": checkpoint_of(checkpoint).origin, "tree_size": size,
              "checkpoint": checkpoint.note, "filtered": filtered, "filters": filters.given(),
              "exported_at": state.clock.now().isoformat(), "consistency": consistency}
    spool.write(json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
    count = 0
    for line in _export_lines(session, state, conditions, size, filtered):
        spool.write(line)
        count += 1
    guard.note(filters=filters.given(), tree_size=size, exported=count, filtered=filtered)
    spool.seek(0)
    return StreamingResponse(_chunks(spool), media_type="application/x-ndjson", headers={
        "Content-Disposition": f'attachment; filename="audit-{size}.jsonl"'})


def _export_lines(session: Session, state: AppState, conditions: list[ColumnElement[bool]], size: int,
                  filtered: bool) -> Iterator[bytes]:
    after = -1
    while True:
        rows = session.execute(select(_EVENTS).where(*conditions, _EVENTS.c.seq > after)
                               .order_by(_EVENTS.c.seq).limit(2000)).mappings().all()
        if not rows:
            return
        seqs = [int(r["seq"]) for r in rows]
        leaves = {} if filtered else SqlNodes(session).read_nodes([(0, s) for s in seqs])
        for seq, row in zip(seqs, rows, strict=True):
            item: dict[str, Any] = {"record": leaf_record(row, seq)}
            if filtered:
                item["proof"] = [_b64(p) for p in state.audit_log.inclusion(session, seq, size)]
            else:
                leaf = leaves.get((0, seq))
                item["leaf_hash"] = _b64(leaf) if leaf else None
            yield json.dumps(item, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8") + b"\n"
        after = seqs[-1]


def _chunks(spool: Any) -> Iterator[bytes]:
    try:
        while chunk := spool.read(1 << 16):
            yield chunk
    finally:
        spool.close()
