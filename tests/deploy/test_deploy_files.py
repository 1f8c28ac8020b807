"""deploy/ is checked as far as this machine allows (no Docker engine): promtool on the Prometheus files, JSON
schemas on compose, Kubernetes and Grafana files (vendored: no network), settings and metric names that exist."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sluice_testenv
import yaml
from kubernetes_validate import validate as k8s_validate

from metering.metrics import make_metrics
from sandbox.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
K8S_VERSION = "1.37.0"


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text("utf-8"))
    return schema


def _validate(instance: Any, schema_name: str) -> None:
    schema = _schema(schema_name)
    validator = jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = sluice_testenv.require_debian_package("promtool", "prometheus")
    return subprocess.run([promtool, "check", *args], capture_output=True, text=True, cwd=DEPLOY / "prometheus")


def test_prometheus_config_and_its_rule_files_pass_promtool() -> None:
    result = _promtool("config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout + result.stderr


def test_alert_rules_pass_promtool_and_cover_the_required_alerts() -> None:
    result = _promtool("rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text("utf-8"))
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    required = {"SluiceAuditAppendFailures": "sluice_audit_append_failures_total",
                "SluiceRefusalSpike": "sluice_access_decisions_total",
                "SluiceRunLatencyHigh": "sluice_run_duration_seconds_bucket",
                "SluiceBillReconciliationFailed": "sluice_bill_reconciliations_total",
                "SluiceCheckpointStale": "sluice_audit_checkpoint_timestamp_seconds",
                "SluiceAuditSuppressionSpike": "sluice_suppressed_cells_total"}
    for alert, metric in required.items():
        assert metric in alerts.get(alert, ""), f"{alert} must watch {metric}"


def test_promtool_refuses_a_broken_rule_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: sum(rate(x[5m]) >\n")
    promtool = sluice_testenv.require_debian_package("promtool", "prometheus")
    assert subprocess.run([promtool, "check", "rules", str(bad)], capture_output=True).returncode != 0


def _exported_names() -> set[str]:
    """Every sample name Sluice's metrics can expose (families plus their type's suffixes)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "gauge": ("",), "summary": ("_count", "_sum", "_created")}
    names = set()
    for family in make_metrics().registry.collect():
        for suffix in suffixes[family.type]:
            names.add(family.name + suffix)
    return names


def _used_metric_names() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text("utf-8"))
    exprs = [("alerts.yml", r["expr"]) for g in rules["groups"] for r in g["rules"]]
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        dash = json.loads(path.read_text("utf-8"))
        exprs += [(path.name, t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    for where, expr in exprs:
        for name in re.findall(r"\bsluice_[a-z0-9_]+", expr):
            used.setdefault(name, set()).add(where)
    return used


def test_alerts_and_dashboards_use_only_metrics_the_code_exports() -> None:
    exported = _exported_names()
    used = _used_metric_names()
    assert len(used) >= 10
    unknown = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert unknown == {}, f"metric names no code exports: {unknown}"


def test_compose_file_matches_the_compose_specification() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))
    _validate(compose, "compose-spec.json")
    services = compose["services"]
    assert services["api"]["deploy"]["replicas"] == 2
    assert {"postgres", "proxy", "prometheus", "grafana", "otel-collector", "jaeger", "spark-connect"} <= set(services)
    # Spark is optional and reachable only from the API: alone on an internal network that only the API joins
    spark_nets = set(services["spark-connect"]["networks"])
    assert services["spark-connect"].get("profiles") == ["spark"] and "ports" not in services["spark-connect"]
    for net in spark_nets:
        assert compose["networks"][net].get("internal") is True
        assert {name for name, s in services.items() if net in s.get("networks", [])} == {"api", "spark-connect"}


def test_a_compose_file_with_an_unknown_key_is_refused() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))
    compose["services"]["api"]["replicaz"] = 2
    with pytest.raises(AssertionError, match="replicaz"):
        _validate(compose, "compose-spec.json")


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text("utf-8")):
            if doc:
                docs.append((path.name, doc))
    return docs


