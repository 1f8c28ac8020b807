"""Metering benchmarks: events rated per second, the time to build one bill over 10^6 events, reconciliation's
per-event path, and what recording each run's start through the group-commit recorder costs."""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from metering.bills import build_bill
from metering.events import DatasetUse, UsageEvent, quantities
from metering.money import Vat
from metering.periods import Period
from metering.rating import Pricing, Rater
from metering.schedules import PlatformSchedule, Timeline

TZ = ZoneInfo("Asia/Shanghai")
PERIOD = Period(2026, 11)


def synthetic_events(n: int) -> list[UsageEvent]:
    """`n` platform events of one operator in one month: runs of every outcome and purpose over 1-3 datasets,
    and downloads. Quantities repeat from a pool, so 10^6 events fit in a few hundred MB."""
    start = PERIOD.start(TZ)
    span = (PERIOD.end(TZ) - start).total_seconds()
    pool_q = [quantities({"runs": 1, "rows_scanned": 30_000 + i, "bytes_scanned": 2_000_000 + i * 7,
                          "cpu_seconds": 5_000 + i}) for i in range(64)]
    pool_d = [(DatasetUse("enterprises", 10_000, 1_000_000 + i * 3), DatasetUse("bus_ridership", 20_000 + i,
                                                                                1_000_000 + i * 4))
              for i in range(64)]
    dl_q = quantities({"downloads": 1, "download_bytes": 4_096})
    outcomes = ("succeeded",) * 18 + ("failed", "timed_out")
    events = []
    for i in range(n):
        at = start + timedelta(seconds=span * i / n)
        download = i % 10 == 9
        events.append(UsageEvent(
            id=f"{'download' if download else 'run'}:{i:010d}", kind="download" if download else "run",
            relation="platform", event_time=at, ingested_at=at, issuer_org_id="org_agency",
            payer_org_id="org_operator", operator_org_id="org_operator",
            purpose_class="public_interest" if i % 7 == 0 else "industry",
            outcome="succeeded" if download else outcomes[i % 20], quantities=dl_q if download else pool_q[i % 64],
            grant_id="grt_public" if i % 7 == 0 else "grt_industry", datasets=pool_d[i % 64], source_id=str(i)))
    events.sort(key=lambda e: e.id)  # as the store returns them (ORDER BY id)
    return events


def pricing() -> Pricing:
    """Two platform fee versions, the second starting mid-month."""
    start = PERIOD.start(TZ)
    rates = {"runs": Decimal("0.50"), "rows_scanned": Decimal("0.02"), "bytes_scanned": Decimal("1"),
             "cpu_seconds": Decimal("0.01"), "downloads": Decimal("0.2"), "download_bytes": Decimal("2")}
    v2 = {**rates, "runs": Decimal("0.45")}
    return Pricing(Timeline([PlatformSchedule(1, start - timedelta(days=60), rates, True),
                             PlatformSchedule(2, start + timedelta(days=15), v2, True)]), Timeline([]), {}, TZ)


