"""Usage, bills, exports, reconciliation, revenue attribution and maximum allowed revenue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy import String, or_, select, type_coerce
from sqlalchemy.orm import Session

from metering.events import to_record
from metering.exports import export_bills, export_usage
from metering.periods import Period
from sandbox.app.deps import SESSION, AppState, Guard, app_state, require
from sandbox.app.schemas import StrictModel
from sandbox.billing import ledger
from sandbox.billing.convert import event_columns, event_from_values
from sandbox.billing.prices import domain_errors
from sandbox.billing.usage import reverse
from sandbox.errors import InvalidInput
from sandbox.store.models import BillRow, Organization, UsageEventRow

router = APIRouter(prefix="/v1", tags=["billing"])
MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/json", "parquet": "application/vnd.apache.parquet"}


class ReverseIn(StrictModel):
    reason: str = Field(min_length=1, max_length=1000)


class BillIn(StrictModel):
    payer_org_id: str
    period: str = Field(description="a month, e.g. 2026-11 (in SLUICE_BILLING_TIMEZONE)")
    issuer_org_id: str | None = Field(None, description="default: the platform agency for an operator payer, "
                                                        "else the caller's organization")


def _period(value: str) -> Period:
    with domain_errors():
        return Period.parse(value)


def _visible(guard: Guard, q: Any, payer: Any, issuer: Any) -> Any:
    """Restrict a query to the caller's own bills or usage (as payer or issuer) unless it may see every org's."""
    return q if guard.any_org else q.where(or_(payer == guard.caller.org_id, issuer == guard.caller.org_id))


def _owner(guard: Guard, payer: str, issuer: str) -> str:
    return guard.caller.org_id if guard.caller.org_id in (payer, issuer) else payer


@router.get("/usage")
def list_usage(period: str | None = Query(None), payer_org_id: str | None = Query(None),
               limit: int = Query(200, ge=1, le=5000), after: str = Query(""),
               guard: Guard = require("usage", "read"), session: Session = SESSION,
               state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Usage events the caller may see (as payer or issuer), by id, paged with `after`."""
    q = _visible(guard, select(*event_columns()), UsageEventRow.payer_org_id, UsageEventRow.issuer_org_id)
    if period:
        p = _period(period)
        q = q.where(UsageEventRow.event_time >= p.start(state.metering.tz),
                    UsageEventRow.event_time < p.end(state.metering.tz))
    if payer_org_id:
        q = q.where(UsageEventRow.payer_org_id == payer_org_id)
    rows = [to_record(event_from_values(v)) for v in
            session.execute(q.where(UsageEventRow.id > after).order_by(UsageEventRow.id).limit(limit + 1))]
    more = len(rows) > limit
    return {"events": rows[:limit], "more": more, "next": rows[limit - 1]["id"] if more else None}


