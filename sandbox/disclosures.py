"""Disclosure reports from the control store: gather the facts at a cut-off, build, sign and publish.

A draft's cut-off is now. Publishing a closed period fixes its cut-off (the time of publication) and the audit
checkpoint it cites, and stores the canonical JSON exactly as signed; rebuilding with that cut-off and checkpoint
gives the same bytes. Usage events count when they happened in the period and arrived before the cut-off; events
of earlier periods that arrived after the previous published report's cut-off are this report's adjustments.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from disclosure.checkpoint import CheckpointError, VerifierKey, verify_checkpoint
from disclosure.facts import (
    AttributionFact,
    BillLineFact,
    CatalogueItem,
    CheckpointFact,
    DatasetFact,
    Facts,
    GrantChange,
    GrantFact,
    LogVerification,
    OrgFact,
    PriceCapFact,
    RevenueCapFact,
)
from disclosure.merkle import leaf_hash, root_from_leaf_hashes
from disclosure.periods import ReportPeriod
from disclosure.report import build_report
from disclosure.sealed import report_bytes, sign_report
from disclosure.signing import KeyRing, canonical_json
from sandbox.audit import leaf_record
from sandbox.audit_log import AuditLog, checkpoint_of
from sandbox.billing.convert import event_columns, event_from_values
from sandbox.billing.ledger import FINALIZED
from sandbox.clock import as_utc
from sandbox.errors import Conflict, InvalidInput, NotFound
from sandbox.store.models import (
    AuditCheckpoint,
    AuditEvent,
    BillAttribution,
    BillLineRow,
    BillRow,
    Certificate,
    Dataset,
    DatasetVersion,
    DisclosureRow,
    Grant,
    GrantEvent,
    Organization,
    PriceCapVersion,
    PriceListEntry,
    PriceListVersion,
    Product,
    RevenueCapRow,
    UsageEventRow,
)

_EVENTS = AuditEvent.__table__


@dataclass(frozen=True)
class Built:
    """A built report: the document, its canonical bytes and the signature document."""

    report: dict[str, Any]
    data: bytes
    signature: dict[str, Any]


def parse_period(text: str) -> ReportPeriod:
    """A period from user input; a bad one is `invalid_period` (422)."""
    from disclosure.periods import InvalidPeriod

    try:
        return ReportPeriod.parse(text)
    except InvalidPeriod as exc:
        raise InvalidInput(exc.message, code="invalid_period", period=text) from None


def published(session: Session, period: str) -> DisclosureRow | None:
    """The published report of `period`, if any."""
    return session.get(DisclosureRow, period)


def build(session: Session, audit_log: AuditLog, keyring: KeyRing, period: ReportPeriod, *, tz_name: str,
          now: datetime, cut_off: datetime | None = None, checkpoint_size: int | None = None) -> Built:
    """Build and sign the report of `period`: a draft at `now`, or the final report at a fixed cut-off."""
    tz = ZoneInfo(tz_name)
    draft = cut_off is None
    cut = now if cut_off is None else cut_off
    if checkpoint_size is None:
        checkpoint = _checkpoint_covering(session, audit_log, period, tz, cut)
    else:
        found = session.scalar(select(AuditCheckpoint).where(AuditCheckpoint.size == checkpoint_size)
                               .order_by(AuditCheckpoint.id).limit(1))
        if found is None:
            raise NotFound(f"no audit checkpoint of size {checkpoint_size}", code="checkpoint_not_found")
        checkpoint = found
    facts = gather(session, keyring, period, tz_name=tz_name, cut_off=cut, draft=draft, checkpoint=checkpoint,
                   origin=audit_log.origin)
    report = build_report(facts)
    data = report_bytes(report)
    return Built(report, data, sign_report(keyring, data))


def publish(session: Session, audit_log: AuditLog, keyring: KeyRing, period: ReportPeriod, *, tz_name: str,
            now: datetime, actor: str) -> DisclosureRow:
    """Publish a closed period: cut-off now, the checkpoint covering it; refused while the period is open."""
    tz = ZoneInfo(tz_name)
    if not period.closed(now, tz):
        raise Conflict(f"period {period} has not closed yet (it ends {period.end(tz).isoformat()}); its report "
                       "is a draft until then", code="period_not_closed", period=str(period))
    if published(session, str(period)) is not None:
        raise Conflict(f"period {period} is already published", code="already_published", period=str(period))
    built = build(session, audit_log, keyring, period, tz_name=tz_name, now=now, cut_off=now)
    row = DisclosureRow(period=str(period), cut_off=now,
                        checkpoint_size=built.report["cut_off"]["checkpoint"]["tree_size"],
                        report=built.data.decode("utf-8"), sha256=built.signature["sha256"],
                        signature=built.signature, published_at=now, published_by=actor)
    session.add(row)
    session.flush()
    return row


def rebuild(session: Session, audit_log: AuditLog, keyring: KeyRing, row: DisclosureRow, *, tz_name: str) -> Built:
    """Rebuild a published report from the log and the events at its stored cut-off (a check: same bytes)."""
    return build(session, audit_log, keyring, ReportPeriod.parse(row.period), tz_name=tz_name, now=row.cut_off,
                 cut_off=as_utc(row.cut_off), checkpoint_size=row.checkpoint_size)


def _checkpoint_covering(session: Session, audit_log: AuditLog, period: ReportPeriod, tz: ZoneInfo,
                         cut_off: datetime) -> AuditCheckpoint:
    """The earliest checkpoint whose tree holds every record before min(cut-off, period end); signed if none."""
    audit_log.integrate()
    last = session.scalar(select(func.max(_EVENTS.c.seq)).where(_EVENTS.c.at < period.end(tz), _EVENTS.c.at <= cut_off,
                                                                 _EVENTS.c.seq.is_not(None)))
    need = 0 if last is None else int(last) + 1
    row = session.scalar(select(AuditCheckpoint).where(AuditCheckpoint.size >= max(need, 1))
                         .order_by(AuditCheckpoint.size, AuditCheckpoint.id).limit(1))
    if row is None:
        row = audit_log.checkpoint("disclosure", force=True)
    return row


def _grant_status(changes: list[GrantChange], cut_off: datetime) -> str:
    status = "active"
    for c in sorted(changes, key=lambda c: c.at):
        if c.at <= cut_off:
            status = c.to_status
    return status


def gather(session: Session, keyring: KeyRing, period: ReportPeriod, *, tz_name: str, cut_off: datetime,
           draft: bool, checkpoint: AuditCheckpoint, origin: str) -> Facts:
    """Every fact the report of `period` needs, as the store held it at `cut_off`."""
    tz = ZoneInfo(tz_name)
    start, end = period.start(tz), period.end(tz)
    orgs = tuple(OrgFact(o.id, o.name, o.kind) for o in session.scalars(
        select(Organization).where(Organization.created_at <= cut_off).order_by(Organization.id)))
    changes = [GrantChange(e.grant_id, as_utc(e.at), e.action, e.from_status, e.to_status, e.reason)
               for e in session.scalars(select(GrantEvent).where(GrantEvent.at <= cut_off).order_by(GrantEvent.id))]
    by_grant: dict[str, list[GrantChange]] = {}
    for c in changes:
        by_grant.setdefault(c.grant_id, []).append(c)
    grants = tuple(
        GrantFact(g.id, g.operator_org_id, g.scope, tuple(g.domains), tuple(g.datasets), g.scenario, g.purpose_class,
                  as_utc(g.valid_from), as_utc(g.valid_until), _grant_status(by_grant.get(g.id, []), cut_off),
                  as_utc(g.created_at))
        for g in session.scalars(select(Grant).where(Grant.created_at <= cut_off).order_by(Grant.id)))
    return Facts(
        period=period, time_zone=tz_name, period_start=start, period_end=end, cut_off=cut_off, draft=draft,
        orgs=orgs, grants=grants, grant_changes=tuple(changes), datasets=_datasets(session, cut_off),
        catalogue=_catalogue(session, cut_off), price_caps=_price_caps(session, start, end, cut_off),
        revenue_caps=_revenue_caps(session, cut_off), events=_events(session, start, end, cut_off),
        late_events=_late_events(session, period, tz, start, cut_off),
        audit=_audit(session, start, end, cut_off, checkpoint.size),
        checkpoint=_checkpoint_fact(checkpoint, origin), verification=verify_log(session, keyring, checkpoint),
        bill_lines=_bill_lines(session, period, cut_off), year_revenue=_year_revenue(session, period, cut_off),
        attributions=_attributions(session, period, cut_off))


def _datasets(session: Session, cut_off: datetime) -> tuple[DatasetFact, ...]:
    newest = (select(DatasetVersion.dataset_id, func.max(DatasetVersion.version).label("v"))
              .where(DatasetVersion.certified_at.is_not(None), DatasetVersion.certified_at <= cut_off)
              .group_by(DatasetVersion.dataset_id).subquery())
    rows = session.scalars(select(DatasetVersion).join(newest, and_(
        DatasetVersion.dataset_id == newest.c.dataset_id, DatasetVersion.version == newest.c.v))
        .order_by(DatasetVersion.dataset_id))
    providers = dict(session.execute(select(Dataset.id, Dataset.provider_org_id)).all())
    out = []
    for v in rows:
        cert = session.get(Certificate, v.certificate_code) if v.certificate_code else None
        revoked = cert is not None and cert.revoked_at is not None and as_utc(cert.revoked_at) <= cut_off
        out.append(DatasetFact(v.dataset_id, providers[v.dataset_id], v.title, v.domain, v.grade, v.version,
                               v.certificate_code, revoked))
    return tuple(out)


def _catalogue(session: Session, cut_off: datetime) -> tuple[CatalogueItem, ...]:
    out = []
    for e in session.scalars(select(PriceListEntry).where(PriceListEntry.created_at <= cut_off)
                             .order_by(PriceListEntry.id)):
        price = session.scalar(select(PriceListVersion).where(
            PriceListVersion.entry_id == e.id, PriceListVersion.created_at <= cut_off,
            PriceListVersion.effective_from <= cut_off).order_by(PriceListVersion.effective_from.desc(),
                                                                 PriceListVersion.version.desc()).limit(1))
        product = _listed_product(session, e.id, cut_off)
        out.append(CatalogueItem(e.operator_org_id, e.id, e.name, e.category, e.basis, e.unit,
                                 price.unit_price if price else None, price.vat_included if price else False,
                                 product.id if product else e.product_id, product.name if product else None))
    return tuple(out)


def _listed_product(session: Session, entry_id: str, cut_off: datetime) -> Product | None:
    """The product an entry prices that was listed at the cut-off (listed by then, and not taken off before)."""
    for p in session.scalars(select(Product).where(Product.entry_id == entry_id, Product.listed_at.is_not(None),
                                                   Product.listed_at <= cut_off).order_by(Product.id)):
        if p.status == "listed" or p.updated_at > cut_off:
            return p
    return None


def _price_caps(session: Session, start: datetime, end: datetime, cut_off: datetime) -> tuple[PriceCapFact, ...]:
    rows = list(session.scalars(select(PriceCapVersion).where(PriceCapVersion.created_at <= cut_off)
                                .order_by(PriceCapVersion.effective_from, PriceCapVersion.version)))
    in_force = [r for r in rows if as_utc(r.effective_from) <= start][-1:]
    during = [r for r in rows if start < as_utc(r.effective_from) < end]
    return tuple(PriceCapFact(r.version, as_utc(r.effective_from), r.vat_included, tuple(r.caps))
                 for r in in_force + during)


def _revenue_caps(session: Session, cut_off: datetime) -> tuple[RevenueCapFact, ...]:
    latest: dict[tuple[str, int], RevenueCapRow] = {}
    for r in session.scalars(select(RevenueCapRow).where(RevenueCapRow.created_at <= cut_off)
                             .order_by(RevenueCapRow.id)):
        latest[(r.operator_org_id, r.year)] = r
    return tuple(RevenueCapFact(r.operator_org_id, r.year, r.amount, r.vat_included)
                 for _, r in sorted(latest.items()))


def _events(session: Session, start: datetime, end: datetime, cut_off: datetime) -> tuple[Any, ...]:
    q = select(*event_columns()).where(UsageEventRow.event_time >= start, UsageEventRow.event_time < end,
                                       UsageEventRow.ingested_at <= cut_off).order_by(UsageEventRow.id)
    return tuple(event_from_values(v) for v in session.execute(q))


def _late_events(session: Session, period: ReportPeriod, tz: ZoneInfo, start: datetime, cut_off: datetime
                 ) -> tuple[Any, ...]:
    before = session.get(DisclosureRow, str(period.previous()))
    after = UsageEventRow.ingested_at >= start
    if before is not None and as_utc(before.cut_off) >= start:
        after = UsageEventRow.ingested_at > as_utc(before.cut_off)
    q = select(*event_columns()).where(UsageEventRow.event_time < start, after,
                                       UsageEventRow.ingested_at <= cut_off).order_by(UsageEventRow.id)
    return tuple(event_from_values(v) for v in session.execute(q))


def _audit(session: Session, start: datetime, end: datetime, cut_off: datetime, size: int
           ) -> tuple[dict[str, Any], ...]:
    rows = session.execute(select(_EVENTS).where(_EVENTS.c.seq.is_not(None), _EVENTS.c.seq < size,
                                                 _EVENTS.c.at >= start, _EVENTS.c.at < end, _EVENTS.c.at <= cut_off)
                           .order_by(_EVENTS.c.seq)).mappings()
    return tuple(leaf_record(r, int(r["seq"])) for r in rows)


def _checkpoint_fact(row: AuditCheckpoint, origin: str) -> CheckpointFact:
    cp = checkpoint_of(row)
    return CheckpointFact(cp.origin or origin, row.size, base64.b64encode(bytes(row.root)).decode("ascii"),
                          as_utc(row.timestamp), row.kid, row.note)


def verify_log(session: Session, keyring: KeyRing, row: AuditCheckpoint) -> LogVerification:
    """Recompute the Merkle root of the first `size` records from the stored records, and check the checkpoint's
    signature with the checkpoint keys: what a regulator's offline verification of a full export does."""
    cp = checkpoint_of(row)
    keys = [VerifierKey(cp.origin, k) for k in keyring.public_keys("checkpoint").values()]
    try:
        verify_checkpoint(row.note, keys, origin=cp.origin)
        signature_valid = True
    except CheckpointError:
        signature_valid = False
    hashes: list[bytes] = []
    gapless = True
    after = -1
    while True:
        batch = session.execute(select(_EVENTS).where(_EVENTS.c.seq > after, _EVENTS.c.seq < row.size)
                                .order_by(_EVENTS.c.seq).limit(5000)).mappings().all()
        if not batch:
            break
        for r in batch:
            seq = int(r["seq"])
            gapless = gapless and seq == len(hashes)
            hashes.append(leaf_hash(canonical_json(leaf_record(r, seq))))
        after = int(batch[-1]["seq"])
    gapless = gapless and len(hashes) == row.size
    root_matches = gapless and root_from_leaf_hashes(hashes) == bytes(row.root)
    return LogVerification(len(hashes), root_matches, signature_valid, gapless)


