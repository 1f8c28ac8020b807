"""Rendering a disclosure report: tables with translated labels, then HTML (self-contained, with charts,
printable), Markdown and CSV (one file per table). The JSON document is the source; rendering adds no figure."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from disclosure.labels import check_lang, label

Cell = str | int | None


@dataclass(frozen=True)
class Table:
    """One table of a report: its file name, section, translated title and headers, and rows of cells."""

    name: str
    section: str
    title: str
    headers: list[str]
    rows: list[list[Cell]]


def _env() -> Environment:
    return Environment(loader=PackageLoader("disclosure", "templates"), autoescape=select_autoescape(["html", "j2"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


ENV = _env()


def tables(report: dict[str, Any], lang: str) -> list[Table]:
    """Every table of the report, in order, labelled in `lang`."""
    check_lang(lang)

    def L(key: str) -> str:
        return label(key, lang)

    def yn(value: bool | None) -> str:
        return L("none") if value is None else L("yes" if value else "no")

    def code(prefix: str) -> Callable[[str | None], str]:
        return lambda v: L("none") if v is None else label(f"{prefix}.{v}", lang)

    out: list[Table] = []

    def add(name: str, section: str, cols: list[str], rows: list[list[Cell]]) -> None:
        out.append(Table(name, section, L(f"table.{name}"), [L(f"col.{c}") for c in cols], rows))

    cut = report["cut_off"]
    cp = cut["checkpoint"]
    add("cut_off", "cut_off", ["item", "value"], [
        [L("cut_off"), cut["time"]], [L("col.origin"), cp["origin"]], [L("col.tree_size"), cp["tree_size"]],
        [L("col.root_hash"), cp["root_hash"]], [L("col.checkpoint_time"), cp["timestamp"]], [L("col.kid"), cp["kid"]],
        [L("col.audit_records"), cut["audit_records"]], [L("col.digest"), cut["audit_records_sha256"]],
        [L("col.usage_events"), cut["usage_events"]], [L("col.digest"), cut["usage_events_sha256"]]])
    agency = report["agency"]
    s = agency["summary"]
    add("summary", "agency", ["issued", "changed", "in_force"], [[s["issued"], s["changed"], s["in_force"]]])
    scope, purpose, status = code("scope"), code("purpose"), code("status")
    add("grants", "agency", ["id", "operator", "scope", "domains", "datasets", "scenario", "purpose_class",
                             "valid_from", "valid_until", "status", "issued_in_period", "in_force"],
        [[g["id"], g["operator"], scope(g["scope"]), ", ".join(g["domains"]), ", ".join(g["datasets"]),
          g["scenario"], purpose(g["purpose_class"]), g["valid_from"], g["valid_until"], status(g["status"]),
          yn(g["issued_in_period"]), yn(g["in_force"])] for g in agency["grants"]])
    add("grant_changes", "agency", ["grant", "at", "action", "from", "to", "reason"],
        [[g["id"], c["at"], label(f"action.{c['action']}", lang), status(c["from"]), status(c["to"]), c["reason"]]
         for g in agency["grants"] for c in g["changes"]])
    add("price_caps", "agency", ["version", "effective_from", "basis", "category", "unit", "cap", "vat_included"],
        [[v["version"], v["effective_from"], c.get("basis"), c.get("category"), c.get("unit"), c.get("cap"),
          yn(v["vat_included"])] for v in agency["price_caps"] for c in v["caps"]])
    add("max_allowed_revenue", "agency", ["operator", "year", "amount", "vat_included"],
        [[m["operator"], m["year"], m["amount"], yn(m["vat_included"])] for m in agency["max_allowed_revenue"]])
    ops = report["operators"]
    grade = code("grade")
    add("resources", "operators", ["operator", "dataset", "title", "grade", "version", "certificate", "revoked"],
        [[o["name"], r["dataset_id"], r["title"], grade(r["grade"]), r["version"], r["certificate_code"],
          yn(r["certificate_revoked"])] for o in ops for r in o["data_resources"]])
    add("catalogue", "operators", ["operator", "id", "name", "product", "category", "basis", "unit", "unit_price",
                                   "vat_included"],
        [[o["name"], c["id"], c["name"], c["product_name"] or c["product_id"], c["category"], c["basis"], c["unit"],
          c["unit_price"], yn(c["vat_included"])] for o in ops for c in o["catalogue"]])
    add("usage", "operators", ["operator", "runs", "runs_succeeded", "calls", "rows"],
        [[o["name"], o["usage"]["runs"], o["usage"]["runs_succeeded"], o["usage"]["calls"], o["usage"]["rows"]]
         for o in ops])
    add("usage_by_dataset", "operators", ["operator", "dataset", "runs", "rows"],
        [[o["name"], d["dataset_id"], d["runs"], d["rows"]] for o in ops for d in o["usage"]["by_dataset"]])
    add("usage_by_product", "operators", ["operator", "product", "entry", "calls", "rows", "customers"],
        [[o["name"], p["product_id"], p["entry_id"], p["calls"], p["rows"], p["customers"]]
         for o in ops for p in o["usage"]["by_product"]])
    add("revenue", "operators", ["operator", "revenue_period", "year_to_date", "max_allowed", "carried_excess",
                                 "effective_max", "excess", "over_maximum"],
        [[o["name"], r["period"], r["year_to_date"], r["max_allowed"], r["carried_excess"], r["effective_max"],
          r["excess"], yn(r["over_maximum"])] for o in ops for r in [o["revenue"]]])
    add("free_use", "operators", ["operator", "runs", "calls", "rows"],
        [[o["name"], f["runs"], f["calls"], f["rows"]] for o in ops for f in [o["free_public_interest"]]])
    names = {o["org_id"]: o["name"] for o in ops}
    scs = report["scenarios"]
    add("scenarios", "scenarios", ["grant", "operator", "scenario", "data_used", "supply", "problem", "datasets"],
        [[sc["grant_id"], names.get(sc["operator_org_id"]), sc["name"], sc["data_used"], sc["supply"], sc["problem"],
          ", ".join(sc["datasets"])] for sc in scs])
    add("scenario_indicators", "scenarios", ["scenario", "indicator", "value"],
        [[sc["name"], label(f"ind.{k}", lang), v] for sc in scs for k, v in sc["indicators"].items()])
    scenario_names = {sc["grant_id"]: sc["name"] for sc in scs}

    def show(v: Any) -> Cell:
        if isinstance(v, dict):
            return "; ".join(f"{k}: {n}" for k, n in v.items()) or "0"
        return v

    add("evaluation", "evaluation", ["subject", "name", "dimension", "indicator", "value", "formula"],
        [[label(f"subject.{e['subject']}", lang), names.get(e["id"]) or scenario_names.get(e["id"]) or e["id"],
          label(f"dimension.{i['dimension']}", lang), label(f"ind.{i['name']}", lang), show(i["value"]), i["formula"]]
         for e in report["evaluation"] for i in e["indicators"]])
    att = report["attribution"]
    add("attribution_providers", "attribution", ["provider", "platform", "product_fees", "total"],
        [[p["name"] or p["provider_org_id"], p["platform"], p["product"], p["total"]] for p in att["providers"]])
    add("attribution_datasets", "attribution", ["dataset", "provider", "platform", "product_fees", "total"],
        [[d["dataset_id"], d["provider_org_id"], d["platform"], d["product"], d["total"]] for d in att["datasets"]])
    sec = report["security"]
    add("security_summary", "security", ["item", "value"], [
        [L("item.refusals"), sec["refusals"]], [L("item.refused_runs"), sec["refused_runs"]],
        [L("item.refused_calls"), sec["refused_calls"]],
        [L("item.grants_suspended"), ", ".join(sec["grants_suspended"]) or L("none")],
        [L("item.grants_revoked"), ", ".join(sec["grants_revoked"]) or L("none")]])
    add("analysis_rejections", "security", ["code", "count"],
        [[r["code"], r["count"]] for r in sec["analysis_rejections"]])
    add("refusals", "security", ["code", "count"], [[r["code"], r["count"]] for r in sec["refusals_by_code"]])
    add("suppressed_cells", "security", ["reason", "cells"],
        [[label(f"reason.{r['reason']}", lang), r["cells"]] for r in sec["suppressed_cells"]])
    v = sec["audit_log_verification"]
    add("verification", "security", ["item", "value"], [
        [L("item.verified"), yn(v["verified"])], [L("item.records_checked"), v["records_checked"]],
        [L("item.root_matches"), yn(v["root_matches"])], [L("item.signature_valid"), yn(v["signature_valid"])],
        [L("item.sequence_gapless"), yn(v["sequence_gapless"])]])
    adj = report["adjustments"]
    add("adjustments", "adjustments", ["operator", "runs", "calls", "rows"],
        [[names.get(a["org_id"], a["org_id"]), a["runs"], a["calls"], a["rows"]] for a in adj["by_operator"]])
    return out


def title(report: dict[str, Any], lang: str) -> str:
    """The report's title: a quarter's report is the quarterly scenario report."""
    key = "title.quarter" if report["period_kind"] == "quarter" else "title"
    return f"{label(key, lang)} {report['period']}"


def to_csv(report: dict[str, Any], lang: str) -> dict[str, bytes]:
    """One CSV file per table (UTF-8 with a byte-order mark, so spreadsheet programs read Chinese correctly)."""
    files = {}
    for t in tables(report, lang):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(t.headers)
        writer.writerows([["" if c is None else c for c in row] for row in t.rows])
        files[f"{t.name}.csv"] = ("\ufeff" + buf.getvalue()).encode("utf-8")
    return files


def _md_cell(value: Cell) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any], lang: str) -> str:
    """The report as Markdown: the title, the status, then each section's tables."""
    return ENV.get_template("report.md.j2").render(**_context(report, lang), cell=_md_cell)


