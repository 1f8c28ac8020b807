"""Usage events: append-only facts with deterministic ids; replays count once, conflicting replays are refused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from metering.canonical import canonical_sha256, utc_text
from metering.errors import InvalidPricing, UsageConflict
from metering.meters import METERS, Outcome, PurposeClass, Relation


class EventKind(StrEnum):
    """What was accessed. Reversals correct an earlier event by appending its negation."""

    RUN = "run"
    DOWNLOAD = "download"
    CALL = "call"
    SUBSCRIPTION = "subscription"
    PACKAGE = "package"
    REVERSAL = "reversal"


@dataclass(frozen=True, slots=True)
class DatasetUse:
    """Rows and bytes of one dataset that an access read (the basis of revenue attribution)."""

    dataset_id: str
    rows: int = 0
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One metered access. Quantities are integers in each meter's base unit (rows, bytes, microseconds).

    `id` is derived from the logical access (`run:<run id>`, `download:<download id>`, ...), so a replay of
    the same access has the same id. `ingested_at` and `trace_id` describe the delivery, not the access, and
    are left out of the payload that replays are compared on.
    """

    id: str
    kind: str
    relation: str
    event_time: datetime
    ingested_at: datetime
    issuer_org_id: str
    payer_org_id: str
    operator_org_id: str
    purpose_class: str
    outcome: str
    quantities: tuple[tuple[str, int], ...]
    grant_id: str | None = None
    datasets: tuple[DatasetUse, ...] = ()
    product_id: str | None = None
    entry_id: str | None = None
    free_reason: str | None = None
    trace_id: str | None = None
    source_id: str = ""
    reverses: str | None = None
    reason: str | None = None

    @property
    def chargeable(self) -> bool:
        """Only succeeded accesses are charged (a reversal takes its original's outcome)."""
        return self.outcome == Outcome.SUCCEEDED

    @property
    def free(self) -> bool:
        """Public-interest use: free in both relations."""
        return self.purpose_class == PurposeClass.PUBLIC_INTEREST

    def quantity(self, meter: str) -> int:
        """The event's quantity on `meter` (0 when it does not count it)."""
        for name, value in self.quantities:
            if name == meter:
                return value
        return 0

    def evidence(self) -> str:
        """Why this event is free, naming the grant or the approval."""
        if self.free_reason:
            return self.free_reason
        return f"grant {self.grant_id} has purpose class public_interest"


def event_id(kind: str, source_id: str) -> str:
    """The deterministic id of the event for one logical access, e.g. `run:run_3f9c…`."""
    return f"{kind}:{source_id}"


