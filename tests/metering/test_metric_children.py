"""The metrics registry: label children kept by label values count exactly as `labels()` children do."""

from __future__ import annotations

from metering.metrics import make_metrics
from sandbox.audit import Outcome


def test_a_kept_child_is_the_labelled_child_and_counts_under_its_own_labels() -> None:
    metrics = make_metrics()
    allowed = metrics.child(metrics.access_decisions, "run:create", Outcome.ALLOW)
    assert allowed is metrics.access_decisions.labels("run:create", "allow")
    assert metrics.child(metrics.access_decisions, "run:create", "allow") is allowed  # a StrEnum is its value
    allowed.inc()
    metrics.child(metrics.access_decisions, "run:create", Outcome.ALLOW).inc()
    metrics.child(metrics.access_decisions, "run:create", Outcome.DENY).inc()
    metrics.child(metrics.audit_append_seconds, "group_commit").observe(0.002)
    sample = metrics.registry.get_sample_value
    assert sample("sluice_access_decisions_total", {"action": "run:create", "decision": "allow"}) == 2
    assert sample("sluice_access_decisions_total", {"action": "run:create", "decision": "deny"}) == 1
    assert sample("sluice_audit_append_seconds_count", {"path": "group_commit"}) == 1
