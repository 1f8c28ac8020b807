"""Usage on the run path: a run's start recorded through the group-commit recorder, its usage event committed with
the run record and audit row, downloads metered with their audit row, replays deduplicated, corrections appended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from opentelemetry import trace
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from metering.events import DatasetUse, EventKind, UsageEvent, event_id, payload_digest, quantities, reversal_of
from metering.events import validate as validate_event
from metering.meters import Outcome, Relation
from metering.metrics import Metrics
from metering.money import Vat
from sandbox import runs
from sandbox.billing.convert import event_from_row, event_insert, event_row
from sandbox.clock import Clock
from sandbox.errors import Conflict, InvalidInput, NotFound
from sandbox.executor import RunStatus, scan_stats
from sandbox.jobs import GrantTable
from sandbox.recorder import Execute, Pending, Prepared, Recorder, Write
from sandbox.run_inputs import AnyGrant, AnyJob
from sandbox.run_record import RUN_FINISH, RUN_INSERT, AnyRun, RunRecord, finish_params
from sandbox.store.models import Grant, Organization, Run, UsageEventRow
from sandbox.store.types import new_id

log = logging.getLogger("sluice.metering")


def current_trace_id() -> str | None:
    """The trace id of the current OpenTelemetry span (32 hex digits), if there is a valid one."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def scans_by_dataset(service: runs.RunService, grant: AnyGrant, tables: dict[str, GrantTable], job: AnyJob
                     ) -> tuple[DatasetUse, ...]:
    """Rows and bytes a run read per dataset (the same deterministic figures as the run record's totals)."""
    by_lower = {name.lower(): t for name, t in tables.items()}
    wanted: dict[str, tuple[GrantTable, set[str]]] = {}
    for name, cols in (job.analysis.get("columns_read") or {}).items():
        table = by_lower.get(name.lower())
        if table is None:
            continue
        entry = wanted.setdefault(table.version.dataset_id, (table, set()))
        entry[1].update(cols)
    out = []
    for dataset_id, (table, cols) in sorted(wanted.items()):
        parquet = service.prepared(grant, table)[1]
        stats = scan_stats([parquet], {parquet.name: sorted(cols)})
        out.append(DatasetUse(dataset_id, stats.rows, stats.bytes))
    return tuple(out)


def run_event(run: AnyRun, grant: AnyGrant, issuer_org_id: str, datasets: Sequence[DatasetUse], now: datetime,
              trace_id: str | None = None) -> UsageEvent:
    """The platform-fee event of a run, whatever its outcome (only a succeeded run is chargeable)."""
    if not datasets:
        datasets = tuple(DatasetUse(d) for d in sorted(run.dataset_versions))
    q = {"runs": 1, "rows_scanned": sum(d.rows for d in datasets), "bytes_scanned": sum(d.bytes for d in datasets),
         "cpu_seconds": round((run.cpu_ms or 0) * 1000)}
    return validate_event(UsageEvent(
        id=event_id(EventKind.RUN, run.id), kind=EventKind.RUN.value, relation=Relation.PLATFORM.value,
        event_time=run.created_at, ingested_at=now, issuer_org_id=issuer_org_id, payer_org_id=run.operator_org_id,
        operator_org_id=run.operator_org_id, purpose_class=grant.purpose_class, outcome=Outcome(run.status).value,
        quantities=quantities(q), grant_id=grant.id, datasets=tuple(datasets),
        trace_id=trace_id or current_trace_id(), source_id=run.id))


def product_event(*, kind: str, source_id: str, entry_id: str, product_id: str | None, customer_org_id: str,
                  operator_org_id: str, grant: Grant | None, counts: dict[str, int],
                  datasets: Sequence[DatasetUse], outcome: str, at: datetime, free_reason: str | None = None,
                  ) -> UsageEvent:
    """A product-fee event (a call, a subscription period or a package purchase) billed by the operator to the
    customer. Free when the product's grant is public-interest or `free_reason` names the agency's approval of a
    public-interest subscription. Its id is `<kind>:<source_id>`: give the call's idempotency-derived id, or
    `<subscription id>:<period>` for a subscription, so a replay counts once."""
    public = (grant is not None and grant.purpose_class == "public_interest") or free_reason is not None
    return validate_event(UsageEvent(
        id=event_id(kind, source_id), kind=kind, relation=Relation.PRODUCT.value, event_time=at, ingested_at=at,
        issuer_org_id=operator_org_id, payer_org_id=customer_org_id, operator_org_id=operator_org_id,
        purpose_class="public_interest" if public else "industry", outcome=outcome, quantities=quantities(counts),
        grant_id=grant.id if grant else None, datasets=tuple(datasets), product_id=product_id, entry_id=entry_id,
        free_reason=free_reason, trace_id=current_trace_id(), source_id=source_id))


_FINISH = Prepared(RUN_FINISH)
_INSERT = Prepared(RUN_INSERT)


def _run_update(run: RunRecord) -> Execute:
    """UPDATE of a running run's row to its final record (the row was inserted when the run started)."""
    # fails if the run is no longer `running` (recovered)
    return Execute(_FINISH, finish_params(run, RunStatus.RUNNING.value), expect_rows=1)


