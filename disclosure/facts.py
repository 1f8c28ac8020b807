"""The facts a disclosure report is built from: plain values, gathered by the caller (the sandbox reads them from
the control store; tests build them by hand). The report builder reads nothing else.

Products and services enter as `CatalogueItem`s: an operator's price-list entries and, where the products
issue has attached one, the product each entry prices. That is the report's one interface to the catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from disclosure.periods import ReportPeriod
from metering.events import UsageEvent


@dataclass(frozen=True)
class OrgFact:
    """An organization as entered (names are never translated)."""

    id: str
    name: str
    kind: str


@dataclass(frozen=True)
class GrantFact:
    """A grant as it stands at the cut-off."""

    id: str
    operator_org_id: str
    scope: str
    domains: tuple[str, ...]
    datasets: tuple[str, ...]
    scenario: dict[str, str] | None
    purpose_class: str
    valid_from: datetime
    valid_until: datetime
    status: str
    created_at: datetime


@dataclass(frozen=True)
class GrantChange:
    """One state change of a grant (grant_events): issue, suspend, resume, revoke, ..."""

    grant_id: str
    at: datetime
    action: str
    from_status: str | None
    to_status: str
    reason: str


@dataclass(frozen=True)
class DatasetFact:
    """A dataset's latest certified version at the cut-off, with its certificate."""

    id: str
    provider_org_id: str
    title: str
    domain: str
    grade: str
    version: int
    certificate_code: str | None
    certificate_revoked: bool


@dataclass(frozen=True)
class CatalogueItem:
    """A product or service an operator offers, with the price in force at the cut-off (None: no price yet)."""

    operator_org_id: str
    id: str
    name: str
    category: str
    basis: str
    unit: str
    unit_price: Decimal | None
    vat_included: bool
    product_id: str | None = None
    product_name: str | None = None


@dataclass(frozen=True)
class PriceCapFact:
    """One version of the agency's price caps in force during the period."""

    version: int
    effective_from: datetime
    vat_included: bool
    caps: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class RevenueCapFact:
    """An operator's maximum allowed revenue for a year (the latest one set)."""

    operator_org_id: str
    year: int
    amount: Decimal
    vat_included: bool


@dataclass(frozen=True)
class BillLineFact:
    """A line of a final bill: who issued it, for which month, what it priced, and its amount."""

    bill_id: str
    issuer_org_id: str
    payer_org_id: str
    relation: str
    period: str
    entry_id: str | None
    product_id: str | None
    dataset_id: str | None
    amount: Decimal


@dataclass(frozen=True)
class AttributionFact:
    """A final bill line's amount attributed to a dataset and its provider."""

    period: str
    relation: str
    dataset_id: str | None
    provider_org_id: str | None
    amount: Decimal


@dataclass(frozen=True)
class CheckpointFact:
    """The signed audit checkpoint the report cites: every record it counts is in this tree."""

    origin: str
    tree_size: int
    root_hash: str
    timestamp: datetime
    kid: str
    note: str


@dataclass(frozen=True)
class LogVerification:
    """The result of verifying the audit log up to the cited checkpoint."""

    records_checked: int
    root_matches: bool
    signature_valid: bool
    sequence_gapless: bool

    @property
    def verified(self) -> bool:
        return self.root_matches and self.signature_valid and self.sequence_gapless


@dataclass(frozen=True)
class Facts:
    """Everything one report needs. `audit` holds the log's records (leaf records) counted by the report:
    sequence numbers below the checkpoint's size and times before the cut-off."""

    period: ReportPeriod
    time_zone: str
    period_start: datetime
    period_end: datetime
    cut_off: datetime
    draft: bool
    orgs: tuple[OrgFact, ...]
    grants: tuple[GrantFact, ...]
    grant_changes: tuple[GrantChange, ...]
    datasets: tuple[DatasetFact, ...]
    catalogue: tuple[CatalogueItem, ...]
    price_caps: tuple[PriceCapFact, ...]
    revenue_caps: tuple[RevenueCapFact, ...]
    events: tuple[UsageEvent, ...]
    late_events: tuple[UsageEvent, ...]
    audit: tuple[dict[str, Any], ...]
    checkpoint: CheckpointFact
    verification: LogVerification
    bill_lines: tuple[BillLineFact, ...] = ()
    year_revenue: dict[str, dict[int, Decimal]] = field(default_factory=dict)
    attributions: tuple[AttributionFact, ...] = ()
