"""Enum-valued CLI options: a wrong value is a usage error (exit 2), and `--help` lists the allowed values."""

from __future__ import annotations

from enum import StrEnum

from sandbox.result_formats import ResultFormat as ResultFormat  # the API's own enum (imports no pyarrow)


class OrgKindOpt(StrEnum):
    AGENCY = "agency"
    PROVIDER = "provider"
    OPERATOR = "operator"
    CUSTOMER = "customer"
    REGULATOR = "regulator"


class JobStateOpt(StrEnum):
    """`sandbox.jobs.JobState`, repeated so the CLI starts without the SQL analyser (a test keeps them equal)."""

    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    STOPPED = "stopped"


class ReviewDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class ExportFormat(StrEnum):
    CSV = "csv"
    JSON = "json"
    PARQUET = "parquet"


class SigningContext(StrEnum):
    CERTIFICATE = "certificate"
    CHECKPOINT = "checkpoint"
    DISCLOSURE = "disclosure"


class BillStatus(StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"
