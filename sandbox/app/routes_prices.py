"""Government-guided pricing: the agency's platform fees, categories, caps and maximum allowed revenue, and the
operators' price lists. Reads are public (prices and caps are disclosed); every change is authorized and audited.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from metering.money import parse_price, text
from metering.schedules import Cap, Package, Tier
from sandbox.app.deps import SESSION, AppState, Guard, app_state, public, require
from sandbox.app.schemas import StrictModel
from sandbox.audit import AuditDraft
from sandbox.billing import prices
from sandbox.billing.prices import domain_errors
from sandbox.clock import as_utc
from sandbox.errors import NotFound
from sandbox.store.models import PlatformFeeVersion, PriceCapVersion, PriceListEntry, ProductCategory

router = APIRouter(prefix="/v1", tags=["prices"])


class CategoryIn(StrictModel):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]{1,39}$", description="e.g. statistics_report")
    name: str = Field(min_length=1, max_length=200, description="e.g. 统计报告 statistics report")


class PlatformIn(StrictModel):
    rates: dict[str, str] = Field(description="meter -> CNY per billing unit, as decimal strings; missing = 0")
    effective_from: datetime | None = Field(None, description="default: now; never in the past")
    note: str = ""


class CapIn(StrictModel):
    basis: str = Field(description="per_call, per_period or per_volume")
    category: str
    unit: str = Field(description="call; month or year; 10k_rows or GB")
    price: str


class CapsIn(StrictModel):
    caps: list[CapIn] = Field(description="the complete cap table of this version")
    effective_from: datetime | None = None
    note: str = ""


class RevenueCapIn(StrictModel):
    operator_org_id: str
    year: int
    amount: str = Field(description="maximum allowed revenue (最高准许收入) for the year, CNY")
    note: str = ""


class TierIn(StrictModel):
    up_to: str | None = Field(description="cumulative billing units per payer and period; null for the last tier")
    unit_price: str


class PackageIn(StrictModel):
    quantity: str = Field(description="prepaid billing units")
    price: str = Field(description="price of the package, CNY")


class PriceIn(StrictModel):
    unit_price: str
    tiers: list[TierIn] = Field(default_factory=list)
    package: PackageIn | None = None
    effective_from: datetime | None = None
    note: str = ""


class EntryIn(PriceIn):
    name: str = Field(min_length=1, max_length=200)
    category: str
    basis: str
    unit: str
    operator_org_id: str | None = Field(None, description="default: the caller's organization")


def _money(value: Any, field: str) -> Any:
    with domain_errors():
        return parse_price(value, field=field)


def _tiers(body: PriceIn) -> tuple[list[Tier], Package | None]:
    tiers = [Tier(None if t.up_to is None else _money(t.up_to, f"tiers[{i}].up_to"),
                  _money(t.unit_price, f"tiers[{i}].unit_price")) for i, t in enumerate(body.tiers)]
    package = (Package(_money(body.package.quantity, "package.quantity"), _money(body.package.price, "package.price"))
               if body.package else None)
    return tiers, package


def _platform_out(r: PlatformFeeVersion) -> dict[str, Any]:
    return {"version": r.version, "effective_from": as_utc(r.effective_from).isoformat(), "rates": r.rates,
            "vat_included": r.vat_included, "note": r.note, "created_at": r.created_at.isoformat()}


def _caps_out(r: PriceCapVersion) -> dict[str, Any]:
    return {"version": r.version, "effective_from": as_utc(r.effective_from).isoformat(), "caps": r.caps,
            "vat_included": r.vat_included, "note": r.note, "created_at": r.created_at.isoformat()}


@router.get("/prices")
def price_overview(audit: AuditDraft = public("prices:read"), session: Session = SESSION,
                   state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Public: the VAT convention, categories, and the platform fees and caps in force now and scheduled."""
    now = state.clock.now()
    platform, caps = prices.platform_timeline(session), prices.caps_timeline(session)
    return {"currency": "CNY", "vat": state.metering.vat.label(), "vat_included": state.metering.vat.included,
            "categories": _categories(session),
            "platform_in_force": getattr(platform.at(now), "version", None),
            "caps_in_force": getattr(caps.at(now), "version", None),
            "platform": [_platform_out(r) for r in session.scalars(select(PlatformFeeVersion)
                                                                  .order_by(PlatformFeeVersion.version))],
            "caps": [_caps_out(r) for r in session.scalars(select(PriceCapVersion).order_by(PriceCapVersion.version))]}


def _categories(session: Session) -> list[dict[str, str]]:
    return [{"code": c.code, "name": c.name} for c in session.scalars(select(ProductCategory)
                                                                       .order_by(ProductCategory.code))]


@router.get("/prices/categories")
def list_categories(audit: AuditDraft = public("prices:read"), session: Session = SESSION
                    ) -> list[dict[str, str]]:
    """Public: the product categories the agency keeps."""
    return _categories(session)


def _agency(guard: Guard, session: Session, state: AppState, what: str) -> str:
    platform = state.metering.platform_org_id(session)
    guard.check(platform, f"prices/{what}")
    return platform


@router.post("/prices/categories", status_code=201)
def add_category(body: CategoryIn, guard: Guard = require("price", "change"),
                 session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, str]:
    """Add a product category (the agency)."""
    _agency(guard, session, state, "categories")
    row = prices.add_category(session, code=body.code, name=body.name, now=state.clock.now(),
                              actor=guard.caller.principal_id)
    guard.note(category=row.code, name=row.name)
    return {"code": row.code, "name": row.name}


@router.get("/prices/platform")
def platform_versions(audit: AuditDraft = public("prices:read"), session: Session = SESSION
                      ) -> list[dict[str, Any]]:
    """Public: every version of the platform fee schedule."""
    return [_platform_out(r) for r in session.scalars(select(PlatformFeeVersion).order_by(PlatformFeeVersion.version))]


