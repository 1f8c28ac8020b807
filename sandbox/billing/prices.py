"""Price schedules in the store: the agency's platform fees, categories, caps and maximum allowed revenue, and the
operators' price lists. Every schedule is versioned, moves forward in time, and states whether it includes VAT.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metering.errors import BillConflict, MeteringError, PriceRefused, UsageConflict
from metering.money import Vat, text
from metering.rating import Pricing
from metering.schedules import (
    Cap,
    CapSchedule,
    EntryStatus,
    Package,
    PlatformSchedule,
    PriceEntry,
    Tier,
    Timeline,
    check_against_cap,
    entry_status,
    validate_caps,
    validate_entry,
    validate_platform,
)
from sandbox.billing.convert import cap_schedule, platform_schedule, price_entry
from sandbox.clock import as_utc
from sandbox.errors import Conflict, InvalidInput, NotFound, Refused, SluiceError
from sandbox.store.models import (
    Organization,
    PlatformFeeVersion,
    PriceCapVersion,
    PriceListEntry,
    PriceListVersion,
    ProductCategory,
    RevenueCapRow,
)
from sandbox.store.types import new_id


@contextmanager
def domain_errors() -> Iterator[None]:
    """Re-raise metering's errors as the sandbox errors the app maps to HTTP (codes and context kept)."""
    try:
        yield
    except MeteringError as exc:
        cls: type[SluiceError] = (Refused if isinstance(exc, PriceRefused) else
                                  Conflict if isinstance(exc, UsageConflict | BillConflict) else InvalidInput)
        raise cls(exc.message, code=exc.code, **exc.context) from None


def _starts_forward(effective_from: datetime | None, latest: datetime | None, now: datetime, what: str) -> datetime:
    """Schedules move forward: a new version starts now or later, and not before the latest one."""
    start = as_utc(effective_from) if effective_from else now
    if start < now:
        raise InvalidInput(f"{what} cannot take effect in the past ({start.isoformat()}); corrections are new "
                           "versions from now on", code="retroactive_schedule")
    if latest is not None and start < as_utc(latest):
        raise InvalidInput(f"{what} must take effect at or after the latest version ({as_utc(latest).isoformat()})",
                           code="schedule_out_of_order")
    return start


# --- reading ---------------------------------------------------------------------------------------------------

def platform_timeline(session: Session) -> Timeline[PlatformSchedule]:
    return Timeline(platform_schedule(r) for r in session.scalars(select(PlatformFeeVersion)))


def caps_timeline(session: Session) -> Timeline[CapSchedule]:
    return Timeline(cap_schedule(r) for r in session.scalars(select(PriceCapVersion)))


def entry_versions(session: Session, entry: PriceListEntry) -> list[PriceEntry]:
    rows = session.scalars(select(PriceListVersion).where(PriceListVersion.entry_id == entry.id)
                           .order_by(PriceListVersion.version))
    return [price_entry(entry, v) for v in rows]


def pricing_for(session: Session, issuer_org_id: str, tz: Any) -> Pricing:
    """Every schedule that rates an issuer's bills: platform fees and caps, and the issuer's price list."""
    entries = {}
    for e in session.scalars(select(PriceListEntry).where(PriceListEntry.operator_org_id == issuer_org_id)):
        entries[e.id] = Timeline(entry_versions(session, e))
    return Pricing(platform_timeline(session), caps_timeline(session), entries, tz)


def category_codes(session: Session) -> list[str]:
    return list(session.scalars(select(ProductCategory.code).order_by(ProductCategory.code)))


def price_in_force(session: Session, entry_id: str, at: datetime) -> tuple[PriceEntry | None, EntryStatus]:
    """The entry's price at `at` and whether it may be charged (`suspended` once a lowered cap is below it).

    The products issue refuses calls unless the status is `active` (code `price_suspended`).
    """
    entry = session.get(PriceListEntry, entry_id)
    if entry is None:
        raise NotFound(f"price-list entry {entry_id} does not exist", code="price_entry_not_found")
    current = Timeline(entry_versions(session, entry)).at(at)
    return current, entry_status(current, caps_timeline(session).at(at))


