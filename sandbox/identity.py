"""Organizations, principals and API keys: who is calling."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from policy.authz import subjects_for
from policy.permissions import ROLE_KINDS, OrgKind, Role
from sandbox.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from sandbox.store.models import ApiKey, Organization, Principal
from sandbox.store.types import new_id

KEY_PREFIX = "sk"
_KEY_RE = re.compile(r"^sk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class Caller:
    """An authenticated principal, as authorization and audit see it."""

    principal_id: str
    principal_name: str
    org_id: str
    org_kind: str
    roles: tuple[str, ...]
    is_platform: bool
    key_id: str

    @cached_property
    def subjects(self) -> list[str]:
        """Casbin subjects: `<kind>.<role>` for each role (+ `platform.admin`); worked out once per caller (a
        cached key's caller serves many requests; read it, never change it)."""
        return subjects_for(self.org_kind, self.roles, is_platform=self.is_platform)


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def create_org(session: Session, *, name: str, kind: str, now: datetime, is_platform: bool = False) -> Organization:
    """Create an organization of one of the five kinds."""
    try:
        kind_enum = OrgKind(kind)
    except ValueError:
        raise InvalidInput(f"organization kind must be one of {', '.join(OrgKind)}; got {kind!r}",
                           code="invalid_org_kind", kind=kind) from None
    name = name.strip()
    if not name:
        raise InvalidInput("organization name must not be empty", code="invalid_org_name")
    if session.scalar(select(Organization.id).where(Organization.name == name)):
        raise Conflict(f"an organization named {name!r} already exists", code="org_exists", name=name)
    org = Organization(id=new_id("org"), name=name, kind=kind_enum.value, is_platform=is_platform, created_at=now)
    session.add(org)
    session.flush()
    return org


def check_roles(kind: str, roles: list[str]) -> tuple[str, ...]:
    """Validate that every role fits the organization kind (see docs/permissions.md)."""
    if not roles:
        raise InvalidInput("a principal needs at least one role", code="invalid_role")
    out = []
    for role in roles:
        try:
            r = Role(role)
        except ValueError:
            raise InvalidInput(f"unknown role {role!r}; roles are {', '.join(Role)}", code="invalid_role",
                               role=role) from None
        if OrgKind(kind) not in ROLE_KINDS[r]:
            fits = ", ".join(sorted(k.value for k in ROLE_KINDS[r]))
            raise InvalidInput(f"role {role} does not fit an organization of kind {kind}; it fits {fits}",
                               code="role_not_allowed_for_org_kind", role=role, kind=kind)
        if r.value not in out:
            out.append(r.value)
    return tuple(out)


def create_principal(session: Session, *, org: Organization, name: str, roles: list[str], now: datetime,
                     created_by: str | None) -> Principal:
    """Create a principal whose roles fit its organization's kind."""
    valid = check_roles(org.kind, roles)
    name = name.strip()
    if not name:
        raise InvalidInput("principal name must not be empty", code="invalid_principal_name")
    p = Principal(id=new_id("prn"), org_id=org.id, name=name, roles=list(valid), created_at=now,
                  created_by=created_by)
    session.add(p)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"organization already has a principal named {name!r}", code="principal_exists") from None
    return p


def issue_key(session: Session, *, principal: Principal, now: datetime, ttl: timedelta | None) -> tuple[ApiKey, str]:
    """Create an API key; the plaintext is returned once and only its SHA-256 is stored."""
    key_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    key = ApiKey(id=key_id, principal_id=principal.id, secret_sha256=_hash_secret(secret), created_at=now,
                 expires_at=(now + ttl) if ttl else None)
    session.add(key)
    session.flush()
    return key, f"{KEY_PREFIX}_{key_id}_{secret}"


def key_id_of(token: str) -> str | None:
    """The key id inside a presented token, if it is well formed."""
    m = _KEY_RE.match(token)
    return m.group(1) if m else None


class KeyCache:
    """Recently verified keys, so most requests need no store query.

    Entries are keyed by the SHA-256 of the whole token, live at most `ttl_seconds` (by the injected clock)
    and never past the key's own expiry. Revoking a key drops its entries at once in this process; another
    process sees the revocation within `ttl_seconds` (SLUICE_AUTH_CACHE_SECONDS; 0 disables the cache).
    """

    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl = timedelta(seconds=ttl_seconds)
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Caller, datetime | None, datetime]] = {}
        self._lock = threading.Lock()

    def get(self, token: str, now: datetime) -> Caller | None:
        """The cached caller for `token`, if fresh and the key has not expired."""
        if not self.ttl:
            return None
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None:
            return None
        caller, expires_at, cached_at = entry
        if now - cached_at >= self.ttl or now < cached_at or (expires_at is not None and now >= expires_at):
            with self._lock:
                self._entries.pop(digest, None)
            return None
        return caller

    def put(self, token: str, caller: Caller, expires_at: datetime | None, now: datetime) -> None:
        """Remember a key that just verified against the store."""
        if not self.ttl:
            return
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[digest] = (caller, expires_at, now)

    def invalidate(self, key_id: str) -> None:
        """Forget every entry for `key_id` (called when it is revoked)."""
        with self._lock:
            for digest in [d for d, (c, _, _) in self._entries.items() if c.key_id == key_id]:
                del self._entries[digest]


def authenticate(session: Session, token: str, *, now: datetime, cache: KeyCache | None = None) -> Caller:
    """Resolve a bearer token to a caller, refusing malformed, unknown, revoked and expired keys."""
    if cache is not None:
        cached = cache.get(token, now)
        if cached is not None:
            return cached
    m = _KEY_RE.match(token)
    if not m:
        raise Unauthenticated("API key is malformed; expected sk_<id>_<secret>", code="key_malformed")
    key_id, secret = m.groups()
    row = session.execute(
        select(ApiKey, Principal, Organization)
        .join(Principal, ApiKey.principal_id == Principal.id)
        .join(Organization, Principal.org_id == Organization.id)
        .where(ApiKey.id == key_id)
    ).first()
    presented = _hash_secret(secret)
    if row is None:
        hmac.compare_digest(presented, presented)  # same work either way
        raise Unauthenticated("API key is not known", code="key_unknown", key_id=key_id)
    key, principal, org = row
    if not hmac.compare_digest(presented, key.secret_sha256):
        raise Unauthenticated("API key is not known", code="key_unknown", key_id=key_id)
    if key.revoked_at is not None:
        raise Unauthenticated("API key was revoked; ask an admin for a new key", code="key_revoked", key_id=key_id)
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthenticated("API key has expired; ask an admin for a new key", code="key_expired",
                              key_id=key_id)
    caller = Caller(principal_id=principal.id, principal_name=principal.name, org_id=org.id, org_kind=org.kind,
                    roles=tuple(principal.roles), is_platform=org.is_platform, key_id=key_id)
    if cache is not None:
        cache.put(token, caller, key.expires_at, now)
    return caller


def revoke_key(session: Session, *, principal_id: str, key_id: str, now: datetime, reason: str) -> ApiKey:
    """Revoke one of a principal's keys; revoking twice is a conflict."""
    key = session.get(ApiKey, key_id)
    if key is None or key.principal_id != principal_id:
        raise NotFound(f"principal {principal_id} has no key {key_id}", code="key_not_found")
    if key.revoked_at is not None:
        raise Conflict(f"key {key_id} is already revoked", code="key_already_revoked")
    key.revoked_at = now
    key.revoked_reason = reason
    session.flush()
    return key