def to_html(report: dict[str, Any], lang: str, *, signature: dict[str, Any] | None = None) -> str:
    """The report as one self-contained, printable HTML page with inline SVG charts."""
    return ENV.get_template("report.html.j2").render(**_context(report, lang), charts=_charts(report, lang),
                                                     signature=signature)


SECTIONS = ("cut_off", "agency", "operators", "scenarios", "evaluation", "attribution", "security", "adjustments")


def _context(report: dict[str, Any], lang: str) -> dict[str, Any]:
    all_tables = tables(report, lang)
    sections = [(label(f"section.{s}", lang), [t for t in all_tables if t.section == s]) for s in SECTIONS]
    return {"report": report, "lang": lang, "title": title(report, lang), "sections": sections,
            "draft": report["status"] == "draft", "L": lambda key: label(key, lang)}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str
    width: float


def bars(items: list[tuple[str, float, str]]) -> list[Bar]:
    """Horizontal bars for an inline SVG chart: (label, value, text), scaled to the largest value."""
    top = max((v for _, v, _ in items), default=0.0) or 1.0
    return [Bar(name, value, text, 300.0 * value / top) for name, value, text in items]


def _charts(report: dict[str, Any], lang: str) -> list[tuple[str, list[Bar]]]:
    ops = report["operators"]
    rows: dict[str, int] = {}
    for o in ops:
        for d in o["usage"]["by_dataset"]:
            rows[d["dataset_id"]] = rows.get(d["dataset_id"], 0) + d["rows"]
    return [
        (label("chart.runs", lang), bars([(o["name"], float(o["usage"]["runs"]), str(o["usage"]["runs"]))
                                           for o in ops])),
        (label("chart.rows", lang), bars([(k, float(v), str(v)) for k, v in sorted(rows.items())])),
        (label("chart.revenue", lang), bars([(o["name"], float(o["revenue"]["period"]), o["revenue"]["period"])
                                              for o in ops])),
    ]
