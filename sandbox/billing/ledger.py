"""Bills in the store: drafts built from unbilled events, finalization (immutable, hashed, every event billed once),
reconciliation, revenue attribution per provider and dataset, and the maximum-allowed-revenue check.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import String, delete, insert, select, type_coerce
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from metering.attribution import attribute
from metering.bills import Bill, build_bill, seal
from metering.events import UsageEvent
from metering.exports import IssuedBill
from metering.meters import Relation
from metering.money import ZERO, Vat, fen_text, text
from metering.periods import Period, PeriodIndex
from metering.rating import Pricing, Prior
from metering.reconcile import Difference, reconcile_lines
from metering.revenue import RevenuePosition, positions
from sandbox.billing.convert import event_columns, event_from_values, line_from_row, line_row
from sandbox.billing.prices import domain_errors, pricing_for, revenue_caps
from sandbox.errors import Conflict, InvalidInput, NotFound
from sandbox.store.models import (
    BillAttribution,
    BilledEvent,
    BillLineRow,
    BillRow,
    Dataset,
    Organization,
    RevenueExcess,
    UsageEventRow,
)
from sandbox.store.types import new_id

DRAFT, FINALIZED = "draft", "finalized"


def relation_for(session: Session, payer_org_id: str, issuer_org_id: str, platform_org_id: str) -> Relation:
    """Platform fees when the agency bills an operator; product fees when an operator bills a customer."""
    payer, issuer = session.get(Organization, payer_org_id), session.get(Organization, issuer_org_id)
    if payer is None or issuer is None:
        raise NotFound("payer or issuer organization does not exist", code="org_not_found")
    if issuer.id == platform_org_id and payer.kind == "operator":
        return Relation.PLATFORM
    if issuer.kind == "operator" and payer.kind == "customer":
        return Relation.PRODUCT
    raise InvalidInput(f"{issuer.name} does not bill {payer.name}: the agency bills operators (platform fees) and "
                       "operators bill customers (product fees)", code="no_fee_relation")


def _finalized_periods(session: Session, payer: str, issuer: str) -> set[str]:
    return set(session.scalars(select(BillRow.period).where(BillRow.payer_org_id == payer,
                                                            BillRow.issuer_org_id == issuer,
                                                            BillRow.status == FINALIZED)))


def unbilled_events(session: Session, payer: str, issuer: str, period: Period, as_of: datetime, tz: tzinfo
                    ) -> list[UsageEvent]:
    """Events for this bill: the period's unbilled events ingested by `as_of`, plus earlier ones that arrived
    after their own period's bill was finalized (they become adjustment lines)."""
    q = (select(*event_columns()).outerjoin(BilledEvent, BilledEvent.event_id == UsageEventRow.id)
         .where(UsageEventRow.payer_org_id == payer, UsageEventRow.issuer_org_id == issuer,
                UsageEventRow.event_time < period.end(tz), UsageEventRow.ingested_at <= as_of,
                BilledEvent.event_id.is_(None))
         .order_by(UsageEventRow.id))
    start, finalized, months = period.start(tz), _finalized_periods(session, payer, issuer), PeriodIndex(tz)
    out = []
    for values in session.execute(q):
        e = event_from_values(values)
        if e.event_time >= start or months.month_text(e.event_time)[1] in finalized:
            out.append(e)
    return out


def billed_events(session: Session, bill_id: str) -> list[UsageEvent]:
    """The events a final bill covers."""
    q = (select(*event_columns()).join(BilledEvent, BilledEvent.event_id == UsageEventRow.id)
         .where(BilledEvent.bill_id == bill_id).order_by(UsageEventRow.id))
    return [event_from_values(v) for v in session.execute(q)]


def _priors(session: Session, payer: str, issuer: str, pricing: Pricing, events: list[UsageEvent], period: Period
            ) -> dict[tuple[str, str], Prior]:
    """Usage of tiered or packaged entries already on final bills, for the earlier periods this bill adjusts."""
    months = PeriodIndex(pricing.tz)
    wanted = {(e.entry_id, months.month_text(e.event_time)[1]) for e in events
              if e.entry_id and months.month_text(e.event_time)[1] != str(period)}
    out: dict[tuple[str, str], Prior] = {}
    for entry_id, own in sorted(wanted):
        timeline = pricing.entries.get(entry_id or "")
        if timeline is None or not any(v.tiers or v.package for v in timeline.versions):
            continue
        p = Period.parse(own)
        q = (select(*event_columns()).join(BilledEvent, BilledEvent.event_id == UsageEventRow.id)
             .where(UsageEventRow.payer_org_id == payer, UsageEventRow.issuer_org_id == issuer,
                    UsageEventRow.entry_id == entry_id, UsageEventRow.event_time >= p.start(pricing.tz),
                    UsageEventRow.event_time < p.end(pricing.tz)))
        used = allowance = 0
        for values in session.execute(q):
            e = event_from_values(values)
            version = timeline.at(e.event_time)
            if version is None or not e.chargeable or e.free:
                continue
            if e.quantity("packages") and version.package is not None:
                allowance += e.quantity("packages") * int(version.package.quantity * version.divisor)
            else:
                used += e.quantity(version.meter)
        out[(entry_id or "", own)] = Prior(used, allowance)
    return out