@router.post("/prices/platform", status_code=201)
def set_platform(body: PlatformIn, guard: Guard = require("price", "change"),
                 session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """A new version of the platform fee schedule (the agency; it may be all zero)."""
    _agency(guard, session, state, "platform")
    rates = {k: _money(v, f"rates.{k}") for k, v in body.rates.items()}
    row = prices.set_platform(session, rates=rates, effective_from=body.effective_from, note=body.note,
                              vat=state.metering.vat, now=state.clock.now(), actor=guard.caller.principal_id)
    guard.note(schedule="platform", version=row.version, effective_from=row.effective_from.isoformat(),
               rates=row.rates, vat_included=row.vat_included)
    return _platform_out(row)


@router.get("/prices/caps")
def cap_versions(audit: AuditDraft = public("prices:read"), session: Session = SESSION
                 ) -> list[dict[str, Any]]:
    """Public: every version of the price caps (上限收费标准)."""
    return [_caps_out(r) for r in session.scalars(select(PriceCapVersion).order_by(PriceCapVersion.version))]


@router.post("/prices/caps", status_code=201)
def set_caps(body: CapsIn, guard: Guard = require("price", "change"),
             session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """A new version of the price caps (the agency); listed prices above a lowered cap are suspended."""
    _agency(guard, session, state, "caps")
    caps = [Cap(c.basis, c.category, c.unit, _money(c.price, f"caps[{i}].price")) for i, c in enumerate(body.caps)]
    row, suspended = prices.set_caps(session, caps=caps, effective_from=body.effective_from, note=body.note,
                                     vat=state.metering.vat, now=state.clock.now(), actor=guard.caller.principal_id)
    guard.note(schedule="caps", version=row.version, effective_from=row.effective_from.isoformat(), caps=row.caps,
               suspended=[s["entry_id"] for s in suspended])
    return {**_caps_out(row), "suspended": suspended}


@router.post("/prices/revenue-caps", status_code=201)
def set_revenue_cap(body: RevenueCapIn, guard: Guard = require("price", "change"),
                    session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Set an operator's maximum allowed revenue (最高准许收入) for a year (the agency)."""
    _agency(guard, session, state, "revenue-caps")
    row = prices.set_revenue_cap(session, operator_org_id=body.operator_org_id, year=body.year,
                                 amount=_money(body.amount, "amount"), note=body.note, vat=state.metering.vat,
                                 now=state.clock.now(), actor=guard.caller.principal_id)
    guard.note(operator_org_id=row.operator_org_id, year=row.year, amount=text(row.amount))
    return {"operator_org_id": row.operator_org_id, "year": row.year, "amount": text(row.amount),
            "vat_included": row.vat_included, "note": row.note}


@router.get("/pricelist")
def list_entries(operator_org_id: str | None = Query(None), audit: AuditDraft = public("pricelist:read"),
                 session: Session = SESSION, state: AppState = Depends(app_state)
                 ) -> list[dict[str, Any]]:
    """Public: operators' price lists with each entry's status under the caps in force."""
    q = select(PriceListEntry).order_by(PriceListEntry.operator_org_id, PriceListEntry.created_at, PriceListEntry.id)
    if operator_org_id:
        q = q.where(PriceListEntry.operator_org_id == operator_org_id)
    now = state.clock.now()
    return [prices.entry_out(session, e, now) for e in session.scalars(q)]


@router.get("/pricelist/{entry_id}")
def get_entry(entry_id: str, audit: AuditDraft = public("pricelist:read"),
              session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Public: one price-list entry with its versions and status."""
    audit.resource = f"price_entry/{entry_id}"
    entry = session.get(PriceListEntry, entry_id)
    if entry is None:
        raise NotFound(f"price-list entry {entry_id} does not exist", code="price_entry_not_found")
    return prices.entry_out(session, entry, state.clock.now())


@router.post("/pricelist", status_code=201)
def create_entry(body: EntryIn, guard: Guard = require("pricelist", "change"),
                 session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Publish an entry in the operator's price list; a price above its cap is refused with the cap."""
    operator = body.operator_org_id or guard.caller.org_id
    guard.check(operator, f"pricelist/{operator}")
    tiers, package = _tiers(body)
    entry = prices.create_entry(session, operator_org_id=operator, name=body.name, category=body.category,
                                basis=body.basis, unit=body.unit, unit_price=_money(body.unit_price, "unit_price"),
                                tiers=tiers, package=package, effective_from=body.effective_from, note=body.note,
                                vat=state.metering.vat, now=state.clock.now(), actor=guard.caller.principal_id)
    out = prices.entry_out(session, entry, state.clock.now())
    guard.note(entry_id=entry.id, category=entry.category, basis=entry.basis, unit=entry.unit,
               price=out["versions"][-1])
    return out


@router.post("/pricelist/{entry_id}/versions", status_code=201)
def reprice(entry_id: str, body: PriceIn, guard: Guard = require("pricelist", "change"),
            session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Reprice an entry (a new version); refused above the cap in force when it takes effect."""
    entry = guard.owned(session, PriceListEntry, entry_id, owner=lambda e: e.operator_org_id, kind="price_entry")
    tiers, package = _tiers(body)
    row = prices.add_version(session, entry, unit_price=_money(body.unit_price, "unit_price"), tiers=tiers,
                             package=package, effective_from=body.effective_from, note=body.note,
                             vat=state.metering.vat, now=state.clock.now(), actor=guard.caller.principal_id)
    guard.note(entry_id=entry.id, version=row.version, unit_price=text(row.unit_price))
    return prices.entry_out(session, entry, state.clock.now())
