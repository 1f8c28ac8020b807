"""Prometheus metrics for operations (never the source of bills): one registry, passed around explicitly.

Names follow Prometheus conventions: `sluice_` prefix, base units (seconds, rows), `_total` on counters. Labels
take only bounded values (route templates, statuses, outcomes, finding codes, formats); never organization,
principal, dataset or run ids.

Multi-process mode: when `multiprocess_dir` is given (the PROMETHEUS_MULTIPROC_DIR that `sluice serve` sets up
before it starts several worker processes), each process writes its samples to files there and the exposition
aggregates every process's files, so a scrape answered by any worker shows the whole server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

M = TypeVar("M", Counter, Gauge, Histogram)

# Run and request latencies span sub-millisecond metadata calls to minutes-long scans.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass
class Metrics:
    """The service's metrics and the registry they are exposed from."""

    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    access_decisions: Counter
    suppressed_cells: Counter
    audit_seconds: Histogram
    ledger_cells: Gauge
    cross_operator_suppressions: Counter
    runs: Counter
    run_seconds: Histogram
    run_start_seconds: Histogram
    run_start_wait_seconds: Histogram
    scanned_rows: Counter
    analysis_rejections: Counter
    audit_append_seconds: Histogram
    downloads: Counter
    audit_append_failures: Counter
    log_sequencing_failures: Counter
    log_pending: Gauge
    checkpoint_timestamp: Gauge
    reconciliations: Counter
    multiprocess_dir: str | None = None
    _children: dict[tuple[Any, tuple[str, ...]], Any] = field(default_factory=dict, repr=False, compare=False)

    def child(self, metric: M, *values: str) -> M:
        """`metric.labels(*values)`, kept by label values: `labels()` converts the values and looks the child up
        under the metric's lock on every call, and nothing here removes a child. Values are strings (a StrEnum
        member is its value), so equal keys always name the same child."""
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def render(self) -> tuple[bytes, str]:
        """The exposition text (all processes' samples in multi-process mode) and its content type."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged), CONTENT_TYPE_LATEST


def make_metrics(multiprocess_dir: str | None = None) -> Metrics:
    """A fresh registry with Sluice's metrics (values shared through `multiprocess_dir` when given)."""
    reg = CollectorRegistry()
    return Metrics(
        registry=reg,
        requests=Counter("sluice_http_requests", "HTTP requests by route template and status",
                         ["route", "status"], registry=reg),
        request_seconds=Histogram("sluice_http_request_seconds", "HTTP request latency by route template",
                                  ["route"], buckets=LATENCY_BUCKETS, registry=reg),
        access_decisions=Counter("sluice_access_decisions", "Access decisions by action and decision",
                                 ["action", "decision"], registry=reg),
        suppressed_cells=Counter("sluice_suppressed_cells", "Result cells suppressed, by reason (k, dominance, "
                                 "difference_audit, audit_budget_exceeded)", ["reason"], registry=reg),
        audit_seconds=Histogram("sluice_release_audit_seconds", "Time the release audit takes per run",
                                registry=reg, buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0)),
        ledger_cells=Gauge("sluice_release_ledger_cells", "Released (measure, entity set) records in a population's "
                           "ledger, as this process last read it", ["population"], registry=reg),
        cross_operator_suppressions=Counter(
            "sluice_release_audit_cross_operator_suppressions", "Cells the audit suppressed in a population whose "
            "ledger also holds other operators' releases (one operator's releases can suppress another's)",
            ["population"], registry=reg),
        runs=Counter("sluice_runs", "Runs by final status (succeeded, failed, refused, timed_out)", ["status"],
                     registry=reg),
        run_seconds=Histogram("sluice_run_duration_seconds", "Wall time of executed runs by status", ["status"],
                              buckets=LATENCY_BUCKETS, registry=reg),
        run_start_seconds=Histogram("sluice_run_start_record_seconds",
                                    "Time to record a run's start through the group-commit recorder",
                                    buckets=COMMIT_BUCKETS, registry=reg),
        run_start_wait_seconds=Histogram("sluice_run_start_wait_seconds",
                                         "Time a run waited, after executing, for its start record to be durable",
                                         buckets=COMMIT_BUCKETS, registry=reg),
        scanned_rows=Counter("sluice_scanned_rows", "Rows scanned by executed runs", registry=reg),
        analysis_rejections=Counter("sluice_analysis_rejections", "Jobs refused by SQL analysis, by finding code",
                                    ["code"], registry=reg),
        audit_append_seconds=Histogram("sluice_audit_append_seconds",
                                       "Latency of committing audit records, by path (group commit, request, "
                                       "refusal)", ["path"], buckets=COMMIT_BUCKETS, registry=reg),
        downloads=Counter("sluice_result_downloads", "Result downloads by format", ["format"], registry=reg),
        audit_append_failures=Counter("sluice_audit_append_failures", "Audit records (or the transactions carrying "
                                      "them) that failed to commit, by path", ["path"], registry=reg),
        log_sequencing_failures=Counter("sluice_audit_log_sequencing_failures", "Failed ticks of the audit log's "
                                        "sequencer or checkpoint schedule (records stay committed)", registry=reg),
        log_pending=Gauge("sluice_audit_log_uncheckpointed_records", "Committed audit records not yet covered by a "
                          "signed checkpoint, as last seen by the sequencer", registry=reg,
                          multiprocess_mode="mostrecent"),
        checkpoint_timestamp=Gauge("sluice_audit_checkpoint_timestamp_seconds", "Unix time of the newest signed "
                                   "checkpoint of the audit log", registry=reg, multiprocess_mode="max"),
        reconciliations=Counter("sluice_bill_reconciliations", "Bills checked against their usage events, by result "
                                "(ok, differences)", ["result"], registry=reg),
        multiprocess_dir=multiprocess_dir,
    )