def _build(session: Session, payer: str, issuer: str, period: Period, as_of: datetime, vat: Vat, tz: tzinfo,
           relation: Relation) -> tuple[Bill, list[UsageEvent], Pricing, dict[tuple[str, str], Prior]]:
    """The bill of (payer, issuer, month) from the events ingested up to `as_of`, and what it was built from."""
    pricing = pricing_for(session, issuer, tz)
    events = unbilled_events(session, payer, issuer, period, as_of, tz)
    priors = _priors(session, payer, issuer, pricing, events, period)
    with domain_errors():
        bill = build_bill(events, payer_org_id=payer, issuer_org_id=issuer, relation=relation.value, period=period,
                          as_of=as_of, pricing=pricing, vat=vat, priors=priors)
    return bill, events, pricing, priors


def draft(session: Session, *, payer_org_id: str, issuer_org_id: str, period: Period, relation: Relation,
          now: datetime, actor: str, vat: Vat, tz: tzinfo) -> tuple[BillRow, Bill]:
    """Build (or rebuild) the draft bill of a payer from an issuer for a month, as of now."""
    if period.is_year:
        raise InvalidInput("bills are monthly; give a period such as 2026-11", code="invalid_period")
    row = session.scalar(select(BillRow).where(BillRow.payer_org_id == payer_org_id,
                                               BillRow.issuer_org_id == issuer_org_id,
                                               BillRow.period == str(period)))
    if row is not None and row.status == FINALIZED:
        raise Conflict(f"bill {row.id} for {period} is final; later events land on the next bill",
                       code="bill_finalized", bill_id=row.id)
    bill, _, _, _ = _build(session, payer_org_id, issuer_org_id, period, now, vat, tz, relation)
    if row is None:
        row = BillRow(id=new_id("bill"), payer_org_id=payer_org_id, issuer_org_id=issuer_org_id,
                      relation=relation.value, period=str(period), status=DRAFT, revision=0, created_at=now,
                      created_by=actor)
        session.add(row)
    else:
        session.execute(delete(BillLineRow).where(BillLineRow.bill_id == row.id))
    row.revision += 1
    row.as_of, row.total, row.vat_included, row.vat_rate = now, bill.total, vat.included, vat.rate
    row.vat_amount, row.event_count, row.content_sha256 = bill.vat_amount, len(bill.event_ids), bill.sha256()
    session.flush()
    session.add_all([line_row(row.id, line) for line in bill.lines])
    session.flush()
    return row, bill


def stored_bill(session: Session, row: BillRow) -> Bill:
    """The bill as stored (header and lines)."""
    lines = session.scalars(select(BillLineRow).where(BillLineRow.bill_id == row.id).order_by(BillLineRow.line_no))
    return Bill(payer_org_id=row.payer_org_id, issuer_org_id=row.issuer_org_id, relation=row.relation,
                period=row.period, as_of=row.as_of, vat=Vat(row.vat_included, row.vat_rate),
                lines=tuple(line_from_row(r) for r in lines))


def _attribution_rows(session: Session, row: BillRow) -> list[dict[str, Any]]:
    return [{"line_no": a.line_no, "dataset_id": a.dataset_id, "provider_org_id": a.provider_org_id,
             "amount": fen_text(a.amount)}
            for a in session.scalars(select(BillAttribution).where(BillAttribution.bill_id == row.id)
                                     .order_by(BillAttribution.line_no, BillAttribution.dataset_id))]


