"""`sluice products|subscriptions`: publish data products and services, list them, subscribe, and call them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sandbox.cli import JsonOpt, _params, call
from sandbox.cli.errors import read_json
from sandbox.cli.output import emit

products_app = typer.Typer(help="Data products and services: publish, list, subscribe, call.", no_args_is_help=True)
subscriptions_app = typer.Typer(help="Subscriptions to products.", no_args_is_help=True)
APPS: tuple[tuple[typer.Typer, str], ...] = ((products_app, "products"), (subscriptions_app, "subscriptions"))
_COLUMNS = ["id", "name", "status", "job_id", "created_at"]


@products_app.command("publish")
def products_publish(job: Annotated[str, typer.Option(help="an approved job of your organization")],
                     name: Annotated[str, typer.Option(help="the product's public name")],
                     description: Annotated[str, typer.Option(help="what it answers, for the public catalogue")],
                     params: Annotated[Path | None, typer.Option(help='JSON {"name": {"values": [...]} or '
                                                                    '{"grid": {"min", "max", "step"}}}')] = None,
                     entry: Annotated[str | None, typer.Option(help="a price-list entry of yours")] = None,
                     price: Annotated[Path | None, typer.Option(help="JSON {category, basis, unit, unit_price}")]
                     = None, as_json: JsonOpt = False) -> None:
    """Publish a product (a draft) backed by an approved job, priced by a capped price-list entry."""
    body: dict[str, Any] = {"job_id": job, "name": name, "description": description,
                            "parameters": read_json(params) if params else {}}
    if entry:
        body["entry_id"] = entry
    if price:
        body["price"] = read_json(price)
    call(lambda c: c.post("/v1/products", body), as_json)


@products_app.command("submit")
def products_submit(product_id: str, as_json: JsonOpt = False) -> None:
    """Ask the agency to list a draft product."""
    call(lambda c: c.post(f"/v1/products/{product_id}/submit"), as_json)


@products_app.command("review")
def products_review(product_id: str, decision: Annotated[str, typer.Option(help="approve or reject")],
                    comment: Annotated[str, typer.Option(help="the review comment")] = "",
                    as_json: JsonOpt = False) -> None:
    """List a product pending review, or send it back to draft (the agency)."""
    call(lambda c: c.post(f"/v1/products/{product_id}/review", {"decision": decision, "comment": comment}),
         as_json)


@products_app.command("withdraw")
def products_withdraw(product_id: str, reason: Annotated[str, typer.Option(help="why it is withdrawn")] = "",
                      as_json: JsonOpt = False
                      ) -> None:
    """Withdraw your product (calls are refused from now on)."""
    call(lambda c: c.post(f"/v1/products/{product_id}/withdraw", {"reason": reason}), as_json)


@products_app.command("delist")
def products_delist(product_id: str, reason: Annotated[str, typer.Option(help="why it is delisted")],
                    as_json: JsonOpt = False) -> None:
    """Delist a listed product, with a reason (the agency)."""
    call(lambda c: c.post(f"/v1/products/{product_id}/delist", {"reason": reason}), as_json)


@products_app.command("list")
def products_list(all_states: Annotated[bool, typer.Option("--all", help="every state (needs a key)")] = False,
                  status: Annotated[str | None, typer.Option(help="only products in this state (with --all)")] = None,
                  as_json: JsonOpt = False) -> None:
    """The public catalogue of listed products, or (--all) every product you may see."""
    if all_states:
        call(lambda c: c.get("/v1/products/all", params={"status": status} if status else {}), as_json,
             columns=_COLUMNS)
        return
    data = call(lambda c: c.get("/v1/products"), as_json, quiet=True)
    rows = [{"id": p["id"], "name": p["name"], "operator": p["operator"]["name"],
             "datasets": ", ".join(f"{d['id']} ({d['certificate_code']})" for d in p["datasets"]),
             "price": f"{p['price']['unit_price']} CNY / {p['price']['unit']} ({p['price']['basis']})"}
            for p in data]
    emit(data if as_json else rows, as_json)


@products_app.command("show")
def products_show(product_id: str, as_json: JsonOpt = False) -> None:
    """One product's full record."""
    call(lambda c: c.get(f"/v1/products/{product_id}/record"), as_json)


@products_app.command("subscribe")
def products_subscribe(product_id: str, public_interest_purpose: Annotated[str | None, typer.Option(
        help="ask the agency to approve free public-interest use")] = None, as_json: JsonOpt = False) -> None:
    """Subscribe your organization to a listed product."""
    body = {"public_interest_purpose": public_interest_purpose} if public_interest_purpose else None
    call(lambda c: c.post(f"/v1/products/{product_id}/subscriptions", body), as_json)


@products_app.command("call")
def products_call(product_id: str,
                  param: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable")] = None,
                  idempotency_key: Annotated[str | None, typer.Option(
                      help="retry-safe key: the same key gives the same call")]
                  = None, as_json: JsonOpt = False) -> None:
    """Call a product: the output-controlled result is printed; the call is audited, metered and billed."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    data = call(lambda c: c.post(f"/v1/products/{product_id}/invoke", {"params": _params(param or [])},
                                 headers=headers), as_json, quiet=True)
    if as_json:
        emit(data, True)
        return
    emit(data["rows"], False, columns=data["columns"], title=f"call {data['call']['id']} ({data['call']['status']})")


@products_app.command("calls")
def products_calls(product: Annotated[str | None, typer.Option(help="only this product's calls")] = None,
                   as_json: JsonOpt = False) -> None:
    """Calls you may see: a customer its own, an operator those of its products."""
    call(lambda c: c.get("/v1/calls", params={"product_id": product} if product else {}), as_json,
         columns=["id", "product_id", "customer_org_id", "status", "result_rows", "free", "created_at"])


@subscriptions_app.command("list")
def subscriptions_list(product: Annotated[str | None, typer.Option(help="only this product's subscriptions")]
                       = None, as_json: JsonOpt = False) -> None:
    """Subscriptions you may see."""
    call(lambda c: c.get("/v1/subscriptions", params={"product_id": product} if product else {}), as_json,
         columns=["id", "product_id", "customer_org_id", "status", "free", "created_at"])


@subscriptions_app.command("approve-public-interest")
def subscriptions_approve(sub_id: str, reason: Annotated[str, typer.Option(help="the public-interest reason")],
                          as_json: JsonOpt = False) -> None:
    """Approve a subscription for public-interest use: its calls are free (the agency)."""
    call(lambda c: c.post(f"/v1/subscriptions/{sub_id}/approve-public-interest", {"reason": reason}), as_json)


@subscriptions_app.command("cancel")
def subscriptions_cancel(sub_id: str, as_json: JsonOpt = False) -> None:
    """Cancel your subscription."""
    call(lambda c: c.post(f"/v1/subscriptions/{sub_id}/cancel"), as_json)
