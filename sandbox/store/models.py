"""Tables of the control store. Migrations in sandbox/store/migrations must match these (a test checks)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sandbox.store.types import DecimalText, UTCDateTime


class Base(DeclarativeBase):
    """Declarative base for every control-store table."""


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))
    is_platform: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Principal(Base):
    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(40), nullable=True)

    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_principals_org_name"),)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class CasbinRule(Base):
    """Authorization policy rows (pycasbin's layout), seeded and changed only by migrations."""

    __tablename__ = "casbin_rule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ptype: Mapped[str] = mapped_column(String(8))
    v0: Mapped[str] = mapped_column(String(100), default="")
    v1: Mapped[str] = mapped_column(String(100), default="")
    v2: Mapped[str] = mapped_column(String(100), default="")
    v3: Mapped[str] = mapped_column(String(100), default="")
    v4: Mapped[str] = mapped_column(String(100), default="")
    v5: Mapped[str] = mapped_column(String(100), default="")


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DatasetVersion(Base):
    """One immutable version: a change of data, grade or constraints is a new row."""

    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    domain: Mapped[str] = mapped_column(String(40))
    update_frequency: Mapped[str] = mapped_column(String(40))
    # The free text a version registered before update frequencies became an enum declared (signed in its
    # certificate); set only by migration 0006 when the mapping changed the text.
    update_frequency_legacy: Mapped[str | None] = mapped_column(String(40), nullable=True)
    grade: Mapped[str] = mapped_column(String(20))
    entity_column: Mapped[str | None] = mapped_column(String(128), nullable=True)
    population: Mapped[str | None] = mapped_column(String(64), nullable=True)
    columns: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    expectations: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    freshness_column: Mapped[str | None] = mapped_column(String(128), nullable=True)
    quality: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    row_count: Mapped[int] = mapped_column(BigInteger)
    byte_size: Mapped[int] = mapped_column(BigInteger)
    source_sha256: Mapped[str] = mapped_column(String(64))
    source_bytes: Mapped[int] = mapped_column(BigInteger)
    parquet_sha256: Mapped[str] = mapped_column(String(64))
    source_name: Mapped[str] = mapped_column(String(300))
    storage_path: Mapped[str] = mapped_column(String(500))
    certificate_code: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(40))
    # Registration workflow (sandbox/catalogue/registration.py is the only writer of these).
    registration_state: Mapped[str] = mapped_column(String(20), index=True)
    registration_path: Mapped[str] = mapped_column(String(20))
    state_reason: Mapped[str] = mapped_column(Text, default="")
    return_fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    accepted_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    review_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    notice_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    notice_ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    certified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),)


class RegistrationEvent(Base):
    """Append-only history of a version's registration: every transition, objection and resolution."""

    __tablename__ = "registration_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(30))
    from_state: Mapped[str | None] = mapped_column(String(20), nullable=True)
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RegistrationObjection(Base):
    """An objection (异议) filed during public notice; its resolution is public, its text is not."""

    __tablename__ = "registration_objections"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), index=True)
    filed_by: Mapped[str] = mapped_column(String(40))
    filer_org_id: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    filed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20))
    resolution: Mapped[str | None] = mapped_column(Text, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class QualityReport(Base):
    """A quality problem found in use (质量问题反馈); readable only by the provider and the agency."""

    __tablename__ = "quality_reports"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    provider_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    filed_by: Mapped[str] = mapped_column(String(40))
    filer_org_id: Mapped[str] = mapped_column(String(40))
    category: Mapped[str] = mapped_column(String(30))
    column: Mapped[str | None] = mapped_column(String(128), nullable=True)
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), index=True)
    answer_reason: Mapped[str] = mapped_column(Text, default="")
    fixed_in_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    answered_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Certificate(Base):
    __tablename__ = "certificates"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    year: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kid: Mapped[str] = mapped_column(String(32))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    document: Mapped[str] = mapped_column(Text)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (UniqueConstraint("year", "seq", name="uq_certificates_year_seq"),)


