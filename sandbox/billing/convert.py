"""Between store rows and metering's domain records (events, schedules, bill lines)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import insert

from metering.bills import BillLine
from metering.events import DatasetUse, UsageEvent, payload_digest
from metering.schedules import Cap, CapSchedule, Package, PlatformSchedule, PriceEntry, Tier
from sandbox.clock import as_utc
from sandbox.recorder import Execute, Prepared
from sandbox.store.models import (
    BillLineRow,
    PlatformFeeVersion,
    PriceCapVersion,
    PriceListEntry,
    PriceListVersion,
    UsageEventRow,
)

# Column order of `event_columns()`, for loading many events without ORM objects.
EVENT_COLUMNS = ("id", "kind", "relation", "event_time", "ingested_at", "issuer_org_id", "payer_org_id",
                 "operator_org_id", "purpose_class", "outcome", "quantities", "grant_id", "datasets", "product_id",
                 "entry_id", "free_reason", "trace_id", "source_id", "reverses", "reason")


def event_values(e: UsageEvent) -> dict[str, Any]:
    """An event's column values, with the digest replays are compared on."""
    return dict(
        id=e.id, kind=e.kind, relation=e.relation, event_time=e.event_time, ingested_at=e.ingested_at,
        issuer_org_id=e.issuer_org_id, payer_org_id=e.payer_org_id, operator_org_id=e.operator_org_id,
        grant_id=e.grant_id, purpose_class=e.purpose_class, outcome=e.outcome, quantities=dict(e.quantities),
        datasets=[[d.dataset_id, d.rows, d.bytes] for d in e.datasets], product_id=e.product_id,
        entry_id=e.entry_id, free_reason=e.free_reason, trace_id=e.trace_id, source_id=e.source_id,
        reverses=e.reverses, reason=e.reason, payload_sha256=payload_digest(e))


def event_row(e: UsageEvent) -> UsageEventRow:
    """The store row of an event."""
    return UsageEventRow(**event_values(e))


_EVENT_INSERT = Prepared(insert(UsageEventRow.__table__))  # type: ignore[arg-type]


def event_insert(e: UsageEvent) -> Execute:
    """An INSERT of an event for the group-commit recorder (cheaper than an ORM object on the run path), grouped
    with the batch's other events into one multi-row INSERT."""
    return Execute(_EVENT_INSERT, event_values(e), grouped=True)


def event_columns() -> list[Any]:
    """The usage_events columns in EVENT_COLUMNS order."""
    return [getattr(UsageEventRow, c) for c in EVENT_COLUMNS]


def event_from_values(v: Sequence[Any]) -> UsageEvent:
    """An event from a row of `event_columns()` (or a UsageEventRow's values in that order)."""
    (eid, kind, relation, event_time, ingested_at, issuer, payer, operator, purpose, outcome, qs, grant, ds,
     product, entry, free_reason, trace_id, source_id, reverses, reason) = v
    return UsageEvent(
        id=eid, kind=kind, relation=relation, event_time=as_utc(event_time), ingested_at=as_utc(ingested_at),
        issuer_org_id=issuer, payer_org_id=payer, operator_org_id=operator, purpose_class=purpose, outcome=outcome,
        quantities=tuple(sorted((k, int(q)) for k, q in qs.items())), grant_id=grant,
        datasets=tuple(DatasetUse(d[0], int(d[1]), int(d[2])) for d in ds), product_id=product, entry_id=entry,
        free_reason=free_reason, trace_id=trace_id, source_id=source_id, reverses=reverses, reason=reason)


def event_from_row(row: UsageEventRow) -> UsageEvent:
    return event_from_values([getattr(row, c) for c in EVENT_COLUMNS])


def platform_schedule(row: PlatformFeeVersion) -> PlatformSchedule:
    return PlatformSchedule(row.version, as_utc(row.effective_from), {k: Decimal(v) for k, v in row.rates.items()},
                            row.vat_included)


def cap_schedule(row: PriceCapVersion) -> CapSchedule:
    return CapSchedule(row.version, as_utc(row.effective_from),
                       tuple(Cap(c["basis"], c["category"], c["unit"], Decimal(c["price"])) for c in row.caps),
                       row.vat_included)


def price_entry(entry: PriceListEntry, version: PriceListVersion) -> PriceEntry:
    tiers = tuple(Tier(None if t["up_to"] is None else Decimal(t["up_to"]), Decimal(str(t["unit_price"])))
                  for t in version.tiers)
    package = (Package(Decimal(version.package["quantity"]), Decimal(version.package["price"]))
               if version.package else None)
    return PriceEntry(entry_id=entry.id, operator_org_id=entry.operator_org_id, category=entry.category,
                      basis=entry.basis, unit=entry.unit, version=version.version,
                      effective_from=as_utc(version.effective_from), unit_price=version.unit_price,
                      vat_included=version.vat_included, tiers=tiers, package=package, product_id=entry.product_id)


def line_row(bill_id: str, line: BillLine) -> BillLineRow:
    return BillLineRow(
        bill_id=bill_id, line_no=line.line_no, kind=line.kind, event_period=line.event_period, meter=line.meter,
        unit=line.unit, dataset_id=line.dataset_id, product_id=line.product_id, entry_id=line.entry_id,
        segment=line.segment, purpose_class=line.purpose_class, outcome=line.outcome, quantity=line.quantity,
        base_quantity=line.base_quantity, unit_price=line.unit_price, cap=line.cap, amount=line.amount,
        event_count=line.event_count, events_sha256=line.events_sha256, schedule=line.schedule,
        evidence=line.evidence)


def line_from_row(r: BillLineRow) -> BillLine:
    return BillLine(
        line_no=r.line_no, kind=r.kind, event_period=r.event_period, meter=r.meter, unit=r.unit,
        dataset_id=r.dataset_id, product_id=r.product_id, entry_id=r.entry_id, segment=r.segment,
        purpose_class=r.purpose_class, outcome=r.outcome, quantity=r.quantity, base_quantity=r.base_quantity,
        unit_price=r.unit_price, cap=r.cap, amount=r.amount, event_count=r.event_count,
        events_sha256=r.events_sha256, schedule=r.schedule, evidence=r.evidence)