def finalize(session: Session, row: BillRow, *, now: datetime, actor: str, tz: tzinfo) -> BillRow:
    """Make a draft final: exactly the events it was built from are billed (once, ever), its revenue is
    attributed to providers, and its content, identity and attribution are sealed by a SHA-256."""
    if row.status != DRAFT:
        raise Conflict(f"bill {row.id} is already final", code="bill_finalized", bill_id=row.id)
    vat = Vat(row.vat_included, row.vat_rate)
    period = Period.parse(row.period)
    bill, events, pricing, priors = _build(session, row.payer_org_id, row.issuer_org_id, period, row.as_of, vat, tz,
                                           Relation(row.relation))
    if bill.sha256() != row.content_sha256:
        raise Conflict(f"draft {row.id} no longer matches its events (they changed since revision {row.revision}); "
                       "create the bill again, review it, then finalize", code="bill_draft_stale", bill_id=row.id)
    try:
        with session.begin_nested():
            if bill.event_ids:
                session.execute(insert(BilledEvent), [{"event_id": i, "bill_id": row.id} for i in bill.event_ids])
    except IntegrityError:
        raise Conflict("some of this draft's events are already on a final bill; create the bill again",
                       code="event_already_billed", bill_id=row.id) from None
    providers = dict(session.execute(select(Dataset.id, Dataset.provider_org_id)).all())
    shares = attribute(bill.lines, events, pricing=pricing, period=period, priors=priors)
    session.add_all([BillAttribution(bill_id=row.id, line_no=s.line_no, period=row.period, relation=row.relation,
                                     dataset_id=s.dataset_id, provider_org_id=providers.get(s.dataset_id or ""),
                                     amount=s.amount) for s in shares])
    session.flush()
    row.status, row.finalized_at, row.finalized_by = FINALIZED, now, actor
    row.sha256 = seal(bill, bill_id=row.id, finalized_at=now, finalized_by=actor,
                      attributions=_attribution_rows(session, row))
    session.flush()
    if row.relation == Relation.PRODUCT:
        _record_excess(session, row, now)
    return row


def revenue_positions(session: Session, operator_org_id: str, until: int) -> list[RevenuePosition]:
    """An operator's revenue (final customer bills, by bill period) against its maximum, year by year."""
    revenue: dict[int, Decimal] = {}
    for period, total in session.execute(select(BillRow.period, BillRow.total).where(
            BillRow.issuer_org_id == operator_org_id, BillRow.relation == Relation.PRODUCT.value,
            BillRow.status == FINALIZED)):
        year = int(period[:4])
        revenue[year] = revenue.get(year, ZERO) + total
    return positions(operator_org_id, revenue, revenue_caps(session, operator_org_id), until)


def _record_excess(session: Session, row: BillRow, now: datetime) -> None:
    year = int(row.period[:4])
    pos = revenue_positions(session, row.issuer_org_id, year)[-1]
    if pos.excess <= 0 or pos.effective_max is None:
        return
    last = session.scalar(select(RevenueExcess).where(RevenueExcess.operator_org_id == row.issuer_org_id,
                                                      RevenueExcess.year == year)
                          .order_by(RevenueExcess.id.desc()).limit(1))
    if last is None or last.excess != pos.excess:
        session.add(RevenueExcess(operator_org_id=row.issuer_org_id, year=year, revenue=pos.revenue,
                                  effective_max=pos.effective_max, excess=pos.excess, bill_id=row.id,
                                  recorded_at=now))
        session.flush()


# Every decimal stored with a bill: (table, its bill column, its line column, its decimal columns).
_BILL_DECIMALS: tuple[tuple[Any, Any, Any, tuple[str, ...]], ...] = (
    (BillRow, BillRow.id, None, ("total", "vat_rate", "vat_amount")),
    (BillLineRow, BillLineRow.bill_id, BillLineRow.line_no, ("quantity", "unit_price", "cap", "amount")),
    (BillAttribution, BillAttribution.bill_id, BillAttribution.line_no, ("amount",)),
)


def malformed_decimals(session: Session, bill_ids: list[str]) -> dict[str, list[Difference]]:
    """The stored decimals of these bills that are not the text of a finite decimal, by bill: read as text, so
    that reconciliation reports them as differences instead of failing to load the bill."""
    found: dict[str, list[Difference]] = {}
    for model, bill_col, line_col, names in _BILL_DECIMALS:
        columns = [type_coerce(getattr(model, name), String) for name in names]
        line = line_col if line_col is not None else type_coerce(None, String)
        for bill_id, line_no, *texts in session.execute(select(bill_col, line, *columns)
                                                        .where(bill_col.in_(bill_ids))):
            for name, value in zip(names, texts, strict=True):
                if value is not None and not _finite_decimal(value):
                    found.setdefault(bill_id, []).append(Difference(
                        bill_id, line_no, f"stored {model.__tablename__}.{name}", "a decimal amount", repr(value)))
    return found


def _finite_decimal(value: str) -> bool:
    try:
        return Decimal(value).is_finite()
    except (InvalidOperation, ValueError):
        return False