class Grant(Base):
    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    operator_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    scope: Mapped[str] = mapped_column(String(20))
    domains: Mapped[list[str]] = mapped_column(JSON)
    datasets: Mapped[list[str]] = mapped_column(JSON)
    scenario: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    purpose_class: Mapped[str] = mapped_column(String(20))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    min_group_size: Mapped[int] = mapped_column(Integer)
    max_result_rows: Mapped[int] = mapped_column(Integer)
    auto_approve: Mapped[bool] = mapped_column(Boolean)
    column_overrides: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    status_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(40))
    engine: Mapped[str] = mapped_column(String(20), default="duckdb", server_default="duckdb")


class GrantEvent(Base):
    """Append-only history of a grant's state changes, each with its reason."""

    __tablename__ = "grant_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(20))
    from_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)


class AuditEvent(Base):
    """One audit record: an access decision or a change of governance state (see docs/audit-log.md).

    Requests insert rows with `seq` unset, in the transaction of the change they describe; the sequencer
    (sandbox.audit_log) then gives each committed row the next gapless `seq` and appends its canonical JSON to
    the Merkle log. A row with a `seq` never changes again.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    actor_org_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    actor_key_id: Mapped[str | None] = mapped_column(String(24), nullable=True)
    via: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(60), index=True)
    resource: Mapped[str] = mapped_column(String(200), default="")
    resource_org_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    decision: Mapped[str] = mapped_column(String(10))
    rule: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    code: Mapped[str | None] = mapped_column(String(60), nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    grant_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    datasets: Mapped[str] = mapped_column(Text, default="")
    sql_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    result_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rows: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    client: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (UniqueConstraint("seq", name="uq_audit_events_seq"),)


class AuditLogTile(Base):
    """Stored hashes of the audit log's Merkle tree: tile (t, n) holds the nodes at level 4t, indices 16n …
    16n + 15, concatenated (the last tile of a level is partial); `id` = t << 56 | n (disclosure.tiles)."""

    __tablename__ = "audit_log_tiles"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hashes: Mapped[bytes] = mapped_column(LargeBinary)


class AuditLogState(Base):
    """The one row the sequencer locks: how many records the tree holds and its root."""

    __tablename__ = "audit_log_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditCheckpoint(Base):
    """A signed checkpoint (C2SP signed note) of the audit log, with why it was made."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    size: Mapped[int] = mapped_column(BigInteger, index=True)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    kid: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("timestamp", name="uq_audit_checkpoints_timestamp"),)


