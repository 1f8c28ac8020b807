"""Products and services: publishing and the product lifecycle, the public catalogue of products, subscriptions,
and metered calls through the governed run path (docs/products.md)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from sandbox import product_calls as calls
from sandbox import products, runs
from sandbox.app.deps import SESSION, AppState, Guard, app_state, public, require
from sandbox.app.governed import execute_governed
from sandbox.app.routes_prices import PriceIn, _money, _tiers
from sandbox.app.schemas import StrictModel
from sandbox.audit import AuditDraft
from sandbox.billing import prices
from sandbox.billing.convert import event_insert, event_row
from sandbox.errors import Conflict, NotFound, Refused
from sandbox.run_record import AnyRun, RunRecord
from sandbox.store.models import Grant, Job, PriceListEntry, Product, ProductCall, Run, Subscription

router = APIRouter(prefix="/v1", tags=["products"])


class ProductPriceIn(PriceIn):
    category: str
    basis: str = Field(description="per_call, per_volume or per_period")
    unit: str = Field(description="call; 10k_rows or GB; month or year")


class ProductIn(StrictModel):
    job_id: str = Field(description="an approved job of the operator; its frozen SQL is what a call runs")
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=4000)
    parameters: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="every job parameter: {type?, values: [...]} or {type?, grid: "
                                          "{min, max, step}}")
    entry_id: str | None = Field(None, description="an entry of the operator's price list (or give `price`)")
    price: ProductPriceIn | None = Field(None, description="a new price-list entry for this product, capped")


class ReasonIn(StrictModel):
    reason: str = ""


class ReviewIn(StrictModel):
    decision: str = Field(pattern="^(approve|reject)$")
    comment: str = ""


class SubscribeIn(StrictModel):
    public_interest_purpose: str | None = Field(None, max_length=2000,
                                                description="asks the agency to approve free public-interest use")


class ApproveIn(StrictModel):
    reason: str = Field(min_length=1)


class InvokeIn(StrictModel):
    params: dict[str, Any] = Field(default_factory=dict)


def _product(session: Session, guard: Guard, product_id: str) -> Product:
    return guard.owned(session, Product, product_id, owner=lambda p: p.operator_org_id, kind="product")


def _note(guard: Guard, product: Product) -> None:
    guard.note(product_id=product.id, grant_id=product.grant_id, job_id=product.job_id, status=product.status,
               entry_id=product.entry_id)


# --- publishing and the lifecycle ------------------------------------------------------------------------------

@router.post("/products", status_code=201)
def publish_product(body: ProductIn, guard: Guard = require("product", "create"),
                    session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Publish a product (in `draft`) backed by an approved job, priced by a capped price-list entry."""
    job = guard.owned(session, Job, body.job_id, owner=lambda j: j.operator_org_id, kind="job")
    now, actor = state.clock.now(), guard.caller.principal_id
    if (body.entry_id is None) == (body.price is None):
        raise Refused("give either `entry_id` (an entry of your price list) or `price`", code="price_required")
    if body.price is not None:
        tiers, package = _tiers(body.price)
        entry = prices.create_entry(session, operator_org_id=job.operator_org_id, name=body.name,
                                    category=body.price.category, basis=body.price.basis, unit=body.price.unit,
                                    unit_price=_money(body.price.unit_price, "unit_price"), tiers=tiers,
                                    package=package, effective_from=body.price.effective_from,
                                    note=body.price.note, vat=state.metering.vat, now=now, actor=actor)
    else:
        found = session.get(PriceListEntry, body.entry_id)
        if found is None or found.operator_org_id != job.operator_org_id:
            raise NotFound(f"price-list entry {body.entry_id} does not exist or belongs to another operator",
                           code="price_entry_not_found")
        entry = found
    product = products.publish(session, job=job, entry=entry, name=body.name, description=body.description,
                               parameters=body.parameters, now=now, actor=actor)
    guard.audit.resource = f"product/{product.id}"
    _note(guard, product)
    guard.note(name=product.name, parameters=product.parameters, datasets=sorted(job.dataset_versions))
    return products.product_out(session, product, now)


