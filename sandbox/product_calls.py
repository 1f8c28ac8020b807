"""Subscriptions and product calls: who may call a product, the record of each call, its product-fee usage event,
and the Python interface for listing products' calls (disclosure reports, load tests).

A call is a run of the product's job through the governed path (sandbox/app/governed.py): its run carries the
platform-fee event (agency -> operator), and the call carries a product-fee event (operator -> customer) with id
`call:<call id>`, committed with the run and the audit record. A call refused before it runs (product not listed,
no subscription, price suspended, parameter not allowed) is recorded as refused with an uncharged event.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from metering.events import DatasetUse, EventKind, UsageEvent
from metering.meters import Basis
from metering.periods import Period
from sandbox.billing.usage import ingest, product_event
from sandbox.errors import Conflict, InvalidInput, Refused
from sandbox.products import ProductState
from sandbox.run_record import AnyRun
from sandbox.store.models import Grant, PriceListEntry, Product, ProductCall, Subscription, UsageEventRow
from sandbox.store.types import new_id

MAX_CALL_ROWS = 10_000  # a product answers inline; larger outputs are jobs' business


class SubscriptionState(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"


_SUB_MOVES: dict[SubscriptionState | None, frozenset[SubscriptionState]] = {
    None: frozenset({SubscriptionState.ACTIVE}),
    SubscriptionState.ACTIVE: frozenset({SubscriptionState.CANCELLED}),
    SubscriptionState.CANCELLED: frozenset(),
}


def set_subscription_state(sub: Subscription, to: SubscriptionState, *, now: datetime) -> None:
    """The one function that changes a subscription's state."""
    current = SubscriptionState(sub.status) if sub.status else None
    if to not in _SUB_MOVES[current]:
        raise Conflict(f"subscription {sub.id} is {sub.status}; it cannot become {to.value}",
                       code="invalid_subscription_transition", status=sub.status)
    sub.status = to.value
    if to == SubscriptionState.CANCELLED:
        sub.cancelled_at = now


def require_listed(product: Product) -> None:
    """Refuse anything but a listed product, with its state and reason."""
    if product.status != ProductState.LISTED:
        reason = f": {product.status_reason}" if product.status_reason else ""
        raise Refused(f"product {product.id} is {product.status}, not listed{reason}", code="product_not_listed",
                      product_id=product.id, status=product.status)


def active_subscription(session: Session, product_id: str, customer_org_id: str) -> Subscription | None:
    """The customer organization's active subscription to a product, if any."""
    return session.scalar(select(Subscription).where(
        Subscription.product_id == product_id, Subscription.customer_org_id == customer_org_id,
        Subscription.status == SubscriptionState.ACTIVE.value).order_by(Subscription.created_at).limit(1))


def subscribe(session: Session, product: Product, *, customer_org_id: str, actor: str, purpose: str | None,
              now: datetime) -> Subscription:
    """Subscribe a customer organization to a listed product (a public-interest purpose waits for the agency)."""
    require_listed(product)
    if active_subscription(session, product.id, customer_org_id) is not None:
        raise Conflict(f"the organization already subscribes to product {product.id}", code="subscription_exists")
    sub = Subscription(id=new_id("sub"), product_id=product.id, customer_org_id=customer_org_id,
                       operator_org_id=product.operator_org_id, status="",
                       public_interest_purpose=(purpose or "").strip() or None, created_at=now, created_by=actor)
    set_subscription_state(sub, SubscriptionState.ACTIVE, now=now)
    session.add(sub)
    session.flush()
    return sub


def approve_public_interest(sub: Subscription, *, reason: str, actor: str, now: datetime) -> None:
    """The agency approves a subscription for public-interest use: its calls are free from now on."""
    if sub.status != SubscriptionState.ACTIVE:
        raise Conflict(f"subscription {sub.id} is {sub.status}", code="invalid_subscription_transition",
                       status=sub.status)
    if not reason.strip():
        raise InvalidInput("an approval for public-interest use needs a reason", code="reason_required")
    if sub.free_reason is not None:
        raise Conflict(f"subscription {sub.id} is already approved for public-interest use",
                       code="already_approved")
    sub.free_reason = f"subscription {sub.id} approved by the agency for public-interest use: {reason.strip()}"
    sub.free_approved_by, sub.free_approved_at = actor, now


def period_event(session: Session, product: Product, sub: Subscription, at: datetime, tz: ZoneInfo
                 ) -> UsageEvent | None:
    """A per-period product's subscription event for the month of `at` (id `subscription:<sub>:<month>`)."""
    entry = session.get(PriceListEntry, product.entry_id)
    assert entry is not None
    if entry.basis != Basis.PER_PERIOD:
        return None
    grant = session.get(Grant, product.grant_id)
    period = Period.month_of(at, tz)
    return product_event(kind=EventKind.SUBSCRIPTION.value, source_id=f"{sub.id}:{period}", entry_id=entry.id,
                         product_id=product.id, customer_org_id=sub.customer_org_id,
                         operator_org_id=product.operator_org_id, grant=grant, counts={"periods": 1},
                         datasets=(), outcome="succeeded", at=at, free_reason=sub.free_reason)