def run_insert(run: RunRecord) -> Execute:
    """INSERT of a run's row: its start, or a run refused at its checks (committed with the refusal)."""
    return Execute(_INSERT, run.values())


@dataclass
class Metering:
    """The run path's metering: built once per app, holds the issuer of platform fees and the VAT convention."""

    recorder: Recorder
    sessions: sessionmaker[Session]
    clock: Clock
    metrics: Metrics
    vat: Vat
    tz: ZoneInfo
    _platform_org_id: str | None = field(default=None, repr=False)
    _starter: ThreadPoolExecutor | None = field(default=None, repr=False)

    def platform_org_id(self, session: Session) -> str:
        """The implementing agency that issues platform fees (the platform organization)."""
        if self._platform_org_id is None:
            found = session.scalar(select(Organization.id).where(Organization.is_platform.is_(True)))
            if found is None:
                raise NotFound("no platform agency; run `sluice init`", code="platform_not_initialized")
            self._platform_org_id = found
        return self._platform_org_id

    def refused_run(self, session: Session, run: RunRecord, grant: AnyGrant, now: datetime, trace_id: str | None = None
                    ) -> UsageEventRow:
        """The usage event of a run refused at its checks (recorded, never charged), to commit with the refusal."""
        self.metrics.child(self.metrics.runs, run.status).inc()
        return event_row(run_event(run, grant, self.platform_org_id(session), (), now, trace_id))

    def start_run(self, session: Session, run: RunRecord, job: AnyJob, *, meanwhile: bool = False) -> StartedRun:
        """Begin recording the run's start (status `running`) through the group-commit recorder.

        The commit runs in the background while the run executes, so it adds almost nothing to the run's
        latency; `StartedRun.wait()` makes sure it is durable before anything about the run is committed or
        answered. A crash after that leaves a `running` row that `recover_interrupted_runs` marks failed at
        restart; a crash before it leaves nothing, and the client has seen nothing.

        With `meanwhile`, the caller hands `StartedRun.record` and `StartedRun.in_background` to the worker pool
        (`while_running`): a run that must wait for a busy worker commits its start in its own thread while it
        waits (no hand-off to another thread); one that finds a worker idle hands it to a run-start thread as it
        sends the spec. Otherwise a run-start thread commits it at once.
        """
        started = StartedRun(self, Pending([run_insert(run)]), session, run, job)
        if not meanwhile:
            started.in_background()
        from sandbox.app.deps import on_rollback  # the app owns the request transaction

        on_rollback(session, lambda: self._abandon(started))
        return started

    def _in_background(self, task: Callable[[], None]) -> None:
        if self._starter is None:
            self._starter = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sluice-run-start")
        self._starter.submit(task)

    def _record_start(self, pending: Pending) -> None:
        """Hand a run's start record to the group commit (see `StartedRun.record`)."""
        self.recorder.submit(pending)

    def _abandon(self, started: StartedRun) -> None:
        """The request failed unexpectedly after the run started: record it failed now, not at restart."""
        started.record()  # if it was not committed yet (the run failed before reaching a worker), now
        try:
            started.pending.wait(timeout=60)
        except Exception:
            return  # the start was never recorded: there is nothing to mark
        stored = replace(started.run, status=RunStatus.RUNNING.value)  # what the store holds for it
        now = self.clock.now()
        runs.set_status(stored, RunStatus.FAILED, now=now, error_code="internal_error",
                        error_message="the run failed unexpectedly; see server logs")
        try:
            with self.sessions() as s:
                grant = s.get(Grant, stored.grant_id)
                assert grant is not None
                rows: list[Write] = [_run_update(stored),
                                     event_row(run_event(stored, grant, self.platform_org_id(s), (), now))]
            self.recorder.record(rows)
        except Exception:  # pragma: no cover - the store is failing too; restart recovery will mark the run
            log.exception("could not record run %s as failed", stored.id)

    def close(self) -> None:
        """Let in-flight start records finish."""
        if self._starter is not None:
            self._starter.shutdown(wait=True)
            self._starter = None

    def finish_run(self, session: Session, run: RunRecord, grant: AnyGrant, tables: dict[str, GrantTable],
                   job: AnyJob, service: runs.RunService, now: datetime, trace_id: str | None = None,
                   also: Callable[[Sequence[DatasetUse]], list[Any]] | None = None) -> list[Any]:
        """The writes that end a run, to commit with its audit row: its final record and its usage event, then
        `also(rows read per dataset)` (a product call adds its record and product-fee event)."""
        datasets = scans_by_dataset(service, grant, tables, job)
        event = run_event(run, grant, self.platform_org_id(session), datasets, now, trace_id)
        m = self.metrics
        m.child(m.runs, run.status).inc()
        m.child(m.run_seconds, run.status).observe(run.wall_ms / 1000)
        m.scanned_rows.inc(run.rows_scanned)
        return [_run_update(run), event_insert(event), *(also(datasets) if also is not None else [])]

    def download(self, session: Session, run: AnyRun, fmt: str, size: int, now: datetime,
                 trace_id: str | None = None, datasets: Sequence[DatasetUse] | None = None) -> Execute:
        """The usage event of one result download (attributed like its run), for the download's audit commit.

        `datasets` are the run's, when its own usage event is not committed yet (a run POST returning its result).
        """
        grant = session.get(Grant, run.grant_id)
        assert grant is not None
        if datasets is None:
            run_ev = session.get(UsageEventRow, event_id(EventKind.RUN, run.id))
            datasets = tuple(DatasetUse(d[0], int(d[1]), int(d[2])) for d in (run_ev.datasets if run_ev else []))
        source = new_id("dl")
        event = validate_event(UsageEvent(
            id=event_id(EventKind.DOWNLOAD, source), kind=EventKind.DOWNLOAD.value,
            relation=Relation.PLATFORM.value, event_time=now, ingested_at=now,
            issuer_org_id=self.platform_org_id(session), payer_org_id=run.operator_org_id,
            operator_org_id=run.operator_org_id, purpose_class=grant.purpose_class,
            outcome=Outcome.SUCCEEDED.value, quantities=quantities({"downloads": 1, "download_bytes": size}),
            grant_id=grant.id, datasets=tuple(datasets), trace_id=trace_id or current_trace_id(),
            source_id=f"{run.id}/{source}/{fmt}"))
        self.metrics.child(self.metrics.downloads, fmt).inc()
        return event_insert(event)