def require_active_price(session: Session, entry_id: str, at: datetime) -> PriceEntry:
    """The price in force, or a refusal naming the cap when it is suspended."""
    current, status = price_in_force(session, entry_id, at)
    if status.status != "active" or current is None:
        raise Refused(status.reason, code="price_suspended", entry_id=entry_id,
                      cap=None if status.cap is None else text(status.cap))
    return current


# --- agency schedules ------------------------------------------------------------------------------------------

def add_category(session: Session, *, code: str, name: str, now: datetime, actor: str) -> ProductCategory:
    """Add a product category to the agency's list."""
    if session.get(ProductCategory, code) is not None:
        raise Conflict(f"category {code} exists", code="category_exists")
    row = ProductCategory(code=code, name=name, created_at=now, created_by=actor)
    session.add(row)
    session.flush()
    return row


def set_platform(session: Session, *, rates: dict[str, Decimal], effective_from: datetime | None, note: str,
                 vat: Vat, now: datetime, actor: str) -> PlatformFeeVersion:
    """A new version of the platform fee schedule (it may be all zero)."""
    latest = session.scalar(select(PlatformFeeVersion).order_by(PlatformFeeVersion.version.desc()).limit(1))
    start = _starts_forward(effective_from, latest.effective_from if latest else None, now, "platform fees")
    version = (latest.version if latest else 0) + 1
    with domain_errors():
        validate_platform(PlatformSchedule(version, start, rates, vat.included))
    row = PlatformFeeVersion(version=version, effective_from=start, rates={k: text(v) for k, v in rates.items()},
                             vat_included=vat.included, note=note, created_at=now, created_by=actor)
    session.add(row)
    session.flush()
    return row


def set_caps(session: Session, *, caps: Sequence[Cap], effective_from: datetime | None, note: str, vat: Vat,
             now: datetime, actor: str) -> tuple[PriceCapVersion, list[dict[str, Any]]]:
    """A new version of the price caps; returns the listed prices it suspends (above a lowered cap)."""
    latest = session.scalar(select(PriceCapVersion).order_by(PriceCapVersion.version.desc()).limit(1))
    start = _starts_forward(effective_from, latest.effective_from if latest else None, now, "price caps")
    version = (latest.version if latest else 0) + 1
    schedule = CapSchedule(version, start, tuple(caps), vat.included)
    with domain_errors():
        validate_caps(schedule, category_codes(session))
    row = PriceCapVersion(version=version, effective_from=start,
                          caps=[{"basis": c.basis, "category": c.category, "unit": c.unit, "price": text(c.price)}
                                for c in caps], vat_included=vat.included, note=note, created_at=now,
                          created_by=actor)
    session.add(row)
    session.flush()
    suspended = []
    for entry in session.scalars(select(PriceListEntry).order_by(PriceListEntry.id)):
        current = Timeline(entry_versions(session, entry)).at(start)
        status = entry_status(current, schedule)
        if current is not None and status.status == "suspended":
            suspended.append({"entry_id": entry.id, "operator_org_id": entry.operator_org_id,
                              "product_id": entry.product_id, "reason": status.reason})
    return row, suspended


def set_revenue_cap(session: Session, *, operator_org_id: str, year: int, amount: Decimal, note: str, vat: Vat,
                    now: datetime, actor: str) -> RevenueCapRow:
    """Set (or correct, by a newer row) an operator's maximum allowed revenue for a year."""
    org = session.get(Organization, operator_org_id)
    if org is None or org.kind != "operator":
        raise InvalidInput(f"{operator_org_id} is not an operator organization", code="not_an_operator")
    if not 2000 <= year <= 2200:
        raise InvalidInput(f"year {year} is out of range", code="invalid_year")
    row = RevenueCapRow(operator_org_id=operator_org_id, year=year, amount=amount, vat_included=vat.included,
                        note=note, created_at=now, created_by=actor)
    session.add(row)
    session.flush()
    return row


def revenue_caps(session: Session, operator_org_id: str) -> dict[int, Decimal]:
    """The latest maximum allowed revenue per year for an operator."""
    out: dict[int, Decimal] = {}
    for r in session.scalars(select(RevenueCapRow).where(RevenueCapRow.operator_org_id == operator_org_id)
                             .order_by(RevenueCapRow.id)):
        out[r.year] = r.amount
    return out