def _final_bills(cut_off: datetime) -> Any:
    return and_(BillRow.status == FINALIZED, BillRow.finalized_at.is_not(None), BillRow.finalized_at <= cut_off)


def _bill_lines(session: Session, period: ReportPeriod, cut_off: datetime) -> tuple[BillLineFact, ...]:
    q = (select(BillLineRow, BillRow).join(BillRow, BillRow.id == BillLineRow.bill_id)
         .where(_final_bills(cut_off), BillRow.period.in_(period.months))
         .order_by(BillRow.id, BillLineRow.line_no))
    return tuple(BillLineFact(b.id, b.issuer_org_id, b.payer_org_id, b.relation, b.period, line.entry_id,
                              line.product_id, line.dataset_id, line.amount) for line, b in session.execute(q).all())


def _year_revenue(session: Session, period: ReportPeriod, cut_off: datetime) -> dict[str, dict[int, Any]]:
    last = period.months[-1]
    out: dict[str, dict[int, Any]] = {}
    for issuer, bill_period, total in session.execute(select(BillRow.issuer_org_id, BillRow.period, BillRow.total)
                                                      .where(_final_bills(cut_off), BillRow.relation == "product",
                                                             BillRow.period <= last)):
        years = out.setdefault(issuer, {})
        year = int(bill_period[:4])
        years[year] = years.get(year, 0) + total
    return out


def _attributions(session: Session, period: ReportPeriod, cut_off: datetime) -> tuple[AttributionFact, ...]:
    q = (select(BillAttribution).join(BillRow, BillRow.id == BillAttribution.bill_id)
         .where(_final_bills(cut_off), BillAttribution.period.in_(period.months))
         .order_by(BillAttribution.id))
    return tuple(AttributionFact(a.period, a.relation, a.dataset_id, a.provider_org_id, a.amount)
                 for a in session.scalars(q))


def stored_report(row: DisclosureRow) -> dict[str, Any]:
    """A published report's document."""
    data: dict[str, Any] = json.loads(row.report)
    return data