class Job(Base):
    """A query submitted under a grant; analysed once at submission, frozen at approval."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    operator_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    submitted_by: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(300))
    purpose: Mapped[str] = mapped_column(Text)
    sql: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(20))
    rejection_source: Mapped[str | None] = mapped_column(String(20), nullable=True)
    stopped_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    analysis: Mapped[dict[str, Any]] = mapped_column(JSON)
    dataset_versions: Mapped[dict[str, int]] = mapped_column(JSON)
    reviews_required: Mapped[int] = mapped_column(Integer)
    frozen_sql: Mapped[str | None] = mapped_column(Text, nullable=True)
    frozen_sql_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # the job this one corrects (same grant); a job is replaced at most once, so the history is a chain
    replaces: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True, index=True)

    # Every UPDATE of a job says `WHERE state = <the state it was read in>`: a concurrent change of state makes the
    # flush fail (StaleDataError, answered 409) instead of overwriting it, so a job changes state at most once.
    __mapper_args__ = {"version_id_col": state, "version_id_generator": False}  # noqa: RUF012


class JobReview(Base):
    __tablename__ = "job_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    reviewer_id: Mapped[str] = mapped_column(String(40))
    decision: Mapped[str] = mapped_column(String(10))
    comment: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("job_id", "reviewer_id", name="uq_job_reviews_job_reviewer"),)


class Run(Base):
    """One execution of an approved job, with what it read, what it returned and what it cost."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    operator_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    requested_by: Mapped[str] = mapped_column(String(40))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    frozen_sql_sha256: Mapped[str] = mapped_column(String(64))
    dataset_versions: Mapped[dict[str, int]] = mapped_column(JSON)
    rows_scanned: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_scanned: Mapped[int] = mapped_column(BigInteger, default=0)
    result_rows: Mapped[int] = mapped_column(BigInteger, default=0)
    result_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    suppressed_cells: Mapped[int] = mapped_column(BigInteger, default=0)
    suppression: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # reason -> cells
    truncated_rows: Mapped[int] = mapped_column(BigInteger, default=0)
    cpu_ms: Mapped[float] = mapped_column(default=0.0)
    wall_ms: Mapped[float] = mapped_column(default=0.0)
    error_code: Mapped[str | None] = mapped_column(String(60), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_path: Mapped[str | None] = mapped_column(String(500), nullable=True)
    result_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The `sluice serve` process executing the run (sandbox/server_lease.py): start-up recovery fails a `running`
    # run only when this instance is gone, so several servers can share one store. NULL: recovered at any start.
    server_instance: Mapped[str | None] = mapped_column(String(40), nullable=True)

    __table_args__ = (UniqueConstraint("job_id", "requested_by", "idempotency_key", name="uq_runs_idempotency"),)
    # As for jobs: ORM updates are conditional on the status read (the run path's Core UPDATE checks it too).
    __mapper_args__ = {"version_id_col": status, "version_id_generator": False}  # noqa: RUF012


class ReleaseThreshold(Base):
    """Append-only: a population's audit is judged at the largest k of any grant that released from it."""

    __tablename__ = "release_thresholds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    population: Mapped[str] = mapped_column(String(64), index=True)
    k: Mapped[int] = mapped_column(Integer)
    grant_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReleaseSet(Base):
    """One released entity set of a population (a serialized Roaring bitmap), stored once per population."""

    __tablename__ = "release_sets"

    population: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    entities: Mapped[int] = mapped_column(BigInteger)
    bitmap: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReleaseCell(Base):
    """The release ledger: a measure released over an entity set by a run (append-only, in release order)."""

    __tablename__ = "release_cells"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    population: Mapped[str] = mapped_column(String(64), index=True)
    measure: Mapped[str] = mapped_column(String(300))
    digest: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    grant_id: Mapped[str] = mapped_column(String(40))
    operator_org_id: Mapped[str] = mapped_column(String(40))
    k: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # the relationship only orders the inserts (a new set before the cell); never loaded. The run's row is already
    # durable: its start is recorded before it executes.
    entity_set: Mapped[ReleaseSet | None] = relationship(lazy="raise")

    __table_args__ = (ForeignKeyConstraint(["population", "digest"], ["release_sets.population", "release_sets.digest"],
                                           name="fk_release_cells_set"),)


# --- metering: usage, prices, bills (docs/metering.md) ----------------------------------------------------------


class Authored:
    """`created_at` and `created_by`, the last two columns of each price table (a mixin's columns come last)."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(40))


class UsageEventRow(Base):
    """One metered access, append-only. The id is derived from the access, so a replay can never count twice."""

    __tablename__ = "usage_events"

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    relation: Mapped[str] = mapped_column(String(10))
    event_time: Mapped[datetime] = mapped_column(UTCDateTime)
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    issuer_org_id: Mapped[str] = mapped_column(String(40))
    payer_org_id: Mapped[str] = mapped_column(String(40))
    operator_org_id: Mapped[str] = mapped_column(String(40), index=True)
    grant_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    purpose_class: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[str] = mapped_column(String(20))
    quantities: Mapped[dict[str, int]] = mapped_column(JSON)
    datasets: Mapped[list[list[Any]]] = mapped_column(JSON)
    product_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    entry_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    free_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source_id: Mapped[str] = mapped_column(String(160))
    reverses: Mapped[str | None] = mapped_column(String(160), nullable=True, unique=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    payload_sha256: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_usage_events_payer_issuer_time", "payer_org_id", "issuer_org_id", "event_time"),)


class PlatformFeeVersion(Authored, Base):
    """One version of the agency's platform fee schedule (price per billing unit of each platform meter)."""

    __tablename__ = "platform_fee_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    rates: Mapped[dict[str, str]] = mapped_column(JSON)
    vat_included: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")


class PriceCapVersion(Authored, Base):
    """One version of the agency's price caps (上限收费标准): the whole table, per basis, category and unit."""

    __tablename__ = "price_cap_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    caps: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    vat_included: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")


