"""`sluice prices|pricelist|usage|bills|revenue`: government-guided pricing, usage, bills and finance exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sandbox.cli import JsonOpt, call
from sandbox.cli.errors import read_json
from sandbox.cli.output import emit, out, write_output

prices_app = typer.Typer(help="Platform fees, categories, price caps and maximum allowed revenue (the agency).",
                         no_args_is_help=True)
pricelist_app = typer.Typer(help="Operators' price lists, under the caps.", no_args_is_help=True)
usage_app = typer.Typer(help="Usage events: list, and correct by reversal.", no_args_is_help=True)
bills_app = typer.Typer(help="Bills: draft, show, finalize, export, reconcile, attribution.", no_args_is_help=True)
revenue_app = typer.Typer(help="Operators' revenue against their maximum allowed revenue.", no_args_is_help=True)
APPS: tuple[tuple[typer.Typer, str], ...] = (
    (prices_app, "prices"), (pricelist_app, "pricelist"), (usage_app, "usage"), (bills_app, "bills"),
    (revenue_app, "revenue"))
PeriodOpt = Annotated[str, typer.Option(help="a month such as 2026-11")]
MonthFilterOpt = Annotated[str | None, typer.Option(help="a month such as 2026-11")]
EffectiveFromOpt = Annotated[str | None, typer.Option(help="RFC 3339 time it applies from (default: now)")]
NoteOpt = Annotated[str, typer.Option(help="a note kept with the change")]


# --- prices -------------------------------------------------------------------------------------------------

@prices_app.command("show")
def prices_show(as_json: JsonOpt = False) -> None:
    """The VAT convention, categories, platform fees and caps (public)."""
    call(lambda c: c.get("/v1/prices"), as_json)


@prices_app.command("add-category")
def prices_add_category(code: str, name: Annotated[str, typer.Option(help="a name people will recognise")],
                        as_json: JsonOpt = False) -> None:
    """Add a product category (e.g. statistics_report)."""
    call(lambda c: c.post("/v1/prices/categories", {"code": code, "name": name}), as_json)


@prices_app.command("set-platform")
def prices_set_platform(rates: Annotated[Path, typer.Argument(help='JSON {"runs": "0.50", ...}')],
                        effective_from: EffectiveFromOpt = None, note: NoteOpt = "",
                        as_json: JsonOpt = False) -> None:
    """A new version of the platform fee schedule (CNY per billing unit of each meter)."""
    body = {"rates": read_json(rates), "effective_from": effective_from, "note": note}
    call(lambda c: c.post("/v1/prices/platform", body), as_json)


@prices_app.command("set-caps")
def prices_set_caps(caps: Annotated[Path, typer.Argument(help="JSON list of {basis, category, unit, price}")],
                    effective_from: EffectiveFromOpt = None, note: NoteOpt = "",
                    as_json: JsonOpt = False) -> None:
    """A new version of the price caps; prints the listed prices it suspends."""
    body = {"caps": read_json(caps), "effective_from": effective_from, "note": note}
    call(lambda c: c.post("/v1/prices/caps", body), as_json)


@prices_app.command("set-revenue-cap")
def prices_set_revenue_cap(operator: Annotated[str, typer.Option(help="operator organization id")],
                           year: Annotated[int, typer.Option(help="a calendar year such as 2026")],
                           amount: Annotated[str, typer.Option(help="yuan, e.g. 1000000.00")],
                           note: NoteOpt = "",
                           as_json: JsonOpt = False) -> None:
    """Set an operator's maximum allowed revenue (最高准许收入) for a year."""
    body = {"operator_org_id": operator, "year": year, "amount": amount, "note": note}
    call(lambda c: c.post("/v1/prices/revenue-caps", body), as_json)


# --- price lists ----------------------------------------------------------------------------------------------

@pricelist_app.command("add")
def pricelist_add(entry: Annotated[Path, typer.Argument(help="JSON entry (see docs/metering.md)")],
                  as_json: JsonOpt = False) -> None:
    """Publish an entry in your price list; a price above its cap is refused with the cap."""
    body = read_json(entry)
    call(lambda c: c.post("/v1/pricelist", body), as_json)


@pricelist_app.command("list")
def pricelist_list(operator: Annotated[str | None, typer.Option(help="operator organization id")] = None,
                   as_json: JsonOpt = False) -> None:
    """Price lists with each entry's status under the caps in force."""
    call(lambda c: c.get("/v1/pricelist", params={"operator_org_id": operator} if operator else {}), as_json,
         columns=["id", "operator_org_id", "name", "category", "basis", "unit", "status", "cap"])