def record_period(session: Session, product: Product, sub: Subscription, at: datetime, tz: ZoneInfo) -> None:
    """Record the month's subscription event once (a replay counts once; safe under concurrency)."""
    event = period_event(session, product, sub, at, tz)
    if event is not None and session.get(UsageEventRow, event.id) is None:
        ingest(session, [event])


# --- calls -----------------------------------------------------------------------------------------------------

def find_idempotent_call(session: Session, product_id: str, requested_by: str, key: str | None
                         ) -> ProductCall | None:
    """The call an earlier request with the same Idempotency-Key made, if any."""
    if not key:
        return None
    return session.scalar(select(ProductCall).where(ProductCall.product_id == product_id,
                                                    ProductCall.requested_by == requested_by,
                                                    ProductCall.idempotency_key == key))


def new_call(product: Product, sub: Subscription | None, *, customer_org_id: str, requested_by: str,
             idempotency_key: str | None, params: dict[str, Any], now: datetime) -> ProductCall:
    """A call record (status `running` until the run ends or the call is refused)."""
    return ProductCall(id=new_id("call"), product_id=product.id, subscription_id=sub.id if sub else None,
                       customer_org_id=customer_org_id, operator_org_id=product.operator_org_id,
                       requested_by=requested_by, idempotency_key=idempotency_key, run_id=None,
                       entry_id=product.entry_id, params=dict(params), status="running", result_rows=0,
                       free_reason=sub.free_reason if sub else None, created_at=now)


def finish_call(call: ProductCall, run: AnyRun | None, *, status: str, error_code: str | None = None,
                error_message: str | None = None) -> None:
    """Copy the run's outcome (or a refusal before running) onto the call record."""
    call.status = status
    call.error_code, call.error_message = error_code, error_message
    if run is not None:
        call.run_id = run.id
        call.params = dict(run.params)
        call.result_rows, call.result_sha256 = run.result_rows, run.result_sha256


def call_event(call: ProductCall, grant: Grant | None, *, result_rows: int, result_bytes: int,
               datasets: Sequence[DatasetUse], at: datetime) -> UsageEvent:
    """The call's product-fee event (operator -> customer); only a succeeded call is chargeable."""
    counts = {"calls": 1, "result_rows": result_rows, "result_bytes": result_bytes}
    return product_event(kind=EventKind.CALL.value, source_id=call.id, entry_id=call.entry_id,
                         product_id=call.product_id, customer_org_id=call.customer_org_id,
                         operator_org_id=call.operator_org_id, grant=grant, counts=counts,
                         datasets=[DatasetUse(d.dataset_id, d.rows, 0) for d in datasets],
                         outcome=call.status, at=at, free_reason=call.free_reason)


def call_out(call: ProductCall) -> dict[str, Any]:
    """A call as the API shows it (never its result)."""
    return {"id": call.id, "product_id": call.product_id, "subscription_id": call.subscription_id,
            "customer_org_id": call.customer_org_id, "operator_org_id": call.operator_org_id,
            "requested_by": call.requested_by, "idempotency_key": call.idempotency_key, "run_id": call.run_id,
            "entry_id": call.entry_id, "params": call.params, "status": call.status, "error_code": call.error_code,
            "error_message": call.error_message, "result_rows": call.result_rows,
            "result_sha256": call.result_sha256, "free": call.free_reason is not None,
            "created_at": call.created_at.isoformat()}


def call_result(home: Path, run: AnyRun | None) -> tuple[list[str], list[dict[str, Any]]]:
    """The output-controlled result of a call's run (columns, rows); empty unless the run succeeded."""
    if run is None or run.status != "succeeded" or not run.result_path:
        return [], []
    table = pq.read_table(home / run.result_path)
    return list(table.column_names), table.slice(0, MAX_CALL_ROWS).to_pylist()


def list_calls(session: Session, *, product_id: str | None = None, org_id: str | None = None,
               since: datetime | None = None, until: datetime | None = None, limit: int | None = None
               ) -> list[ProductCall]:
    """Calls in time order; `org_id` keeps those where it is the customer or the operator (the Python interface
    that disclosure reports and load tests use)."""
    q = select(ProductCall).order_by(ProductCall.created_at, ProductCall.id)
    if product_id is not None:
        q = q.where(ProductCall.product_id == product_id)
    if org_id is not None:
        q = q.where(or_(ProductCall.customer_org_id == org_id, ProductCall.operator_org_id == org_id))
    if since is not None:
        q = q.where(ProductCall.created_at >= since)
    if until is not None:
        q = q.where(ProductCall.created_at < until)
    if limit is not None:
        q = q.limit(limit)
    return list(session.scalars(q))


def subscription_out(sub: Subscription) -> dict[str, Any]:
    """A subscription as the API shows it."""
    return {"id": sub.id, "product_id": sub.product_id, "customer_org_id": sub.customer_org_id,
            "operator_org_id": sub.operator_org_id, "status": sub.status,
            "public_interest_purpose": sub.public_interest_purpose, "free": sub.free_reason is not None,
            "free_reason": sub.free_reason, "free_approved_by": sub.free_approved_by,
            "free_approved_at": sub.free_approved_at.isoformat() if sub.free_approved_at else None,
            "created_at": sub.created_at.isoformat(), "created_by": sub.created_by,
            "cancelled_at": sub.cancelled_at.isoformat() if sub.cancelled_at else None}
