"""`sluice demo`: the whole flow on SYNTHETIC city data, through the same API every client uses."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from sandbox.bootstrap import init_home
from sandbox.catalogue.certificates import kid_for, load_public_key_pem, verify_certificate_document
from sandbox.cli.client import ApiError, Client
from sandbox.clock import Clock, SystemClock
from sandbox.config import Settings, load_settings
from sandbox.demo.billing import billing_flow
from sandbox.demo.city import CITY_DATASETS, DatasetSpec, generate_city
from sandbox.demo.differencing import differencing_attack
from sandbox.demo.disclosure import disclosure_flow
from sandbox.demo.registration import (
    DEMO_NOTICE_SECONDS,
    EXPECTATIONS,
    FRESHNESS_COLUMNS,
    FULL_PATH_DATASET,
    certify_rest,
    full_workflow,
    quality_feedback,
)


class DemoError(Exception):
    """The demo could not run (e.g. the home folder holds something that is not a Sluice home)."""


def _fresh_home(home: Path) -> Path:
    home = home.expanduser().resolve()
    if home.exists() and any(home.iterdir()):
        if not (home / "sluice.db").exists():
            raise DemoError(f"{home} is not empty and is not a Sluice home; refusing to wipe it")
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    return home


def dataset_metadata(spec: DatasetSpec) -> dict[str, Any]:
    return {
        "id": spec.id, "title": spec.title, "description": spec.description, "domain": spec.domain,
        "update_frequency": spec.update_frequency, "grade": spec.grade.value, "entity_column": spec.entity_column,
        **({"population": spec.population} if spec.population else {}),
        "column_types": {c.name: c.type for c in spec.columns},
        "columns": {c.name: {"constraint": c.constraint.value, "tags": list(c.tags),
                             "mask": c.mask.value if c.mask else None, "description": c.description}
                    for c in spec.columns},
        "expectations": EXPECTATIONS.get(spec.id, []), "freshness_column": FRESHNESS_COLUMNS.get(spec.id),
    }


class Narrator:
    """Prints what the demo does (or collects it for --json)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(stderr=as_json)
        self.summary: dict[str, Any] = {"synthetic": True}

    def step(self, text: str) -> None:
        if not self.as_json:
            self.console.print(f"[bold cyan]▸[/bold cyan] {text}")

    def detail(self, text: str) -> None:
        if not self.as_json:
            self.console.print(f"    {text}")

    def verbatim(self, text: str) -> None:
        """Print text exactly (no wrapping, no markup): signed notes must survive copy and paste."""
        if not self.as_json:
            self.console.print(text, soft_wrap=True, markup=False, highlight=False)


def run_demo(home: Path, *, as_json: bool = False, clock: Clock | None = None) -> dict[str, Any]:
    """Initialize a fresh home, register the synthetic city, set up organizations and grants."""
    clock = clock or SystemClock()
    say = Narrator(as_json)
    home = _fresh_home(home)
    base = load_settings()
    settings = Settings(**{**base.model_dump(), "home": home, "database_url": None, "url": None,
                           "api_key": None, "registration_notice_seconds": DEMO_NOTICE_SECONDS})
    say.step(f"Fresh Sluice home at {home} (SQLite control store, DuckDB sandbox). All data is SYNTHETIC.")
    init = init_home(settings, clock)
    assert init.api_key is not None
    admin = Client(settings, init.api_key)
    try:
        summary = _flow(admin, settings, clock, say, home)
    finally:
        admin.close()
    say.summary.update(summary)
    if as_json:
        sys.stdout.write(json.dumps(say.summary, ensure_ascii=False, indent=2) + "\n")
    else:
        say.console.print("[bold green]Demo complete.[/bold green] State is in " + str(home))
        _print_keys(say, home, init.api_key, say.summary.get("api_keys", {}))
    return say.summary


def _print_keys(say: Narrator, home: Path, admin_key: str, keys: dict[str, str]) -> None:
    """The demo's API keys in a labelled block, so that a newcomer can keep exploring with the CLI."""
    say.console.print("[bold]Demo API keys[/bold] (synthetic demo home only; never reuse them):")
    for name, key in [("admin", admin_key), *sorted(keys.items())]:
        say.verbatim(f"  {name:16} {key}")
    say.verbatim(f"Try: SLUICE_HOME={home} sluice datasets list --api-key {keys.get('steward', admin_key)}")