def test_kubernetes_manifests_match_the_strict_api_schemas() -> None:
    docs = _k8s_documents()
    assert {d["kind"] for _, d in docs} >= {"Deployment", "Service", "NetworkPolicy", "Secret", "ConfigMap"}
    for name, doc in docs:
        k8s_validate(doc, K8S_VERSION, strict=True)  # raises ValidationError naming the field
        assert doc["metadata"].get("namespace", "sluice") == "sluice", name


def test_a_kubernetes_manifest_with_a_misspelt_field_is_refused() -> None:
    from kubernetes_validate.utils import ValidationError

    deployment = next(d for _, d in _k8s_documents() if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(ValidationError):
        k8s_validate(deployment, K8S_VERSION, strict=True)


def test_kubernetes_pods_have_probes_limits_non_root_and_signing_keys_from_a_secret() -> None:
    for _, doc in _k8s_documents():
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["resources"]["limits"]["memory"] and container["resources"]["limits"]["cpu"]
            assert "livenessProbe" in container and "readinessProbe" in container
    api = next(d for _, d in _k8s_documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == "sluice-api")
    volumes = {v["name"]: v for v in api["spec"]["template"]["spec"]["volumes"]}
    assert volumes["signing-keys"]["secret"]["secretName"] == "sluice-signing-keys"


def test_engines_accept_only_the_api_and_have_no_egress() -> None:
    policies = [d for _, d in _k8s_documents() if d["kind"] == "NetworkPolicy"]
    engine = [p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).get("sluice.io/engine") == "true"]
    assert len(engine) == 1
    spec = engine[0]["spec"]
    assert "Egress" in spec["policyTypes"] and spec["egress"] == []
    sources = [f["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for f in spec["ingress"][0]["from"]]
    assert sources == ["api"]
    spark = next(d for _, d in _k8s_documents()
                 if d["kind"] == "Deployment" and d["metadata"]["name"] == "spark-connect")
    assert spark["spec"]["template"]["metadata"]["labels"]["sluice.io/engine"] == "true"


def test_grafana_dashboards_and_provisioning_match_their_schemas() -> None:
    dashboards = list((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        _validate(json.loads(path.read_text("utf-8")), "grafana-dashboard.json")
    provisioning = list((DEPLOY / "grafana" / "provisioning").rglob("*.yaml"))
    assert len(provisioning) == 2
    datasource_uids = set()
    for path in provisioning:
        doc = yaml.safe_load(path.read_text("utf-8"))
        _validate(doc, "grafana-provisioning.json")
        datasource_uids |= {d["uid"] for d in doc.get("datasources", [])}
    for path in dashboards:
        dash = json.loads(path.read_text("utf-8"))
        assert {p["datasource"]["uid"] for p in dash["panels"]} <= datasource_uids


def test_every_sluice_variable_in_deploy_is_a_documented_setting() -> None:
    settings = {f"SLUICE_{name.upper()}" for name in Settings.model_fields}
    documented = set(re.findall(r"`(SLUICE_[A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text("utf-8")))
    found: dict[str, set[str]] = {}
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            for name in re.findall(r"\bSLUICE_[A-Z0-9_]*[A-Z0-9]", path.read_text("utf-8", errors="replace")):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert {"SLUICE_DATABASE_URL", "SLUICE_PROCESSES", "SLUICE_HOME"} <= set(found)
    unknown = {name: sorted(where) for name, where in found.items() if name not in settings or name not in documented}
    assert unknown == {}, f"SLUICE_* variables in deploy/ that are not documented settings: {unknown}"


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text("utf-8")
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.M | re.I)
    assert len(stages) >= 2
    final = text.split(f"AS {stages[-1]}", 1)[1]
    user = re.findall(r"^USER\s+(\S+)", final, flags=re.M)
    assert user and not user[-1].startswith(("root", "0:", "0")), user
    assert re.search(r"^HEALTHCHECK .*CMD", final, flags=re.M | re.S) and "/healthz" in final
