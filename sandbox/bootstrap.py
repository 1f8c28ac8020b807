"""`sluice init`: create SLUICE_HOME, migrate, make signing keys, create the platform agency and its admin."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from disclosure.signing import KeyRing
from sandbox import identity
from sandbox.audit import AuditDraft, record
from sandbox.clock import Clock
from sandbox.config import Settings
from sandbox.store.db import make_engine, session_factory, upgrade
from sandbox.store.models import Organization

PLATFORM_ORG_NAME = "Sluice Platform (implementing agency)"
SIGNING_CONTEXTS = ("certificate", "checkpoint", "disclosure")


@dataclass(frozen=True)
class InitResult:
    """What init did; `api_key` is set only when it created the bootstrap admin."""

    home: str
    database_url: str
    org_id: str
    principal_id: str | None
    api_key: str | None
    key_ids: dict[str, str]
    created: bool


def init_home(settings: Settings, clock: Clock) -> InitResult:
    """Initialize (idempotently) the state folder, control store, keys and bootstrap admin."""
    home = settings.resolved_home
    for sub in ("data", "keys", "uploads", "results"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        upgrade(engine)
        keyring = KeyRing(settings.keys_dir)
        kids = {ctx: keyring.ensure(ctx) for ctx in SIGNING_CONTEXTS}
        sessions = session_factory(engine)
        with sessions.begin() as s:
            org = s.scalar(select(Organization).where(Organization.is_platform.is_(True)))
            if org is not None:
                return InitResult(str(home), _safe_url(settings), org.id, None, None, kids, False)
            now = clock.now()
            org = identity.create_org(s, name=PLATFORM_ORG_NAME, kind="agency", now=now, is_platform=True)
            admin = identity.create_principal(s, org=org, name="bootstrap-admin", roles=["admin"], now=now,
                                              created_by=None)
            key, plaintext = identity.issue_key(s, principal=admin, now=now, ttl=None)
            record(s, AuditDraft(action="platform:init", resource=f"org/{org.id}", via="cli", actor_id=admin.id,
                                 actor_org_id=org.id, decision="allow", rule="bootstrap",
                                 reason="sluice init created the platform agency and its bootstrap admin",
                                 status=201, detail={"key_id": key.id}), now)
            return InitResult(str(home), _safe_url(settings), org.id, admin.id, plaintext, kids, True)
    finally:
        engine.dispose()


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


def rotate_signing_key(settings: Settings, clock: Clock, context: str) -> dict[str, str]:
    """Rotate one signing context's key, audited first (fail closed).

    The new key is prepared inactive; the audit record naming it is committed; only then does the key become
    active. If the record cannot be written the prepared key is discarded and nothing changed; if activation
    fails after the record committed, a second record says so.
    """
    if context not in SIGNING_CONTEXTS:
        from sandbox.errors import InvalidInput

        raise InvalidInput(f"context must be one of {', '.join(SIGNING_CONTEXTS)}", code="invalid_context")
    ring = KeyRing(settings.keys_dir)
    old = ring.active_kid(context)
    new = ring.prepare(context)
    engine = make_engine(settings.resolved_database_url)
    sessions = session_factory(engine)
    draft = AuditDraft(action="signing_key:rotate", resource=f"keys/{context}", via="cli", decision="allow",
                       rule="local administration", reason=f"{context} key rotated from {old} to {new}", status=200,
                       detail={"context": context, "old_kid": old, "new_kid": new})
    try:
        try:
            with sessions.begin() as s:
                record(s, draft, clock.now())
        except BaseException:
            ring.discard(context, new)
            raise
        try:
            ring.activate(context, new)
        except BaseException as exc:
            with sessions.begin() as s:
                record(s, AuditDraft(action="signing_key:rotate", resource=f"keys/{context}", via="cli",
                                     decision="failed", rule="local administration", code="activation_failed",
                                     reason=f"{new} was recorded but could not be activated "
                                            f"({type(exc).__name__}); {old} still signs", status=500,
                                     detail={"context": context, "old_kid": old, "new_kid": new}), clock.now())
            raise
    finally:
        engine.dispose()
    return {"context": context, "old_kid": old, "new_kid": new}
