"""Billing exports for finance: CSV (UTF-8 with BOM, for Excel), JSON and Parquet, plus a usage-detail file."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from metering.bills import Bill
from metering.events import UsageEvent, to_record
from metering.meters import METERS
from metering.money import CURRENCY, fen_text, text

FORMATS = ("csv", "json", "parquet")
BOM = "\ufeff"


@dataclass(frozen=True)
class IssuedBill:
    """A bill with its store identity and state, as finance exports it."""

    bill_id: str
    status: str
    sha256: str | None
    bill: Bill
    names: Mapping[str, str]


_LINE_COLUMNS = ("bill_id", "status", "period", "relation", "payer_org_id", "payer_name", "issuer_org_id",
                 "issuer_name", "currency", "vat_included", "vat_rate", "line_no", "kind", "event_period", "meter",
                 "unit", "dataset_id", "product_id", "entry_id", "segment", "purpose_class", "outcome", "quantity",
                 "unit_price", "cap", "amount", "event_count", "events_sha256", "schedule", "evidence",
                 "bill_total", "bill_vat_amount", "bill_sha256")
_DECIMALS = {"quantity": pa.decimal128(38, 9), "unit_price": pa.decimal128(38, 10), "cap": pa.decimal128(38, 10),
             "amount": pa.decimal128(20, 2), "bill_total": pa.decimal128(20, 2),
             "bill_vat_amount": pa.decimal128(20, 2), "vat_rate": pa.decimal128(9, 4)}


def line_rows(bills: Sequence[IssuedBill]) -> list[dict[str, Any]]:
    """One row per bill line, with its bill's header repeated (a flat table for spreadsheets)."""
    rows = []
    for ib in bills:
        b = ib.bill
        for line in b.lines:
            rows.append({
                "bill_id": ib.bill_id, "status": ib.status, "period": b.period, "relation": b.relation,
                "payer_org_id": b.payer_org_id, "payer_name": ib.names.get(b.payer_org_id, ""),
                "issuer_org_id": b.issuer_org_id, "issuer_name": ib.names.get(b.issuer_org_id, ""),
                "currency": CURRENCY, "vat_included": b.vat.included, "vat_rate": b.vat.rate,
                "line_no": line.line_no, "kind": line.kind, "event_period": line.event_period,
                "meter": line.meter, "unit": line.unit, "dataset_id": line.dataset_id,
                "product_id": line.product_id, "entry_id": line.entry_id, "segment": line.segment,
                "purpose_class": line.purpose_class, "outcome": line.outcome, "quantity": line.quantity,
                "unit_price": line.unit_price, "cap": line.cap, "amount": line.amount,
                "event_count": line.event_count, "events_sha256": line.events_sha256, "schedule": line.schedule,
                "evidence": line.evidence, "bill_total": b.total, "bill_vat_amount": b.vat_amount,
                "bill_sha256": ib.sha256 or ""})
    return rows


def _cell(value: Any, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return fen_text(value) if column in ("amount", "bill_total", "bill_vat_amount") else text(value)
    return str(value)


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """CSV in UTF-8 with a byte-order mark (Excel in China opens it correctly), CRLF line ends."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c), c) for c in columns])
    return (BOM + buf.getvalue()).encode("utf-8")


def to_parquet(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """Parquet with exact decimal columns for money and quantities."""
    arrays = []
    fields = []
    for c in columns:
        values = [r.get(c) for r in rows]
        typ = _DECIMALS.get(c)
        if typ is None:
            sample = next((v for v in values if v is not None), "")
            typ = pa.bool_() if isinstance(sample, bool) else pa.int64() if isinstance(sample, int) else pa.string()
            if typ == pa.string():
                values = [None if v is None else str(v) for v in values]
        arrays.append(pa.array(values, type=typ))
        fields.append(pa.field(c, typ))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def bills_json(bills: Sequence[IssuedBill]) -> bytes:
    """Every bill with its header, totals, VAT statement and lines, as UTF-8 JSON."""
    out = []
    for ib in bills:
        rec = ib.bill.record()
        rec.update({"bill_id": ib.bill_id, "status": ib.status, "sha256": ib.sha256,
                    "payer_name": ib.names.get(ib.bill.payer_org_id, ""),
                    "issuer_name": ib.names.get(ib.bill.issuer_org_id, ""), "vat": ib.bill.vat.label()})
        out.append(rec)
    return json.dumps({"currency": CURRENCY, "bills": out}, ensure_ascii=False, indent=2).encode("utf-8")


def export_bills(bills: Sequence[IssuedBill], fmt: str) -> bytes:
    """The bills file in `fmt` (csv, json or parquet)."""
    if fmt == "json":
        return bills_json(bills)
    rows = line_rows(bills)
    return to_csv(rows, _LINE_COLUMNS) if fmt == "csv" else to_parquet(rows, _LINE_COLUMNS)


USAGE_COLUMNS = ("bill_id", "event_id", "kind", "relation", "event_time", "ingested_at", "issuer_org_id",
                 "payer_org_id", "operator_org_id", "grant_id", "purpose_class", "outcome", "product_id",
                 "entry_id", "datasets", *METERS, "free_reason", "reverses", "reason", "trace_id")


def usage_rows(events: Sequence[tuple[str, UsageEvent]]) -> list[dict[str, Any]]:
    """One row per (bill, event): every metered quantity in its base unit (rows, bytes, microseconds)."""
    rows = []
    for bill_id, e in events:
        rec = to_record(e)
        row = {"bill_id": bill_id, "event_id": e.id, **{k: rec[k] for k in (
            "kind", "relation", "event_time", "ingested_at", "issuer_org_id", "payer_org_id", "operator_org_id",
            "grant_id", "purpose_class", "outcome", "product_id", "entry_id", "free_reason", "reverses", "reason",
            "trace_id")}}
        row["datasets"] = ";".join(f"{d.dataset_id}:{d.rows}:{d.bytes}" for d in e.datasets)
        for meter in METERS:
            row[meter] = e.quantity(meter)
        rows.append(row)
    return rows


def export_usage(events: Sequence[tuple[str, UsageEvent]], fmt: str) -> bytes:
    """The usage-detail file in `fmt`: the events behind the exported bills."""
    rows = usage_rows(events)
    if fmt == "json":
        return json.dumps({"events": rows}, ensure_ascii=False, indent=2, default=str).encode("utf-8")
    return to_csv(rows, USAGE_COLUMNS) if fmt == "csv" else to_parquet(rows, USAGE_COLUMNS)