def quantities(values: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """Quantities as the sorted, hashable pairs events carry."""
    return tuple(sorted((k, int(v)) for k, v in values.items()))


def _iso(at: datetime) -> str:
    if at.tzinfo is None:
        raise InvalidPricing("usage times must be aware datetimes", code="invalid_usage_event")
    return utc_text(at)


def to_record(event: UsageEvent) -> dict[str, Any]:
    """Every field as JSON-able values (times in RFC 3339 UTC)."""
    return {
        "id": event.id, "kind": event.kind, "relation": event.relation, "event_time": _iso(event.event_time),
        "ingested_at": _iso(event.ingested_at), "issuer_org_id": event.issuer_org_id,
        "payer_org_id": event.payer_org_id, "operator_org_id": event.operator_org_id,
        "purpose_class": event.purpose_class, "outcome": event.outcome,
        "quantities": dict(event.quantities), "grant_id": event.grant_id,
        "datasets": [{"dataset_id": d.dataset_id, "rows": d.rows, "bytes": d.bytes} for d in event.datasets],
        "product_id": event.product_id, "entry_id": event.entry_id, "free_reason": event.free_reason,
        "trace_id": event.trace_id, "source_id": event.source_id, "reverses": event.reverses,
        "reason": event.reason,
    }


def payload_digest(event: UsageEvent) -> str:
    """SHA-256 of the access itself (every field but `ingested_at` and `trace_id`): replays compare on it."""
    record = to_record(event)
    del record["ingested_at"], record["trace_id"]
    return canonical_sha256(record)


def validate(event: UsageEvent) -> UsageEvent:
    """Check an event's vocabulary and arithmetic; returns it unchanged."""
    def bad(message: str) -> InvalidPricing:
        return InvalidPricing(f"usage event {event.id}: {message}", code="invalid_usage_event", event_id=event.id)

    try:
        kind, relation = EventKind(event.kind), Relation(event.relation)
        Outcome(event.outcome), PurposeClass(event.purpose_class)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if not event.id or len(event.id) > 160:
        raise bad("an id of 1 to 160 characters is required")
    _iso(event.event_time), _iso(event.ingested_at)
    sign = -1 if kind == EventKind.REVERSAL else 1
    for name, value in event.quantities:
        meter = METERS.get(name)
        if meter is None or meter.relation != relation:
            raise bad(f"meter {name!r} does not belong to {relation.value} fees")
        if value * sign < 0:
            raise bad(f"quantity {name}={value} has the wrong sign for a {kind.value} event")
    if len({d.dataset_id for d in event.datasets}) != len(event.datasets):
        raise bad("each dataset is named once")
    counted = dict(event.quantities)
    for name, attr in (("rows_scanned", "rows"), ("bytes_scanned", "bytes")):
        if name not in counted:
            continue  # other events carry datasets only as attribution weights
        if event.datasets and sum(getattr(d, attr) for d in event.datasets) != counted[name]:
            raise bad(f"{name} per dataset does not add up to {counted[name]}")
        if counted[name] and not event.datasets:
            raise bad(f"{name} needs the datasets that were scanned")
    if event.free and not (event.grant_id or event.free_reason):
        raise bad("public-interest use needs evidence: a grant or an approval reason")
    if (kind == EventKind.REVERSAL) != (event.reverses is not None):
        raise bad("a reversal, and only a reversal, names the event it reverses")
    if kind == EventKind.REVERSAL and not (event.reason or "").strip():
        raise bad("a reversal carries a reason")
    if relation == Relation.PRODUCT and not event.entry_id:
        raise bad("a product-fee event names its price-list entry")
    return event


def reversal_of(original: UsageEvent, *, reason: str, at: datetime, trace_id: str | None = None) -> UsageEvent:
    """The correction of `original`: its exact negation, at its own event time, carrying `reason`.

    Its id is derived from the original's, so an event is reversed at most once; the negation is rated with
    the schedule that rated the original, and lands on the original's bill or, once that is final, as an
    adjustment on the payer's next bill.
    """
    if original.kind == EventKind.REVERSAL:
        raise InvalidPricing(f"{original.id} is itself a reversal; correct it with a new event",
                             code="cannot_reverse_reversal", event_id=original.id)
    if not reason.strip():
        raise InvalidPricing("a reversal needs a reason", code="reason_required")
    return replace(
        original, id=event_id(EventKind.REVERSAL, original.id), kind=EventKind.REVERSAL.value, ingested_at=at,
        quantities=tuple((k, -v) for k, v in original.quantities),
        datasets=tuple(DatasetUse(d.dataset_id, -d.rows, -d.bytes) for d in original.datasets),
        trace_id=trace_id, source_id=original.id, reverses=original.id, reason=reason.strip())


def dedupe(events: Iterable[UsageEvent]) -> list[UsageEvent]:
    """Events once each, sorted by id: an identical replay is dropped, a conflicting one refused.

    The earliest delivery's `ingested_at` (and trace id) is kept, whatever order deliveries are given in. Only
    ids delivered more than once have their payloads compared.
    """
    ordered = sorted(events, key=lambda e: (e.id, e.ingested_at, e.trace_id or ""))
    out: list[UsageEvent] = []
    first_digest: str | None = None
    for e in ordered:
        if out and out[-1].id == e.id:
            if first_digest is None:
                first_digest = payload_digest(out[-1])
            if payload_digest(e) != first_digest:
                raise UsageConflict(f"usage event {e.id} was already recorded with a different payload",
                                    code="usage_conflict", event_id=e.id)
            continue
        out.append(e)
        first_digest = None
    return out