@pricelist_app.command("show")
def pricelist_show(entry_id: str, as_json: JsonOpt = False) -> None:
    """One entry with its versions."""
    call(lambda c: c.get(f"/v1/pricelist/{entry_id}"), as_json)


@pricelist_app.command("reprice")
def pricelist_reprice(entry_id: str, price: Annotated[Path, typer.Argument(help='JSON {"unit_price": "0.4"}')],
                      as_json: JsonOpt = False) -> None:
    """A new price for an entry (e.g. after the agency lowered its cap)."""
    body = read_json(price)
    call(lambda c: c.post(f"/v1/pricelist/{entry_id}/versions", body), as_json)


# --- usage ----------------------------------------------------------------------------------------------------

@usage_app.command("list")
def usage_list(period: MonthFilterOpt = None,
               payer: Annotated[str | None, typer.Option(help="payer organization id")] = None,
               limit: Annotated[int, typer.Option(help="at most this many rows")] = 200,
               as_json: JsonOpt = False) -> None:
    """Usage events you may see (as payer or issuer)."""
    params = {k: v for k, v in {"period": period, "payer_org_id": payer, "limit": limit}.items() if v}
    data = call(lambda c: c.get("/v1/usage", params=params), as_json, quiet=True)
    rows = [{**e, "quantities": " ".join(f"{k}={v}" for k, v in e["quantities"].items())} for e in data["events"]]
    emit(data if as_json else rows, as_json,
         columns=["id", "event_time", "payer_org_id", "purpose_class", "outcome", "quantities"])


@usage_app.command("reverse")
def usage_reverse(event_id: str, reason: Annotated[str, typer.Option(help="why (recorded and audited)")],
                  as_json: JsonOpt = False) -> None:
    """Correct an event by appending its reversal (the issuer)."""
    call(lambda c: c.post(f"/v1/usage/{event_id}/reverse", {"reason": reason}), as_json)


# --- bills ----------------------------------------------------------------------------------------------------