@dataclass
class StartedRun:
    """A run whose start record is being committed while the run executes (`record`, once, in whichever thread
    calls it first)."""

    metering: Metering
    pending: Pending  # the start record's call in the group commit
    session: Session
    run: RunRecord
    job: AnyJob
    _once: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _began: float = field(default=0.0, repr=False)

    def record(self) -> None:
        """Hand the start record to the group commit now, from this thread, unless a call has already begun: this
        thread commits it at once when no commit is in progress; otherwise it is queued, without waiting, for the
        commit in progress, whose leader commits it before it stops leading. Its outcome (or error) is
        `pending`'s, never raised here."""
        if self._claim():
            self.metering._record_start(self.pending)

    def in_background(self) -> None:
        """Unless a call of `record` has already begun: queue the start record behind the commit in progress, if
        there is one (no hand-off to another thread), else have a run-start thread commit it."""
        if self._claim() and not self.metering.recorder.join(self.pending):
            self.metering._in_background(partial(self.metering._record_start, self.pending))

    def _claim(self) -> bool:
        """Whether this is the first call to hand the start record on (it is handed on once); starts its clock."""
        if not self._once.acquire(blocking=False):
            return False
        self._began = time.perf_counter()
        return True

    def wait(self) -> Run | None:
        """Block until the start is durable (committing it now if no one has begun to). Returns the earlier run
        when a concurrent request with the same Idempotency-Key started first (this run is then discarded: no
        record, no usage)."""
        self.record()
        began = time.perf_counter()
        metrics = self.metering.metrics
        try:
            self.pending.wait(timeout=60)
        except IntegrityError:
            earlier = runs.find_idempotent(self.session, self.job, self.run.requested_by, self.run.idempotency_key)
            if earlier is None:
                raise
            return earlier
        finally:
            metrics.run_start_wait_seconds.observe(time.perf_counter() - began)
            if self.pending.done():
                metrics.run_start_seconds.observe(self.pending.committed_at - self._began)
        return None


def ingest(session: Session, events: Iterable[UsageEvent]) -> list[tuple[UsageEvent, bool]]:
    """Append events once each: (event, True) when new, (recorded event, False) for an identical replay.

    A replay whose payload differs is refused (`usage_conflict`); nothing recorded is ever overwritten.
    """
    out = []
    for e in events:
        validate_event(e)
        existing = session.get(UsageEventRow, e.id)
        if existing is None:
            try:
                with session.begin_nested():
                    session.add(event_row(e))
            except IntegrityError:
                existing = session.get(UsageEventRow, e.id, populate_existing=True)
                if existing is None:
                    raise
        if existing is None:
            out.append((e, True))
            continue
        if existing.payload_sha256 != payload_digest(e):
            raise Conflict(f"usage event {e.id} was already recorded with a different payload; corrections are "
                           "appended as reversals", code="usage_conflict", event_id=e.id)
        out.append((event_from_row(existing), False))
    return out


def reverse(session: Session, original_id: str, *, reason: str, now: datetime) -> tuple[UsageEvent, bool]:
    """Append the reversal of an event (once; repeating it with the same reason returns the recorded one)."""
    row = session.get(UsageEventRow, original_id)
    if row is None:
        raise NotFound(f"usage event {original_id} does not exist", code="usage_event_not_found")
    if not reason.strip():
        raise InvalidInput("a reversal needs a reason", code="reason_required")
    return ingest(session, [reversal_of(event_from_row(row), reason=reason, at=now, trace_id=current_trace_id())])[0]