@router.post("/usage/{event_id}/reverse", status_code=201)
def reverse_usage(event_id: str, body: ReverseIn, guard: Guard = require("usage", "reverse"),
                  session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Correct an event by appending its reversal, with a reason (the issuer); never edits or deletes."""
    original = session.get(UsageEventRow, event_id)
    guard.check(original.issuer_org_id if original else None, f"usage/{event_id}")
    with domain_errors():
        event, created = reverse(session, event_id, reason=body.reason, now=state.clock.now())
    guard.note(event_id=event.id, reverses=event_id, reason=body.reason, created=created)
    return {**to_record(event), "created": created}


@router.post("/bills", status_code=201)
def create_bill(body: BillIn, guard: Guard = require("bill", "create"),
                session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Draft (or redraft) a payer's bill for a month: every unbilled event rated under the schedule in force."""
    period = _period(body.period)
    platform = state.metering.platform_org_id(session)
    payer = session.get(Organization, body.payer_org_id)
    issuer = body.issuer_org_id or (platform if payer is not None and payer.kind == "operator"
                                    else guard.caller.org_id)
    guard.check(issuer, f"bill/{body.payer_org_id}/{period}")
    relation = ledger.relation_for(session, body.payer_org_id, issuer, platform)
    row, bill = ledger.draft(session, payer_org_id=body.payer_org_id, issuer_org_id=issuer, period=period,
                             relation=relation, now=state.clock.now(), actor=guard.caller.principal_id,
                             vat=state.metering.vat, tz=state.metering.tz)
    guard.note(bill_id=row.id, period=str(period), payer_org_id=row.payer_org_id, issuer_org_id=issuer,
               status=row.status, revision=row.revision, total=str(row.total), lines=len(bill.lines),
               events=row.event_count, content_sha256=row.content_sha256)
    return ledger.bill_out(session, row, ledger.org_names(session))


@router.get("/bills")
def list_bills(period: str | None = Query(None), payer_org_id: str | None = Query(None),
               status: str | None = Query(None, pattern="^(draft|finalized)$"),
               guard: Guard = require("bill", "read"), session: Session = SESSION
               ) -> list[dict[str, Any]]:
    """Bills the caller may see: its own as payer, an operator's customer bills, every bill for agency and
    regulators."""
    q = _visible(guard, select(BillRow), BillRow.payer_org_id, BillRow.issuer_org_id)
    if period:
        q = q.where(BillRow.period == str(_period(period)))
    if payer_org_id:
        q = q.where(BillRow.payer_org_id == payer_org_id)
    if status:
        q = q.where(BillRow.status == status)
    names = ledger.org_names(session)
    return [ledger.bill_out(session, r, names, lines=False)
            for r in session.scalars(q.order_by(BillRow.period, BillRow.payer_org_id, BillRow.id))]


def _period_rows(guard: Guard, session: Session, period: Period) -> list[BillRow]:
    q = _visible(guard, select(BillRow), BillRow.payer_org_id, BillRow.issuer_org_id)
    return list(session.scalars(q.where(BillRow.period == str(period)).order_by(BillRow.payer_org_id, BillRow.id)))


@router.get("/bills/export", response_model=None)
def export(period: str = Query(...), format: str = Query("csv", pattern="^(csv|json|parquet)$"),
           guard: Guard = require("bill", "export"), session: Session = SESSION) -> Response:
    """Finance export of the period's bills: CSV (UTF-8 with BOM), JSON or Parquet, one row per line."""
    p = _period(period)
    rows = _period_rows(guard, session, p)
    body = export_bills(ledger.issued(session, rows), format)
    guard.note(period=str(p), format=format, bills=[r.id for r in rows], bytes=len(body))
    return Response(body, media_type=MEDIA[format],
                    headers={"Content-Disposition": f'attachment; filename="bills-{p}.{format}"'})


@router.get("/bills/export/usage", response_model=None)
def export_usage_detail(period: str = Query(...), format: str = Query("csv", pattern="^(csv|json|parquet)$"),
                        guard: Guard = require("bill", "export"), session: Session = SESSION,
                        state: AppState = Depends(app_state)) -> Response:
    """The usage detail behind the period's bills: one row per (bill, event), quantities in base units."""
    p = _period(period)
    rows = _period_rows(guard, session, p)
    events = [(r.id, e) for r in rows for e in ledger.bill_events(session, r, state.metering.tz)]
    body = export_usage(events, format)
    guard.note(period=str(p), format=format, bills=[r.id for r in rows], events=len(events), bytes=len(body))
    return Response(body, media_type=MEDIA[format],
                    headers={"Content-Disposition": f'attachment; filename="usage-{p}.{format}"'})


def _bill(guard: Guard, session: Session, bill_id: str) -> BillRow:
    return guard.owned(session, BillRow, bill_id, owner=lambda b: _owner(guard, b.payer_org_id, b.issuer_org_id),
                       kind="bill")


@router.get("/bills/{bill_id}")
def get_bill(bill_id: str, guard: Guard = require("bill", "read"), session: Session = SESSION
             ) -> dict[str, Any]:
    """One bill with its lines."""
    return ledger.bill_out(session, _bill(guard, session, bill_id), ledger.org_names(session))


@router.post("/bills/{bill_id}/finalize")
def finalize_bill(bill_id: str, guard: Guard = require("bill", "finalize"),
                  session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Finalize a draft (its issuer only): immutable, hashed; later events go to the next bill."""
    row = guard.owned(session, BillRow, bill_id, owner=lambda b: b.issuer_org_id, kind="bill")
    ledger.finalize(session, row, now=state.clock.now(), actor=guard.caller.principal_id, tz=state.metering.tz)
    guard.note(bill_id=row.id, period=row.period, total=str(row.total), sha256=row.sha256,
               events=row.event_count)
    return ledger.bill_out(session, row, ledger.org_names(session))


@router.get("/reconciliation")
def reconcile(period: str = Query(...), guard: Guard = require("bill", "reconcile"),
              session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Check every visible bill of a month against its events; `ok` is false on any difference (a stored amount
    that is not a decimal is one)."""
    p = _period(period)
    q = _visible(guard, select(BillRow.id, BillRow.payer_org_id, BillRow.issuer_org_id, BillRow.status,
                               type_coerce(BillRow.total, String), BillRow.event_count),
                 BillRow.payer_org_id, BillRow.issuer_org_id)
    headers = list(session.execute(q.where(BillRow.period == str(p)).order_by(BillRow.payer_org_id, BillRow.id)))
    malformed = ledger.malformed_decimals(session, [h.id for h in headers])
    report = []
    for bill_id, payer, issuer, status, total, events in headers:
        if bill_id in malformed:
            diffs = malformed[bill_id]
        else:
            row = session.get_one(BillRow, bill_id)
            diffs = ledger.reconcile_bill(session, row, state.metering.tz)
        state.metrics.reconciliations.labels("differences" if diffs else "ok").inc()
        report.append({"bill_id": bill_id, "payer_org_id": payer, "issuer_org_id": issuer, "status": status,
                       "total": total, "events": events, "differences": [str(d) for d in diffs]})
    ok = all(not b["differences"] for b in report)
    guard.note(period=str(p), bills=len(report), ok=ok)
    return {"period": str(p), "ok": ok, "bills": report}


@router.get("/attribution")
def attribution(period: str = Query(...), guard: Guard = require("attribution", "read"),
                session: Session = SESSION) -> dict[str, Any]:
    """Revenue attributed to providers and datasets on final bills (providers see their own share)."""
    p = _period(period)
    return ledger.attribution_totals(session, p, None if guard.any_org else guard.caller.org_id)


@router.get("/revenue")
def revenue(year: int = Query(..., ge=2000, le=2200), operator_org_id: str | None = Query(None),
            guard: Guard = require("revenue", "read"), session: Session = SESSION
            ) -> list[dict[str, Any]]:
    """Operators' revenue against their maximum allowed revenue, with excess carried into the next year."""
    if not guard.any_org:
        if operator_org_id not in (None, guard.caller.org_id):
            guard.check(operator_org_id, f"revenue/{operator_org_id}")
        operator_org_id = guard.caller.org_id
    if operator_org_id:
        operators = [operator_org_id]
    else:
        operators = list(session.scalars(select(Organization.id).where(Organization.kind == "operator")
                                         .order_by(Organization.id)))
    if not operators:
        raise InvalidInput("no operator organizations", code="no_operators")
    return [p.record() for o in operators for p in ledger.revenue_positions(session, o, year) if p.year == year]