def _flow(admin: Client, settings: Settings, clock: Clock, say: Narrator, home: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"home": str(home)}
    say.step("Platform admin creates the organizations")
    orgs = {}
    for key, name, kind in [
        ("provider", "City Data Resource Center 市数据资源中心 (synthetic provider)", "provider"),
        ("health_ops", "Healthy City Analytics 健康城市分析 (public-interest operator)", "operator"),
        ("commerce_ops", "Metro Commerce Data Co. 都市商业数据 (industry operator)", "operator"),
        ("customer", "Bright Retail Ltd. 明亮零售 (customer)", "customer"),
        ("regulator", "City Audit Bureau 市审计局 (regulator)", "regulator"),
    ]:
        orgs[key] = admin.post("/v1/orgs", {"name": name, "kind": kind})["id"]
        say.detail(f"{kind:9} {name}")
    out["orgs"] = orgs

    say.step("Principals get roles that fit their organization's kind; each key is shown once")
    keys: dict[str, str] = {}
    for key, org, roles in [
        ("steward", orgs["provider"], ["data_steward"]),
        ("health_analyst", orgs["health_ops"], ["operator"]),
        ("commerce_analyst", orgs["commerce_ops"], ["operator"]),
        ("customer", orgs["customer"], ["customer"]),
        ("auditor", orgs["regulator"], ["regulator"]),
        ("reviewer_1", init_org(admin), ["reviewer"]),
        ("reviewer_2", init_org(admin), ["reviewer"]),
    ]:
        created = admin.post("/v1/principals", {"org_id": org, "name": key, "roles": roles})
        keys[key] = created["api_key"]
        say.detail(f"{key:16} roles={roles} key_id={created['key_id']}")
    out["api_keys"] = keys

    say.step("The data steward files registration applications for five SYNTHETIC city datasets "
             "(CSV, normalized to Parquet, quality self-checked)")
    files = generate_city(home / "synthetic-input", today=clock.now().date())
    steward = admin.with_key(keys["steward"])
    applications: dict[str, int] = {}
    for spec in CITY_DATASETS:
        meta = dataset_metadata(spec)
        meta["provider_org_id"] = orgs["provider"]
        reg = steward.upload("/v1/datasets", meta, files[spec.id])
        applications[spec.id] = reg["version"]
        quality = steward.get(f"/v1/datasets/{spec.id}/versions/{reg['version']}/quality")["quality"]
        failed = [r for r in quality["expectations"] if not r["passed"]]
        say.detail(f"{spec.id:14} grade={spec.grade.value:9} rows={reg['row_count']:>6}  {reg['registration_state']}; "
                   f"{len(quality['expectations'])} expectations, {len(failed)} failed; "
                   f"freshness {quality['freshness']['status']}")
    out["workflow"] = full_workflow(admin, keys, clock, say)
    certs = {FULL_PATH_DATASET: out["workflow"]["certificate"]}
    certs.update(certify_rest(admin, {k: v for k, v in applications.items() if k != FULL_PATH_DATASET}, say))
    out["certificates"] = certs

    say.step("The certificate of 'residents' verifies offline; one changed byte does not")
    doc = admin.get(f"/v1/certificates/{certs['residents']}/document", raw=True)
    pem = admin.get("/v1/keys")["certificate"]
    public = load_public_key_pem(next(iter(pem.values())).encode("ascii"))
    good = verify_certificate_document(doc, {kid_for(public): public})
    tampered = bytearray(doc)
    tampered[len(tampered) // 2] ^= 0x01
    bad = verify_certificate_document(bytes(tampered), {kid_for(public): public})
    say.detail(f"original: valid={good.valid}; tampered: valid={bad.valid} ({bad.reason})")
    out["certificate_check"] = {"original": good.valid, "tampered": bad.valid}

    say.step("The agency admin grants the operators")
    now = clock.now()
    until = (now + timedelta(days=365)).isoformat()
    grants = {}
    grants["health_scenario"] = admin.post("/v1/grants", {
        "operator_org_id": orgs["health_ops"], "scope": "scenario", "purpose_class": "public_interest",
        "valid_until": until, "datasets": ["clinic_visits", "residents"], "max_result_rows": 1000,
        "scenario": {"name": "District health-cost monitoring 区域医疗费用监测",
                     "data_used": "clinic visits and resident districts (synthetic)",
                     "supply": "aggregates computed in the Sluice sandbox; raw rows never leave",
                     "problem": "find districts whose per-capita clinic cost is rising, to plan clinics"},
    })["id"]
    grants["health_domain"] = admin.post("/v1/grants", {
        "operator_org_id": orgs["health_ops"], "scope": "domain", "purpose_class": "public_interest",
        "valid_until": until, "domains": ["transport", "meteorology"], "auto_approve": True,
    })["id"]
    grants["commerce_domain"] = admin.post("/v1/grants", {
        "operator_org_id": orgs["commerce_ops"], "scope": "domain", "purpose_class": "industry",
        "valid_until": until, "domains": ["economy", "transport"], "auto_approve": True,
        "column_overrides": {"enterprises": {"name": "group"}},
    })["id"]
    for name, gid in grants.items():
        say.detail(f"{name:16} {gid}")
    out["grants"] = grants

    say.step("Refusals carry a stable code and are audited")
    refusals = {}
    for label, body in [
        ("important data outside a scenario", {
            "operator_org_id": orgs["commerce_ops"], "scope": "domain", "purpose_class": "industry",
            "valid_until": until, "domains": ["health_care"], "datasets": ["clinic_visits"]}),
        ("a loosening override", {
            "operator_org_id": orgs["commerce_ops"], "scope": "domain", "purpose_class": "industry",
            "valid_until": until, "domains": ["economy"],
            "column_overrides": {"enterprises": {"employees": "open"}}}),
    ]:
        try:
            admin.post("/v1/grants", body)
            refusals[label] = "NOT REFUSED"
        except ApiError as e:
            refusals[label] = e.code
        say.detail(f"{label}: {refusals[label]}")
    try:
        admin.with_key(keys["commerce_analyst"]).get(f"/v1/grants/{grants['health_scenario']}")
        refusals["cross-organization read"] = "NOT REFUSED"
    except ApiError as e:
        refusals["cross-organization read"] = e.code
    say.detail(f"industry operator reads the health operator's grant: {refusals['cross-organization read']} "
               "(the same answer as for an id that does not exist)")
    out["refusals"] = refusals
    if any(v == "NOT REFUSED" for v in refusals.values()):
        raise DemoError(f"a refusal did not happen: {refusals}")

    out["governed_query"] = _governed_queries(admin, keys, grants, say, clock.now().date())
    out["difference_audit"] = differencing_attack(admin, keys, grants["health_scenario"], files, say)
    out["billing"] = billing_flow(admin, keys, orgs, say, home, clock.now(), settings.billing_timezone)
    out["quality_feedback"] = quality_feedback(admin, keys, say)
    out["disclosure"] = disclosure_flow(admin.with_key(keys["auditor"]), say, home, clock.now(),
                                        settings.billing_timezone)

    out["audit"] = _audit_trail(admin.with_key(keys["auditor"]), say, home)
    return out


def _audit_trail(auditor: Client, say: Narrator, home: Path) -> dict[str, Any]:
    """The regulator reads the log, takes its checkpoint and export, and verifies them offline."""
    from disclosure.checkpoint import load_verifier_key
    from disclosure.export import verify_export

    events = auditor.get("/v1/audit/events", params={"latest": 1000})["events"]
    refusals = [e for e in events if e["decision"] != "allow"]
    say.step(f"The regulator reads the audit trail: {len(events)} records, {len(refusals)} not allowed")
    for e in refusals[-3:]:
        say.detail(f"#{e['seq']:<4} {e['action']:14} {e['decision']:8} {e['code'] or '':24} {e['resource']['name']}")
    vkey_text = next(iter(auditor.get("/v1/keys")["checkpoint_verifier_keys"].values()))
    export = auditor.get("/v1/audit/export", raw=True)
    files = {"export": home / "audit-export.jsonl", "checkpoint": home / "audit-checkpoint.txt",
             "public_key": home / "audit-checkpoint.vkey"}
    files["export"].write_bytes(export)
    files["public_key"].write_text(vkey_text + "\n", "utf-8")
    note = json.loads(export.split(b"\n", 1)[0])["checkpoint"]
    files["checkpoint"].write_text(note, "utf-8")
    say.step("The latest checkpoint (C2SP signed note, Ed25519), as any C2SP verifier or witness reads it")
    say.verbatim(note.rstrip("\n"))
    key = [load_verifier_key(vkey_text.encode())]
    report = verify_export(export, key)
    say.step(f"Offline verification of the export ({files['export'].name}) against the checkpoint key "
             f"({files['public_key'].name}), as `sluice audit verify` does")
    say.detail(f"{'OK' if report.ok else 'FAILED'}: {report.entries} records, tree size {report.tree_size}")
    lines = export.split(b"\n")
    victim = len(lines) // 2
    at = lines[victim].index(b'"decision":"') + len(b'"decision":"')
    lines[victim] = lines[victim][:at] + bytes([lines[victim][at] ^ 0x01]) + lines[victim][at + 1:]
    tampered = verify_export(b"\n".join(lines), key)
    say.detail(f"one byte changed in line {victim + 1}: {'OK' if tampered.ok else 'FAILED'} — "
               f"{tampered.problems[0] if tampered.problems else ''}")
    if not report.ok or tampered.ok:
        raise DemoError(f"the audit log did not verify as it should: {report.problems} / {tampered.ok}")
    say.detail(f"check it yourself: sluice audit verify {files['export']} --public-key {files['public_key']}")
    return {"records": len(events), "refusals": len(refusals), "tree_size": report.tree_size,
            "verified": report.ok, "tampered_detected": not tampered.ok,
            "tampered_entry": tampered.first_bad_entry, "files": {k: str(v) for k, v in files.items()},
            "checkpoint": note}


HEALTH_COST_SQL = """SELECT r.district,
       count(DISTINCT v.person_id) AS patients,
       count(*) AS visits,
       sum(v.cost) AS total_cost,
       avg(v.cost) AS avg_cost_per_visit
FROM clinic_visits AS v
JOIN residents AS r ON v.person_id = r.person_id
WHERE v.visit_date >= $since
GROUP BY r.district
ORDER BY total_cost DESC"""

ATTACK_SQL = """WITH renamed AS (SELECT person_id AS pid, cost AS c FROM clinic_visits)
SELECT pid, c FROM renamed WHERE c > 1000"""


def _governed_queries(admin: Client, keys: dict[str, str], grants: dict[str, str], say: Narrator,
                      today: date) -> dict[str, Any]:
    """Submit, review and run a health-cost query; show an attack being refused; an auto-approved query."""
    analyst = admin.with_key(keys["health_analyst"])
    out: dict[str, Any] = {}
    say.step("The public-interest operator submits a health-cost-by-district query under its scenario grant")
    job = analyst.post("/v1/jobs", {"grant_id": grants["health_scenario"], "title": "Health cost by district",
                                    "purpose": "plan clinic capacity per district", "sql": HEALTH_COST_SQL,
                                    "parameters": {"since": "DATE"}})
    say.detail(f"job {job['id']}: {job['state']} (important data joined: {job['reviews_required']} reviews needed)")
    for reviewer in ("reviewer_1", "reviewer_2"):
        job = admin.with_key(keys[reviewer]).post(f"/v1/jobs/{job['id']}/review", {
            "decision": "approve", "comment": "aggregates by district only; k=20 applies"})
        say.detail(f"{reviewer} approves -> {job['state']}")
    say.detail(f"frozen SQL sha256 {job['frozen_sql_sha256'][:16]}…, pinned versions {job['dataset_versions']}")
    since = (today - timedelta(days=365)).isoformat()
    run = analyst.post(f"/v1/jobs/{job['id']}/runs", {"params": {"since": since}},
                       headers={"Idempotency-Key": "demo-health-cost-1"})
    rows = analyst.get(f"/v1/runs/{run['id']}/result", params={"format": "json"})
    say.detail(f"run {run['id']}: {run['status']}, {run['result_rows']} districts out, "
               f"{run['suppressed_cells']} cells suppressed {run['suppression']} (k=20 patients, dominance, "
               "release audit), "
               f"{run['rows_scanned']} rows scanned")
    for row in rows:
        cost = "suppressed" if row["total_cost"] is None else f"{float(row['total_cost']):,.2f}"
        say.detail(f"  {row['district']:6} patients={row['patients']!s:>5} visits={row['visits']!s:>6} "
                   f"total_cost={cost:>12}")
    out["health_cost"] = {"job": job["id"], "run": run["id"], "result_rows": run["result_rows"],
                          "suppressed_cells": run["suppressed_cells"], "suppression": run["suppression"],
                          "districts": [r["district"] for r in rows]}
    if run["suppressed_cells"] < 1:
        raise DemoError("the small district was not suppressed")

    say.step("An attack query (raw values through a CTE rename) is refused with findings")
    try:
        analyst.post("/v1/jobs", {"grant_id": grants["health_scenario"], "title": "extract",
                                  "purpose": "list expensive patients", "sql": ATTACK_SQL})
        raise DemoError("the attack query was accepted")
    except ApiError as e:
        findings = e.problem.get("context", {}).get("findings", [])
        for f in findings:
            say.detail(f"{f['code']} (line {f.get('line')}): {f['message']}")
        out["attack"] = {"code": e.code, "findings": sorted({f["code"] for f in findings})}

    say.step("A single-dataset query on an auto-approve grant runs without review")
    weather = analyst.post("/v1/jobs", {"grant_id": grants["health_domain"], "title": "Rain by district",
                                        "purpose": "flood-risk context for clinics",
                                        "sql": "SELECT district, sum(rain_mm) AS rain, avg(temperature) AS t "
                                               "FROM weather GROUP BY district ORDER BY rain DESC"})
    wrun = analyst.post(f"/v1/jobs/{weather['id']}/runs", {"params": {}})
    say.detail(f"job {weather['id']}: {weather['state']}; run {wrun['status']} with {wrun['result_rows']} rows")
    out["auto_approved"] = {"job": weather["id"], "state": weather["state"], "run_status": wrun["status"]}
    return out


def init_org(admin: Client) -> str:
    """The platform agency's id (reviewers belong to the implementing agency)."""
    me = admin.get("/v1/me")
    return str(me["org_id"])