class ProductCategory(Authored, Base):
    """A product category the agency keeps (statistics report, query interface, model service, ...)."""

    __tablename__ = "product_categories"

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class RevenueCapRow(Authored, Base):
    """The agency's maximum allowed revenue (最高准许收入) for an operator and year; the latest row counts."""

    __tablename__ = "revenue_caps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operator_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    year: Mapped[int] = mapped_column(Integer)
    amount: Mapped[Decimal] = mapped_column(DecimalText)
    vat_included: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")


class PriceListEntry(Authored, Base):
    """An entry in an operator's price list; its prices are versions. A product may be attached later."""

    __tablename__ = "price_list_entries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    operator_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(ForeignKey("product_categories.code"))
    basis: Mapped[str] = mapped_column(String(20))
    unit: Mapped[str] = mapped_column(String(20))
    product_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class PriceListVersion(Authored, Base):
    """One price of a price-list entry, in force from `effective_from`; checked against the cap when set."""

    __tablename__ = "price_list_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("price_list_entries.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime)
    unit_price: Mapped[Decimal] = mapped_column(DecimalText)
    tiers: Mapped[list[dict[str, str | None]]] = mapped_column(JSON)
    package: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    vat_included: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (UniqueConstraint("entry_id", "version", name="uq_price_list_versions_entry_version"),)


class BillRow(Base):
    """A payer's bill from one issuer for one period: a draft until finalized, then immutable and hashed."""

    __tablename__ = "bills"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payer_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    issuer_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    relation: Mapped[str] = mapped_column(String(10))
    period: Mapped[str] = mapped_column(String(7), index=True)
    status: Mapped[str] = mapped_column(String(12))
    revision: Mapped[int] = mapped_column(Integer)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    total: Mapped[Decimal] = mapped_column(DecimalText)
    vat_included: Mapped[bool] = mapped_column(Boolean)
    vat_rate: Mapped[Decimal] = mapped_column(DecimalText)
    vat_amount: Mapped[Decimal] = mapped_column(DecimalText)
    event_count: Mapped[int] = mapped_column(Integer)
    content_sha256: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(40))
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finalized_by: Mapped[str | None] = mapped_column(String(40), nullable=True)

    __table_args__ = (UniqueConstraint("payer_org_id", "issuer_org_id", "period", name="uq_bills_payer_issuer_period"),)


class BillLineRow(Base):
    """One line of a bill (see metering.bills.BillLine)."""

    __tablename__ = "bill_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bill_id: Mapped[str] = mapped_column(ForeignKey("bills.id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(12))
    event_period: Mapped[str] = mapped_column(String(7))
    meter: Mapped[str] = mapped_column(String(20))
    unit: Mapped[str] = mapped_column(String(60))
    dataset_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    product_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    entry_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    segment: Mapped[str] = mapped_column(String(20))
    purpose_class: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[str] = mapped_column(String(20))
    quantity: Mapped[Decimal] = mapped_column(DecimalText)
    base_quantity: Mapped[int] = mapped_column(BigInteger)
    unit_price: Mapped[Decimal] = mapped_column(DecimalText)
    cap: Mapped[Decimal | None] = mapped_column(DecimalText, nullable=True)
    amount: Mapped[Decimal] = mapped_column(DecimalText)
    event_count: Mapped[int] = mapped_column(Integer)
    events_sha256: Mapped[str] = mapped_column(String(64))
    schedule: Mapped[str] = mapped_column(String(200))
    evidence: Mapped[str] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("bill_id", "line_no", name="uq_bill_lines_bill_line"),)