def _build(events: list[UsageEvent], price: Pricing) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to build one bill from `events`."""
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    build_bill(events, payer_org_id="org_operator", issuer_org_id="org_agency", relation="platform", period=PERIOD,
               as_of=PERIOD.end(TZ), pricing=price, vat=Vat(True, Decimal("0.06")))
    return time.perf_counter() - started, time.process_time() - cpu


def rating(n_bill: int = 1_000_000, n_rate: int = 200_000, reps: int = 3) -> dict[str, Any]:
    """Events rated per second (bill builder, median of `reps`), one bill over `n_bill` events, and the
    per-event reference path reconciliation uses."""
    price = pricing()
    events = synthetic_events(max(n_bill, n_rate))
    subset = events[:n_rate]
    timings = [_build(subset, price) for _ in range(reps)]
    rate_s = statistics.median(t[0] for t in timings)
    rate_cpu = statistics.median(t[1] for t in timings)
    bill_s, bill_cpu = _build(events[:n_bill], price)
    started = time.perf_counter()
    for _ in Rater(price, PERIOD).contributions(subset):
        pass
    per_event_s = time.perf_counter() - started
    return {"events_rated_per_second": round(n_rate / rate_s), "events_rated_per_cpu_second": round(n_rate / rate_cpu),
            "rate_events": n_rate, "bill_events": n_bill, "bill_build_seconds": round(bill_s, 3),
            "bill_build_cpu_seconds": round(bill_cpu, 3),
            "reconcile_path_events_per_second": round(n_rate / per_event_s),
            "targets": {"events_rated_per_second_min": 200_000, "bill_build_seconds_max_at_10e6": 5.0}}


def start_record_cost(reps: int = 300) -> dict[str, Any]:
    """Median cost of the run path's writes on SQLite, without and with the start record (recorder, no load)."""
    from sqlalchemy import inspect, update

    from sandbox.audit import AuditDraft
    from sandbox.recorder import Recorder
    from sandbox.store.db import make_engine, session_factory, upgrade
    from sandbox.store.models import Grant, Job, Organization, Run, UsageEventRow

    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        upgrade(engine)
        sessions = session_factory(engine)
        with sessions.begin() as s:
            s.add(Organization(id="org_b", name="b", kind="operator", is_platform=False, created_at=now))
            s.flush()
            s.add(Grant(id="grt_b", operator_org_id="org_b", scope="whole", domains=[], datasets=[],
                        purpose_class="industry", valid_from=now, valid_until=now, min_group_size=10,
                        max_result_rows=10, auto_approve=True, column_overrides={}, status="active",
                        created_at=now, created_by="x"))
            s.flush()
            s.add(Job(id="job_b", grant_id="grt_b", operator_org_id="org_b", submitted_by="x", title="t", purpose="p",
                      sql="", parameters={}, state="approved", findings=[], analysis={}, dataset_versions={},
                      reviews_required=0, created_at=now))
        recorder = Recorder(sessions)

        def run(i: int, status: str) -> Run:
            return Run(id=f"run_{status}_{i}", job_id="job_b", grant_id="grt_b", operator_org_id="org_b",
                       requested_by="x", params={}, status=status, frozen_sql_sha256="", dataset_versions={},
                       created_at=now)

        def event(i: int, tag: str) -> UsageEventRow:
            return UsageEventRow(id=f"run:{tag}{i}", kind="run", relation="platform", event_time=now, ingested_at=now,
                                 issuer_org_id="a", payer_org_id="org_b", operator_org_id="org_b", grant_id="grt_b",
                                 purpose_class="industry", outcome="succeeded", quantities={"runs": 1}, datasets=[],
                                 source_id=str(i), payload_sha256="0" * 64)

        def audit() -> Any:
            return AuditDraft(action="run:create", resource="r", via="api", decision="allow", status=201).to_row(now)

        one, two = [], []
        for i in range(reps):
            started = time.perf_counter()
            with sessions() as s:
                recorder.record([run(i, "succeeded"), audit(), event(i, "a")], session=s)
            one.append(time.perf_counter() - started)
            started = time.perf_counter()
            r = run(i, "running")
            with sessions() as s:
                recorder.record([Run(**{c.key: getattr(r, c.key) for c in inspect(Run).column_attrs})], session=s)
                stmt = update(Run).where(Run.id == r.id).values(status="succeeded")
                recorder.record([stmt, audit(), event(i, "b")], session=s)
            two.append(time.perf_counter() - started)
        engine.dispose()
    base, with_start = statistics.median(one) * 1000, statistics.median(two) * 1000
    return {"reps": reps, "final_only_ms": round(base, 3), "start_and_final_ms": round(with_start, 3),
            "start_record_added_ms": round(with_start - base, 3)}


def served_start_cost(metrics_text: str) -> dict[str, Any]:
    """Mean time the served run path spent recording run starts (in the background, while runs executed) and
    waiting for them after execution, from `sluice_run_start_record_seconds` and `..._wait_seconds`."""
    values: dict[str, float] = {}
    for line in metrics_text.splitlines():
        for name in ("sluice_run_start_record_seconds_sum", "sluice_run_start_record_seconds_count",
                     "sluice_run_start_wait_seconds_sum", "sluice_run_start_wait_seconds_count"):
            if line.startswith(name + " "):
                values[name] = float(line.split()[-1])

    def mean(stem: str) -> float | None:
        count = values.get(f"{stem}_count", 0.0)
        return round(values.get(f"{stem}_sum", 0.0) / count * 1000, 3) if count else None

    return {"runs": int(values.get("sluice_run_start_record_seconds_count", 0)),
            "record_mean_ms": mean("sluice_run_start_record_seconds"),
            "wait_mean_ms": mean("sluice_run_start_wait_seconds")}


def markdown(m: dict[str, Any]) -> list[str]:
    """Report lines for the metering figures."""
    r, s = m["rating"], m["start_record"]
    lines = ["## Metering", "",
             f"- Events rated per second (bill builder, {r['rate_events']:,} events): "
             f"**{r['events_rated_per_second']:,}** ({r['events_rated_per_cpu_second']:,} per CPU second; "
             "target ≥ 200,000).",
             f"- One bill over {r['bill_events']:,} events: **{r['bill_build_seconds']} s** "
             f"({r['bill_build_cpu_seconds']} CPU s; target ≤ 5 s).",
             f"- Reconciliation's per-event path: {r['reconcile_path_events_per_second']:,} events/s.",
             f"- Recording a run's start through the group-commit recorder, sequentially (SQLite, in process, median "
             f"of {s['reps']}): final write alone {s['final_only_ms']} ms, start + final {s['start_and_final_ms']} "
             f"ms: {s['start_record_added_ms']} ms of work per run. The run path overlaps it with execution."]
    served = m.get("served_start")
    if served and served.get("record_mean_ms") is not None:
        lines.append(f"- On the served run path ({served['runs']} runs): the start record took "
                     f"{served['record_mean_ms']} ms on average in the background; runs then waited "
                     f"**{served['wait_mean_ms']} ms** on average for it (the latency it adds).")
    return [*lines, ""]