def _move(session: Session, guard: Guard, state: AppState, product_id: str, action: products.ProductAction,
          reason: str) -> dict[str, Any]:
    product = _product(session, guard, product_id)
    before = product.status
    now = state.clock.now()
    products.transition(session, product, action, reason=reason, now=now)
    _note(guard, product)
    guard.note(action=action.value, from_status=before, reason=reason)
    return products.product_out(session, product, now)


@router.post("/products/{product_id}/submit")
def submit_product(product_id: str, guard: Guard = require("product", "change"),
                   session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Ask the agency to list a draft product (its job, grant and price are checked again)."""
    return _move(session, guard, state, product_id, products.ProductAction.SUBMIT, "")


@router.post("/products/{product_id}/review")
def review_product(product_id: str, body: ReviewIn, guard: Guard = require("product", "review"),
                   session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """The agency lists a product pending review, or sends it back to draft with a reason."""
    action = products.ProductAction.APPROVE if body.decision == "approve" else products.ProductAction.REJECT
    return _move(session, guard, state, product_id, action, body.comment)


@router.post("/products/{product_id}/withdraw")
def withdraw_product(product_id: str, body: ReasonIn | None = None,
                     guard: Guard = require("product", "change"), session: Session = SESSION,
                     state: AppState = Depends(app_state)) -> dict[str, Any]:
    """The operator withdraws its product; calls are refused from now on."""
    return _move(session, guard, state, product_id, products.ProductAction.WITHDRAW, body.reason if body else "")


@router.post("/products/{product_id}/delist")
def delist_product(product_id: str, body: ReasonIn, guard: Guard = require("product", "delist"),
                   session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """The agency delists a listed product, with a reason; calls are refused from now on."""
    return _move(session, guard, state, product_id, products.ProductAction.DELIST, body.reason)


@router.get("/products/all")
def all_products(guard: Guard = require("product", "read"), session: Session = SESSION,
                 state: AppState = Depends(app_state), status: str | None = Query(None)) -> list[dict[str, Any]]:
    """Products in every state: an operator its own; the agency and regulators all."""
    found = products.list_products(session, operator_org_id=None if guard.any_org else guard.caller.org_id,
                                   statuses=[status] if status else None)
    now = state.clock.now()
    return [products.product_out(session, p, now) for p in found]


@router.get("/products/{product_id}/record")
def product_record(product_id: str, guard: Guard = require("product", "read"),
                   session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """One product's full record, whatever its state."""
    return products.product_out(session, _product(session, guard, product_id), state.clock.now())


# --- the public catalogue of products --------------------------------------------------------------------------

@router.get("/products")
def public_products(audit: AuditDraft = public("products:read"), session: Session = SESSION,
                    state: AppState = Depends(app_state), operator_org_id: str | None = Query(None)
                    ) -> list[dict[str, Any]]:
    """Public: listed products with their operator, datasets (name, certificate code), charging basis and price.
    The public catalogue of datasets is `GET /v1/catalogue`."""
    found = products.list_products(session, operator_org_id=operator_org_id,
                                   statuses=[products.ProductState.LISTED.value])
    audit.note(products_listed=len(found))
    now = state.clock.now()
    return [products.public_out(session, p, now) for p in found]


@router.get("/products/{product_id}")
def public_product(product_id: str, audit: AuditDraft = public("products:read"),
                   session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Public: one listed product."""
    audit.resource = f"product/{product_id}"
    product = session.get(Product, product_id)
    if product is None or product.status != products.ProductState.LISTED:
        raise NotFound(f"no listed product {product_id}", code="product_not_found")
    return products.public_out(session, product, state.clock.now())


# --- subscriptions ---------------------------------------------------------------------------------------------

def _subscription(session: Session, guard: Guard, sub_id: str) -> Subscription:
    mine = guard.caller.org_id

    def owner(s: Subscription) -> str:
        return mine if mine in (s.customer_org_id, s.operator_org_id) else s.customer_org_id

    return guard.owned(session, Subscription, sub_id, owner=owner, kind="subscription")


@router.post("/products/{product_id}/subscriptions", status_code=201)
def subscribe(product_id: str, body: SubscribeIn | None = None,
              guard: Guard = require("subscription", "create"), session: Session = SESSION,
              state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Subscribe the caller's organization to a listed product."""
    product = session.get(Product, product_id)
    guard.check(guard.caller.org_id, f"product/{product_id}")
    if product is None:
        raise NotFound(f"product {product_id} does not exist", code="product_not_found")
    now = state.clock.now()
    sub = calls.subscribe(session, product, customer_org_id=guard.caller.org_id, actor=guard.caller.principal_id,
                          purpose=body.public_interest_purpose if body else None, now=now)
    calls.record_period(session, product, sub, now, state.metering.tz)
    guard.audit.resource = f"subscription/{sub.id}"
    guard.note(product_id=product.id, subscription_id=sub.id, grant_id=product.grant_id,
               public_interest_purpose=sub.public_interest_purpose)
    return calls.subscription_out(sub)


@router.get("/subscriptions")
def list_subscriptions(guard: Guard = require("subscription", "read"),
                       session: Session = SESSION, product_id: str | None = Query(None)
                       ) -> list[dict[str, Any]]:
    """Subscriptions: a customer its own, an operator those to its products; the agency and regulators all."""
    q = select(Subscription).order_by(Subscription.created_at, Subscription.id)
    if not guard.any_org:
        org = guard.caller.org_id
        q = q.where((Subscription.customer_org_id == org) | (Subscription.operator_org_id == org))
    if product_id:
        q = q.where(Subscription.product_id == product_id)
    return [calls.subscription_out(s) for s in session.scalars(q)]


@router.post("/subscriptions/{sub_id}/approve-public-interest")
def approve_public_interest(sub_id: str, body: ApproveIn, guard: Guard = require("subscription", "approve"),
                            session: Session = SESSION, state: AppState = Depends(app_state)
                            ) -> dict[str, Any]:
    """The agency approves a subscription for public-interest use: its calls are free from now on."""
    sub = _subscription(session, guard, sub_id)
    calls.approve_public_interest(sub, reason=body.reason, actor=guard.caller.principal_id, now=state.clock.now())
    guard.note(subscription_id=sub.id, product_id=sub.product_id, free_reason=sub.free_reason)
    return calls.subscription_out(sub)


@router.post("/subscriptions/{sub_id}/cancel")
def cancel_subscription(sub_id: str, guard: Guard = require("subscription", "change"),
                        session: Session = SESSION, state: AppState = Depends(app_state)
                        ) -> dict[str, Any]:
    """The customer cancels its subscription; calls are refused from now on."""
    sub = _subscription(session, guard, sub_id)
    if sub.customer_org_id != guard.caller.org_id:
        raise Refused("only the subscribing customer cancels a subscription", code="not_the_subscriber")
    calls.set_subscription_state(sub, calls.SubscriptionState.CANCELLED, now=state.clock.now())
    guard.note(subscription_id=sub.id, product_id=sub.product_id)
    return calls.subscription_out(sub)


# --- calls -----------------------------------------------------------------------------------------------------

def _answer(state: AppState, session: Session, call: ProductCall, run: AnyRun | None, replay: bool = False
            ) -> Response:
    columns, rows = calls.call_result(state.settings.resolved_home, run)
    body = {"call": calls.call_out(call), "columns": columns, "rows": rows, "idempotent_replay": replay}
    return Response(json.dumps(body, ensure_ascii=False, default=str), status_code=201,
                    media_type="application/json")


@router.post("/products/{product_id}/invoke", status_code=201, response_model=None)
def invoke_product(product_id: str, body: InvokeIn | None = None,
                   guard: Guard = require("product", "invoke"), session: Session = SESSION,
                   state: AppState = Depends(app_state),
                   idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=160)) -> Response:
    """Call a listed product: authorized, audited, metered and billed to the customer; the result is output-
    controlled exactly like a run's. A retried Idempotency-Key returns the same call and counts once."""
    product = session.get(Product, product_id)
    guard.check(guard.caller.org_id if product is not None else None, f"product/{product_id}")
    if product is None:
        raise NotFound(f"product {product_id} does not exist", code="product_not_found")
    guard.audit.resource_org_id = product.operator_org_id  # the operator reads its products' call records
    caller, customer = guard.caller.principal_id, guard.caller.org_id
    earlier = calls.find_idempotent_call(session, product.id, caller, idempotency_key)
    if earlier is not None:
        guard.note(product_id=product.id, call_id=earlier.id, idempotent_replay=True)
        return _answer(state, session, earlier, session.get(Run, earlier.run_id) if earlier.run_id else None, True)
    now = state.clock.now()
    sub = calls.active_subscription(session, product.id, customer)
    given = body.params if body else {}
    call = calls.new_call(product, sub, customer_org_id=customer, requested_by=caller,
                          idempotency_key=idempotency_key, params={}, now=now)
    _note(guard, product)
    guard.note(call_id=call.id, subscription_id=sub.id if sub else None, free=call.free_reason is not None)
    job = session.get(Job, product.job_id)
    grant = session.get(Grant, product.grant_id)
    assert job is not None and grant is not None
    try:
        calls.require_listed(product)
        if sub is None:
            raise Refused(f"the organization does not subscribe to product {product.id}; subscribe first",
                          code="not_subscribed", product_id=product.id)
        prices.require_active_price(session, product.entry_id, now)
        params = products.check_call_params(product, job, given)
    except Refused as exc:
        call.idempotency_key = None  # a refusal before running is not replayed: a retry is decided again
        calls.finish_call(call, None, status="refused", error_code=exc.code, error_message=exc.message)
        event = calls.call_event(call, grant, result_rows=0, result_bytes=0, datasets=(), at=now)
        exc.context["call_id"] = call.id
        raise guard.refuse_with(session, exc, [call, event_row(event)]) from None
    if sub is not None:
        calls.record_period(session, product, sub, now, state.metering.tz)
    run = runs.new_run(job, requested_by=caller, params=params, now=now, instance=state.runs.instance,
                       idempotency_key=f"{product.id}/{idempotency_key}" if idempotency_key else None)
    call.params = dict(run.params)
    guard.note(run_id=run.id, params_sha256=runs.params_digest(run.params))

    def refused(r: RunRecord, exc: Refused) -> list[Any]:
        calls.finish_call(call, r, status=r.status, error_code=exc.code, error_message=exc.message)
        exc.context["call_id"] = call.id
        return [call, event_row(calls.call_event(call, grant, result_rows=0, result_bytes=0, datasets=(), at=now))]

    def finished(r: RunRecord, datasets: Any) -> list[Any]:
        calls.finish_call(call, r, status=r.status, error_code=r.error_code, error_message=r.error_message)
        event = calls.call_event(call, grant, result_rows=r.result_rows, result_bytes=r.result_bytes,
                                 datasets=datasets, at=now)
        return [call, event_insert(event)]

    with state.tracer.start_as_current_span("sluice.product.call", attributes={"sluice.product_id": product.id,
                                                                               "sluice.call_id": call.id}):
        done = execute_governed(state, guard, session, job, grant, run, params, now, refused=refused,
                                finished=finished)
    if done.earlier is not None:  # a concurrent request with the same Idempotency-Key won
        first = session.scalar(select(ProductCall).where(ProductCall.run_id == done.earlier.id))
        if first is None:
            raise Conflict("a call with this Idempotency-Key is still in progress; retry shortly",
                           code="call_in_progress", product_id=product.id)
        return _answer(state, session, first, done.earlier, True)
    return _answer(state, session, call, done.run)


@router.get("/calls")
def list_calls(guard: Guard = require("call", "read"), session: Session = SESSION,
               product_id: str | None = Query(None), limit: int = Query(1000, ge=1, le=10_000)
               ) -> list[dict[str, Any]]:
    """Calls: a customer its own, an operator those of its products; the agency and regulators all."""
    found = calls.list_calls(session, product_id=product_id, org_id=None if guard.any_org else guard.caller.org_id,
                             limit=limit)
    return [calls.call_out(c) for c in found]


@router.get("/calls/{call_id}")
def get_call(call_id: str, guard: Guard = require("call", "read"), session: Session = SESSION
             ) -> dict[str, Any]:
    """One call's record."""
    mine = guard.caller.org_id

    def owner(c: ProductCall) -> str:
        return mine if mine in (c.customer_org_id, c.operator_org_id) else c.customer_org_id

    return calls.call_out(guard.owned(session, ProductCall, call_id, owner=owner, kind="call"))