class BilledEvent(Base):
    """Which final bill an event is on; the primary key makes sure no event is ever billed twice."""

    __tablename__ = "billed_events"

    event_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    bill_id: Mapped[str] = mapped_column(ForeignKey("bills.id"), index=True)


class BillAttribution(Base):
    """A final bill line's amount attributed to a dataset and its provider (谁投入、谁贡献、谁收益)."""

    __tablename__ = "bill_attributions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bill_id: Mapped[str] = mapped_column(ForeignKey("bills.id"), index=True)
    line_no: Mapped[int] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(7), index=True)
    relation: Mapped[str] = mapped_column(String(10))
    dataset_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    provider_org_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    amount: Mapped[Decimal] = mapped_column(DecimalText)


class RevenueExcess(Base):
    """An operator's revenue above its maximum allowed revenue for a year, as recorded at a finalization."""

    __tablename__ = "revenue_excesses"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operator_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    year: Mapped[int] = mapped_column(Integer)
    revenue: Mapped[Decimal] = mapped_column(DecimalText)
    effective_max: Mapped[Decimal] = mapped_column(DecimalText)
    excess: Mapped[Decimal] = mapped_column(DecimalText)
    bill_id: Mapped[str] = mapped_column(ForeignKey("bills.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- disclosure reports (docs/disclosure.md) --------------------------------------------------------------------


class DisclosureRow(Base):
    """A published disclosure report: its canonical JSON exactly as signed, its cut-off and its signature."""

    __tablename__ = "disclosures"

    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    cut_off: Mapped[datetime] = mapped_column(UTCDateTime)
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)
    report: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_by: Mapped[str] = mapped_column(String(40))


class ConsoleSession(Base):
    """A console sign-in: the cookie holds the token, the store only its SHA-256; ends with its API key."""

    __tablename__ = "console_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), index=True)
    principal_id: Mapped[str] = mapped_column(String(40))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
# --- products and services (docs/products.md) -------------------------------------------------------------------


class Product(Base):
    """A data product or service an operator publishes, backed by one of its approved jobs (docs/products.md)."""

    __tablename__ = "products"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    operator_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"))
    entry_id: Mapped[str] = mapped_column(ForeignKey("price_list_entries.id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON)  # name -> {type, values | grid}
    status: Mapped[str] = mapped_column(String(20), index=True)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    listed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (UniqueConstraint("operator_org_id", "name", name="uq_products_operator_name"),)


class Subscription(Base):
    """A customer organization's subscription to a listed product; free once the agency approves it for
    public-interest use (`free_reason`)."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    customer_org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    operator_org_id: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[str] = mapped_column(String(20))
    public_interest_purpose: Mapped[str | None] = mapped_column(Text, nullable=True)
    free_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    free_approved_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    free_approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(40))
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ProductCall(Base):
    """One call of a product by a customer: authorized, audited and metered (`usage_events` id `call:<id>`).

    A call that ran has its run (`run_id`, the same governed path as jobs); a call refused before running has none.
    """

    __tablename__ = "product_calls"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    customer_org_id: Mapped[str] = mapped_column(String(40), index=True)
    operator_org_id: Mapped[str] = mapped_column(String(40), index=True)
    requested_by: Mapped[str] = mapped_column(String(40))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True)
    entry_id: Mapped[str] = mapped_column(String(40))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(60), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_rows: Mapped[int] = mapped_column(BigInteger, default=0)
    result_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    free_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    __table_args__ = (UniqueConstraint("product_id", "requested_by", "idempotency_key",
                                       name="uq_product_calls_idempotency"),)
