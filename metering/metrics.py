"""Prometheus metrics for the service (one registry, passed around explicitly)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


@dataclass
class Metrics:
    """The service's metrics and the registry they live in."""

    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    access_decisions: Counter
    suppressed_cells: Counter
    audit_seconds: Histogram
    ledger_cells: Gauge
    cross_operator_suppressions: Counter

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def make_metrics() -> Metrics:
    """A fresh registry with Sluice's metrics."""
    reg = CollectorRegistry()
    return Metrics(
        registry=reg,
        requests=Counter("sluice_http_requests", "HTTP requests by route and status", ["route", "status"],
                         registry=reg),
        request_seconds=Histogram("sluice_http_request_seconds", "HTTP request latency", ["route"], registry=reg),
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
    )
