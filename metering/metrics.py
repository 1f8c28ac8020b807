"""Prometheus metrics for the service (one registry, passed around explicitly)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


@dataclass
class Metrics:
    """The service's metrics and the registry they live in."""

    registry: CollectorRegistry
    requests: Counter
    request_seconds: Histogram
    access_decisions: Counter

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
    )