def print_bill(bill: dict[str, Any]) -> None:
    """A bill as finance reads it: header, every line with its evidence, totals and the VAT statement."""
    e = _escaped
    out.print(f"[bold]Bill {e(bill['id'])}[/bold]  {e(bill['period'])}  {e(bill['relation'])} fees  "
              f"[{'green' if bill['status'] == 'finalized' else 'yellow'}]{e(bill['status'])}[/]")
    out.print(f"  from {e(bill.get('issuer_name') or bill['issuer_org_id'])}", highlight=False)
    out.print(f"  to   {e(bill.get('payer_name') or bill['payer_org_id'])}", highlight=False)
    out.print(f"  {e(bill['vat'])}; {e(bill['event_count'])} usage events; amounts in CNY", highlight=False)
    table = Table(show_lines=False)
    for col, justify in (("#", "right"), ("meter", "left"), ("dataset / product", "left"), ("quantity", "right"),
                         ("unit price", "right"), ("cap", "right"), ("amount", "right"), ("events", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    notes = []
    for ln in bill.get("lines", []):
        kind = "" if ln["kind"] == "usage" else f" [{ln['kind']} {ln['event_period']}]"
        seg = f" ({ln['segment']})" if ln["segment"] else ""
        table.add_row(*map(e, (ln["line_no"], ln["meter"] + seg + kind, ln["dataset_id"] or ln["product_id"] or "",
                               f"{ln['quantity']} {ln['unit']}", ln["unit_price"], ln["cap"] or "-", ln["amount"],
                               ln["event_count"])))
        if ln["evidence"]:
            notes.append(f"  #{ln['line_no']}: {ln['evidence']}")
    out.print(table)
    for note in notes:
        out.print(e(note), highlight=False)
    out.print(f"  total [bold]{e(bill['total'])} CNY[/bold] (VAT {e(bill['vat_amount'])}; payable {e(bill['gross'])})"
              + (f"  sha256 {e(bill['sha256'])}" if bill.get("sha256") else ""))


def _escaped(value: object) -> str:
    """Server text as printed: never read as Rich markup (an org name or evidence may hold `[...]`)."""
    return escape(str(value))


@bills_app.command("create")
def bills_create(payer: Annotated[str, typer.Option(help="payer organization id")], period: PeriodOpt,
                 issuer: Annotated[str | None,
                 typer.Option(help="issuer organization id (default: the platform)")] = None,
                 as_json: JsonOpt = False) -> None:
    """Draft (or redraft) a payer's bill for a month."""
    body = {"payer_org_id": payer, "period": period, **({"issuer_org_id": issuer} if issuer else {})}
    data = call(lambda c: c.post("/v1/bills", body), as_json, quiet=True)
    emit(data, True) if as_json else print_bill(data)


@bills_app.command("list")
def bills_list(period: MonthFilterOpt = None,
               status: Annotated[str | None, typer.Option(help="draft or finalized")] = None,
               as_json: JsonOpt = False) -> None:
    """Bills you may see."""
    params = {k: v for k, v in {"period": period, "status": status}.items() if v}
    call(lambda c: c.get("/v1/bills", params=params), as_json,
         columns=["id", "period", "relation", "payer_name", "issuer_name", "status", "total", "event_count"])


@bills_app.command("show")
def bills_show(bill_id: str, as_json: JsonOpt = False) -> None:
    """Print a bill with every line and its evidence."""
    data = call(lambda c: c.get(f"/v1/bills/{bill_id}"), as_json, quiet=True)
    emit(data, True) if as_json else print_bill(data)


@bills_app.command("finalize")
def bills_finalize(bill_id: str, as_json: JsonOpt = False) -> None:
    """Finalize a draft (its issuer): immutable and hashed."""
    data = call(lambda c: c.post(f"/v1/bills/{bill_id}/finalize"), as_json, quiet=True)
    emit(data, True) if as_json else print_bill(data)


@bills_app.command("export")
def bills_export(period: PeriodOpt, format: Annotated[str, typer.Option(help="csv, json or parquet")] = "csv",
                 out_dir: Annotated[Path, typer.Option("--out", help="folder for the files")] = Path("."),
                 as_json: JsonOpt = False) -> None:
    """Write bills-PERIOD.FORMAT (one row per line) and usage-PERIOD.FORMAT (the usage detail)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, path in (("bills", "/v1/bills/export"), ("usage", "/v1/bills/export/usage")):
        data = call(lambda c, p=path: c.get(p, raw=True, params={"period": period, "format": format}), as_json,
                    quiet=True)
        target = out_dir / f"{name}-{period}.{format}"
        write_output(target, data)
        written[name] = str(target)
    emit({"period": period, "format": format, **written}, as_json)


@bills_app.command("reconcile")
def bills_reconcile(period: PeriodOpt, as_json: JsonOpt = False) -> None:
    """Check each line against its events to the fen; exit 1 on any difference."""
    data = call(lambda c: c.get("/v1/reconciliation", params={"period": period}), as_json, quiet=True)
    if as_json:
        emit(data, True)
    else:
        for b in data["bills"]:
            mark = "[green]ok[/green]" if not b["differences"] else f"[red]{len(b['differences'])} differences[/red]"
            out.print(f"{_escaped(b['bill_id'])} ({_escaped(b['status'])}, {b['events']} events, "
                      f"total {_escaped(b['total'])}): {mark}")
            for d in b["differences"]:
                out.print(_escaped(f"    {d}"), highlight=False)
        out.print(f"[bold]{_escaped(period)}: {'reconciled' if data['ok'] else 'NOT reconciled'}[/bold] "
                  f"({len(data['bills'])} bills)")
    if not data["ok"]:
        raise typer.Exit(1)


@bills_app.command("attribution")
def bills_attribution(period: Annotated[str, typer.Option(help="a month or a year")], as_json: JsonOpt = False
                      ) -> None:
    """Revenue attributed to providers and datasets (谁投入、谁贡献、谁收益)."""
    data = call(lambda c: c.get("/v1/attribution", params={"period": period}), as_json, quiet=True)
    if as_json:
        emit(data, True)
        return
    emit(data["providers"], False, columns=["provider_org_id", "name", "platform", "product", "total"],
         title=f"Attribution {period} by provider (CNY, final bills)")
    emit(data["datasets"], False, columns=["dataset_id", "provider_org_id", "platform", "product", "total"],
         title="by dataset")


@revenue_app.command("show")
def revenue_show(year: Annotated[int, typer.Option(help="a calendar year such as 2026")],
                 operator: Annotated[str | None, typer.Option(help="operator organization id")] = None,
                 as_json: JsonOpt = False) -> None:
    """Revenue, maximum allowed revenue, carried excess and excess for a year."""
    params: dict[str, Any] = {"year": year, **({"operator_org_id": operator} if operator else {})}
    call(lambda c: c.get("/v1/revenue", params=params), as_json,
         columns=["operator_org_id", "year", "revenue", "max_allowed", "carried_excess", "effective_max", "excess"])