# --- operator price lists --------------------------------------------------------------------------------------

def _priced(entry: PriceListEntry, *, version: int, start: datetime, unit_price: Decimal,
            tiers: Sequence[Tier], package: Package | None, vat: Vat) -> PriceEntry:
    return PriceEntry(entry_id=entry.id, operator_org_id=entry.operator_org_id, category=entry.category,
                      basis=entry.basis, unit=entry.unit, version=version, effective_from=start,
                      unit_price=unit_price, vat_included=vat.included, tiers=tuple(tiers), package=package,
                      product_id=entry.product_id)


def add_version(session: Session, entry: PriceListEntry, *, unit_price: Decimal, tiers: Sequence[Tier],
                package: Package | None, effective_from: datetime | None, note: str, vat: Vat, now: datetime,
                actor: str) -> PriceListVersion:
    """Price (or reprice) an entry; refused above the cap in force when it takes effect."""
    latest = session.scalar(select(PriceListVersion).where(PriceListVersion.entry_id == entry.id)
                            .order_by(PriceListVersion.version.desc()).limit(1))
    start = _starts_forward(effective_from, latest.effective_from if latest else None, now, "a price")
    version = (latest.version if latest else 0) + 1
    priced = _priced(entry, version=version, start=start, unit_price=unit_price, tiers=tiers, package=package,
                     vat=vat)
    with domain_errors():
        validate_entry(priced, category_codes(session))
        check_against_cap(priced, caps_timeline(session).at(start))
    row = PriceListVersion(
        entry_id=entry.id, version=version, effective_from=start, unit_price=unit_price,
        tiers=[{"up_to": None if t.up_to is None else text(t.up_to), "unit_price": text(t.unit_price)}
               for t in tiers],
        package=None if package is None else {"quantity": text(package.quantity), "price": text(package.price)},
        vat_included=vat.included, note=note, created_at=now, created_by=actor)
    session.add(row)
    session.flush()
    return row


def create_entry(session: Session, *, operator_org_id: str, name: str, category: str, basis: str, unit: str,
                 unit_price: Decimal, tiers: Sequence[Tier], package: Package | None, effective_from: datetime | None,
                 note: str, vat: Vat, now: datetime, actor: str) -> PriceListEntry:
    """A new entry in an operator's price list, with its first price (checked against the cap)."""
    if category not in category_codes(session):
        raise InvalidInput(f"unknown product category {category!r}; see GET /v1/prices/categories",
                           code="unknown_category", category=category)
    entry = PriceListEntry(id=new_id("pe"), operator_org_id=operator_org_id, name=name, category=category,
                           basis=basis, unit=unit, product_id=None, created_at=now, created_by=actor)
    session.add(entry)
    session.flush()
    add_version(session, entry, unit_price=unit_price, tiers=tiers, package=package, effective_from=effective_from,
                note=note, vat=vat, now=now, actor=actor)
    return entry


def entry_out(session: Session, entry: PriceListEntry, now: datetime) -> dict[str, Any]:
    """An entry with its versions, the price in force and its status under the caps in force."""
    versions = entry_versions(session, entry)
    current = Timeline(versions).at(now)
    status = entry_status(current, caps_timeline(session).at(now))
    return {
        "id": entry.id, "operator_org_id": entry.operator_org_id, "name": entry.name, "category": entry.category,
        "basis": entry.basis, "unit": entry.unit, "product_id": entry.product_id, "status": status.status,
        "status_reason": status.reason, "cap": None if status.cap is None else text(status.cap),
        "current_version": current.version if current else None,
        "versions": [_version_out(v) for v in versions], "created_at": entry.created_at.isoformat(),
    }


def _version_out(v: PriceEntry) -> dict[str, Any]:
    return {"version": v.version, "effective_from": v.effective_from.isoformat(), "unit_price": text(v.unit_price),
            "tiers": [{"up_to": None if t.up_to is None else text(t.up_to), "unit_price": text(t.unit_price)}
                      for t in v.tiers],
            "package": None if v.package is None else {"quantity": text(v.package.quantity),
                                                       "price": text(v.package.price),
                                                       "unit_price": text(v.package.unit_price)},
            "vat_included": v.vat_included}