def reconcile_bill(session: Session, row: BillRow, tz: tzinfo) -> list[Difference]:
    """A stored bill against its events (and, once final, against its seal)."""
    period = Period.parse(row.period)
    stored = stored_bill(session, row)
    pricing = pricing_for(session, row.issuer_org_id, tz)
    if row.status == FINALIZED:
        events = billed_events(session, row.id)
    else:
        events = unbilled_events(session, row.payer_org_id, row.issuer_org_id, period, row.as_of, tz)
    priors = _priors(session, row.payer_org_id, row.issuer_org_id, pricing, events, period)
    with domain_errors():
        diffs = reconcile_lines(row.id, stored.lines, events, pricing=pricing, period=period, priors=priors,
                                total=row.total)
    if len(events) != row.event_count:
        diffs.append(Difference(row.id, None, "events on the bill", str(row.event_count), str(len(events))))
    if row.status == FINALIZED:
        assert row.finalized_at is not None and row.finalized_by is not None
        sealed = seal(stored, bill_id=row.id, finalized_at=row.finalized_at, finalized_by=row.finalized_by,
                      attributions=_attribution_rows(session, row))
        if sealed != row.sha256:
            diffs.append(Difference(row.id, None, "bill hash", str(row.sha256), sealed))
        shares: dict[int, Decimal] = {}
        for a in session.scalars(select(BillAttribution).where(BillAttribution.bill_id == row.id)):
            shares[a.line_no] = shares.get(a.line_no, ZERO) + a.amount
        for line in stored.lines:
            if line.amount and shares.get(line.line_no, ZERO) != line.amount:
                diffs.append(Difference(row.id, line.line_no, "attributed amount", fen_text(line.amount),
                                        fen_text(shares.get(line.line_no, ZERO))))
    return diffs


def bill_out(session: Session, row: BillRow, names: dict[str, str] | None = None, *, lines: bool = True
             ) -> dict[str, Any]:
    """A bill as the API shows it: header, VAT statement, totals in fen and (optionally) its lines."""
    vat = Vat(row.vat_included, row.vat_rate)
    names = names or {}
    out: dict[str, Any] = {
        "id": row.id, "payer_org_id": row.payer_org_id, "payer_name": names.get(row.payer_org_id),
        "issuer_org_id": row.issuer_org_id, "issuer_name": names.get(row.issuer_org_id), "relation": row.relation,
        "period": row.period, "status": row.status, "revision": row.revision, "as_of": row.as_of.isoformat(),
        "currency": "CNY", "vat_included": row.vat_included, "vat_rate": text(row.vat_rate), "vat": vat.label(),
        "total": fen_text(row.total), "vat_amount": fen_text(row.vat_amount), "gross": fen_text(vat.gross(row.total)),
        "event_count": row.event_count, "content_sha256": row.content_sha256, "sha256": row.sha256,
        "finalized_at": row.finalized_at.isoformat() if row.finalized_at else None, "finalized_by": row.finalized_by,
    }
    if lines:
        out["lines"] = [line.record() for line in stored_bill(session, row).lines]
    return out


def issued(session: Session, rows: list[BillRow]) -> list[IssuedBill]:
    names = org_names(session)
    return [IssuedBill(r.id, r.status, r.sha256, stored_bill(session, r), names) for r in rows]


def bill_events(session: Session, row: BillRow, tz: tzinfo) -> list[UsageEvent]:
    """The events behind a bill (billed ones once final; the draft's candidates before)."""
    if row.status == FINALIZED:
        return billed_events(session, row.id)
    return unbilled_events(session, row.payer_org_id, row.issuer_org_id, Period.parse(row.period), row.as_of, tz)


def org_names(session: Session) -> dict[str, str]:
    return dict(session.execute(select(Organization.id, Organization.name)).all())


def attribution_totals(session: Session, period: Period, provider_org_id: str | None = None) -> dict[str, Any]:
    """Revenue attributed to providers and datasets on final bills of `period` (a month or a year)."""
    q = select(BillAttribution)
    q = (q.where(BillAttribution.period.like(f"{period.year:04d}-%")) if period.is_year
         else q.where(BillAttribution.period == str(period)))
    if provider_org_id is not None:
        q = q.where(BillAttribution.provider_org_id == provider_org_id)
    names = org_names(session)
    providers: dict[str, dict[str, Any]] = {}
    datasets: dict[str, dict[str, Any]] = {}
    for a in session.scalars(q):
        pkey, dkey = a.provider_org_id or "unattributed", a.dataset_id or "unattributed"
        p = providers.setdefault(pkey, {"provider_org_id": a.provider_org_id, "name": names.get(pkey),
                                        "platform": ZERO, "product": ZERO, "total": ZERO})
        d = datasets.setdefault(dkey, {"dataset_id": a.dataset_id, "provider_org_id": a.provider_org_id,
                                       "platform": ZERO, "product": ZERO, "total": ZERO})
        for bucket in (p, d):
            bucket[a.relation] += a.amount
            bucket["total"] += a.amount

    def fmt(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: (fen_text(v) if isinstance(v, Decimal) else v) for k, v in r.items()}
                for _, r in sorted(rows.items())]

    return {"period": str(period), "currency": "CNY", "basis": "final bills", "providers": fmt(providers),
            "datasets": fmt(datasets)}
