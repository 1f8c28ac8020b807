"""The interim audit trail: one append-only row per access decision, with its rule, reason and outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sandbox.store.models import AuditEvent


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

    def to_row(self, at: datetime) -> AuditEvent:
        """The append-only row for this draft."""
        return AuditEvent(at=at, actor_id=self.actor_id, actor_org_id=self.actor_org_id, via=self.via,
                          action=self.action, resource=self.resource[:200], decision=self.decision,
                          rule=self.rule[:200], reason=self.reason, code=self.code, status=self.status,
                          detail=self.detail)


def record(session: Session, draft: AuditDraft, at: datetime) -> AuditEvent:
    """Append one audit row in the caller's transaction."""
    row = draft.to_row(at)
    session.add(row)
    return row


def list_events(session: Session, *, limit: int = 100, after_id: int = 0, actor_org_id: str | None = None
                ) -> list[AuditEvent]:
    """Audit rows in order, paged by id."""
    q = select(AuditEvent).where(AuditEvent.id > after_id).order_by(AuditEvent.id).limit(limit)
    if actor_org_id is not None:
        q = q.where(AuditEvent.actor_org_id == actor_org_id)
    return list(session.scalars(q))
