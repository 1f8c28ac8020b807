"""The regulator's console: server-rendered pages (Jinja2 templates from `disclosure`) over the same store and
permissions as the API. Signed-in pages go through `console_require`; the catalogue, published disclosures and
certificate pages are public. Operators see only their own organization; regulators see everything, read-only.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from disclosure.checkpoint import verifier_key
from disclosure.console import render_page
from disclosure.render import bars, to_html
from disclosure.signing import canonical_json
from metering.money import fen_text
from sandbox import console, disclosures
from sandbox.app.console_deps import ConsoleGuard, console_require
from sandbox.app.deps import SESSION, AppState, app_state, public
from sandbox.app.routes_audit import Filters
from sandbox.audit import AuditDraft, leaf_record
from sandbox.catalogue import certificates
from sandbox.errors import InvalidInput, NotFound, NotFoundOrNotYours, Unauthenticated
from sandbox.identity import authenticate
from sandbox.store.models import (
    AuditCheckpoint,
    AuditEvent,
    BillRow,
    Certificate,
    DatasetVersion,
    DisclosureRow,
    Grant,
    Job,
    Organization,
    PriceListEntry,
    Product,
    Run,
    UsageEventRow,
)

router = APIRouter(prefix="/console", tags=["console"], include_in_schema=False)
_EVENTS = AuditEvent.__table__
PAGE = 50


def _page(state: AppState, template: str, cg: ConsoleGuard | None, **context: Any) -> HTMLResponse:
    user = None
    if cg is not None:
        c = cg.guard.caller
        user = {"name": c.principal_name, "org": c.org_id, "kind": c.org_kind, "roles": list(c.roles),
                "csrf": cg.session_row.csrf_token}
    return HTMLResponse(render_page(template, user=user, **context),
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                 "style-src 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
                                 "frame-ancestors 'none'"})


def _names(session: Session) -> dict[str, str]:
    return dict(session.execute(select(Organization.id, Organization.name)).all())


# --- sign-in ---------------------------------------------------------------------------------------------------

@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(next: str = Query("/console", max_length=300), why: str | None = Query(None, max_length=60),
                 draft: AuditDraft = public("console:sign_in_page"),
                 state: AppState = Depends(app_state)) -> HTMLResponse:
    """The sign-in form: an API key, exchanged for a session cookie."""
    token = console.new_csrf()
    response = _page(state, "sign_in.html.j2", None, csrf=token, next=_local(next), why=why)
    _cookie(response, state, console.CSRF_COOKIE, token, max_age=3600)
    return response


def _local(path: str) -> str:
    """Only a path inside the console is a valid destination after sign-in."""
    return path if path.startswith("/console") and "//" not in path else "/console"


def _cookie(response: Response, state: AppState, name: str, value: str, *, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", path="/console",
                        secure=not state.settings.console_allow_http)


@router.post("/sign-in")
def sign_in(request: Request, api_key: str = Form(..., max_length=200), csrf: str = Form(..., max_length=100),
            next: str = Form("/console", max_length=300), draft: AuditDraft = public("console:sign_in"),
            session: Session = SESSION, state: AppState = Depends(app_state)) -> Response:
    """Check the key; on success set the HTTP-only session cookie and go on."""
    console.check_csrf(request.cookies.get(console.CSRF_COOKIE), csrf)
    now = state.clock.now()
    try:
        caller = authenticate(session, api_key.strip(), now=now)
    except Unauthenticated as exc:
        draft.rule, draft.reason = "authentication", exc.message
        return RedirectResponse("/console/sign-in?" + _query(next=_local(next), why=exc.code), status_code=303)
    draft.actor_id, draft.actor_org_id, draft.actor_key_id = caller.principal_id, caller.org_id, caller.key_id
    token, _ = console.sign_in(session, caller, now=now, minutes=state.settings.console_session_minutes)
    draft.note(signed_in=True)
    response = RedirectResponse(_local(next), status_code=303)
    _cookie(response, state, console.COOKIE, token, max_age=60 * state.settings.console_session_minutes)
    response.delete_cookie(console.CSRF_COOKIE, path="/console")
    return response


def _query(**params: str) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


@router.post("/sign-out")
def sign_out(csrf: str = Form(..., max_length=100), cg: ConsoleGuard = console_require("self", "read"),
             state: AppState = Depends(app_state)) -> Response:
    """End this console session."""
    console.check_csrf(cg.session_row.csrf_token, csrf)
    console.sign_out(cg.session_row, state.clock.now())
    cg.guard.note(signed_out=True)
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(console.COOKIE, path="/console")
    return response


# --- signed-in pages ---------------------------------------------------------------------------------------------

@router.get("", response_class=HTMLResponse)
def home(cg: ConsoleGuard = console_require("self", "read"), state: AppState = Depends(app_state)
         ) -> HTMLResponse:
    """Where the console's pages are."""
    return _page(state, "home.html.j2", cg, regulator=cg.guard.caller.org_kind == "regulator")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(actor: str = Query("", max_length=40), org: str = Query("", max_length=40),
               dataset: str = Query("", max_length=64), action: str = Query("", max_length=60),
               decision: str = Query("", pattern="^(|allow|deny|refused|invalid|failed)$"),
               since: str = Query("", max_length=40), until: str = Query("", max_length=40),
               cursor: int = Query(0, ge=0),
               cg: ConsoleGuard = console_require("audit", "read"), session: Session = SESSION,
               state: AppState = Depends(app_state)) -> HTMLResponse:
    """The audit trail, filterable and paginated, with the checkpoint history; each entry verifiable in the
    browser against the checkpoint it is shown with."""
    filters = Filters(actor=actor or None, org=org or None, dataset=dataset or None, action=action or None,
                      decision=decision or None, since=since or None, until=until or None)  # empty field: no filter
    checkpoint = state.audit_log.checkpoint("console")
    conditions = [*filters.where(cg.guard), _EVENTS.c.seq < checkpoint.size, _EVENTS.c.seq >= cursor]
    rows = session.execute(select(_EVENTS).where(*conditions).order_by(_EVENTS.c.seq).limit(PAGE + 1)
                           ).mappings().all()
    more = len(rows) > PAGE
    events = [leaf_record(r, int(r["seq"])) for r in rows[:PAGE]]
    history = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(20)).all()
    cg.guard.note(filters=filters.given(), returned=len(events), tree_size=checkpoint.size)
    given = filters.given()
    next_link = None
    if more:
        next_link = "/console/audit?" + _query(**given, cursor=str(int(rows[PAGE]["seq"])))
    return _page(state, "audit.html.j2", cg, events=events, filters=given, next_link=next_link,
                 export_query=_query(**given),
                 checkpoint={"size": checkpoint.size, "note": checkpoint.note},
                 history=[{"size": h.size, "timestamp": h.timestamp.isoformat(), "reason": h.reason,
                           "root": base64.b64encode(bytes(h.root)).decode("ascii")} for h in history],
                 pinned=_pinned_keys(state))


def _pinned_keys(state: AppState) -> list[str]:
    """The checkpoint verifier keys the console pins (setting, else this home's keys at first use)."""
    if state.settings.console_checkpoint_key:
        return [state.settings.console_checkpoint_key]
    pinned: list[str] | None = getattr(state, "_console_pins", None)
    if pinned is None:
        origin = state.audit_log.origin
        pinned = [verifier_key(origin, k) for _, k in sorted(state.keyring.public_keys("checkpoint").items())]
        state._console_pins = pinned  # type: ignore[attr-defined]
    return pinned


@router.get("/audit/proof")
def audit_proof(seq: int = Query(..., ge=0), size: int = Query(..., ge=1),
                cg: ConsoleGuard = console_require("audit", "read"), session: Session = SESSION,
                state: AppState = Depends(app_state)) -> dict[str, Any]:
    """An entry's exact leaf bytes and its inclusion proof in the checkpoint of `size`, for the browser to check."""
    if seq >= size:
        raise InvalidInput("seq must be below the checkpoint's size", code="invalid_proof_request")
    row = session.execute(select(_EVENTS).where(_EVENTS.c.seq == seq)).mappings().first()
    owner = None if row is None else (row["actor_org_id"] if row["actor_org_id"] == cg.guard.caller.org_id
                                      else row["resource_org_id"])
    if row is None or (not cg.guard.any_org and owner != cg.guard.caller.org_id):
        raise NotFoundOrNotYours(f"audit record {seq} does not exist or belongs to another organization")
    checkpoint = session.scalar(select(AuditCheckpoint).where(AuditCheckpoint.size == size)
                                .order_by(AuditCheckpoint.id.desc()).limit(1))
    if checkpoint is None:
        raise NotFound(f"no checkpoint of size {size}", code="checkpoint_not_found")
    leaf = canonical_json(leaf_record(row, seq)).decode("utf-8")
    proof = [base64.b64encode(p).decode("ascii") for p in state.audit_log.inclusion(session, seq, size)]
    cg.guard.note(seq=seq, tree_size=size)
    return {"seq": seq, "tree_size": size, "leaf": leaf, "proof": proof, "checkpoint": checkpoint.note}


@router.get("/grants", response_class=HTMLResponse)
def grants_page(cg: ConsoleGuard = console_require("grant", "read"), session: Session = SESSION,
                state: AppState = Depends(app_state)) -> HTMLResponse:
    """Grants with scope, scenario, purpose class, validity and status."""
    q = select(Grant).order_by(Grant.created_at, Grant.id)
    if not cg.guard.any_org:
        q = q.where(Grant.operator_org_id == cg.guard.caller.org_id)
    names = _names(session)
    rows = [[g.id, names.get(g.operator_org_id, g.operator_org_id), g.scope, ", ".join(g.domains),
             ", ".join(g.datasets), (g.scenario or {}).get("name", ""), g.purpose_class,
             g.valid_from.date().isoformat(), g.valid_until.date().isoformat(), g.status]
            for g in session.scalars(q)]
    cg.guard.note(returned=len(rows))
    return _page(state, "table.html.j2", cg, title="Grants", tables=[{
        "caption": "Grants (authorized operation)", "headers": ["Grant", "Operator", "Scope", "Domains", "Datasets",
                                                               "Scenario", "Purpose class", "Valid from",
                                                               "Valid until", "Status"], "rows": rows}])


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(cg: ConsoleGuard = console_require("dataset", "read"),
                  session: Session = SESSION, state: AppState = Depends(app_state)) -> HTMLResponse:
    """Dataset versions with their certificates and QR codes."""
    names = _names(session)
    from sandbox.store.models import Dataset

    q = select(DatasetVersion, Dataset).join(Dataset, Dataset.id == DatasetVersion.dataset_id).order_by(
        DatasetVersion.dataset_id, DatasetVersion.version)
    if not cg.guard.any_org:
        q = q.where(Dataset.provider_org_id == cg.guard.caller.org_id)
    base = state.settings.public_url.rstrip("/")
    items = []
    for v, ds in session.execute(q).all():
        cert = session.get(Certificate, v.certificate_code) if v.certificate_code else None
        qr = None
        if cert is not None:
            png = certificates.qr_png(cert.code, f"{base}/v1/certificates/{cert.code}", scale=3)
            qr = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        items.append({"id": v.dataset_id, "version": v.version, "title": v.title, "grade": v.grade,
                      "domain": v.domain, "provider": names.get(ds.provider_org_id, ds.provider_org_id),
                      "state": v.registration_state, "certificate": cert.code if cert else None,
                      "revoked": bool(cert and cert.revoked_at), "qr": qr, "rows": v.row_count})
    cg.guard.note(returned=len(items))
    return _page(state, "datasets.html.j2", cg, items=items)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(cg: ConsoleGuard = console_require("job", "read"), session: Session = SESSION,
              state: AppState = Depends(app_state)) -> HTMLResponse:
    """Jobs and their runs."""
    q = select(Job).order_by(Job.created_at.desc(), Job.id).limit(200)
    rq = select(Run).order_by(Run.created_at.desc(), Run.id).limit(200)
    if not cg.guard.any_org:
        q = q.where(Job.operator_org_id == cg.guard.caller.org_id)
        rq = rq.where(Run.operator_org_id == cg.guard.caller.org_id)
    names = _names(session)
    jobs = [[j.id, names.get(j.operator_org_id, j.operator_org_id), j.title, j.state,
             ", ".join(sorted({f["code"] for f in j.findings})), j.created_at.isoformat()] for j in session.scalars(q)]
    runs = [[{"href": f"/console/runs/{r.id}", "text": r.id}, r.job_id, r.status, r.result_rows, r.suppressed_cells,
             r.created_at.isoformat()] for r in session.scalars(rq)]
    cg.guard.note(returned=len(jobs) + len(runs))
    return _page(state, "table.html.j2", cg, title="Jobs and runs", tables=[
        {"caption": "Runs", "headers": ["Run", "Job", "Status", "Result rows", "Suppressed cells", "Created"],
         "rows": runs},
        {"caption": "Jobs", "headers": ["Job", "Operator", "Title", "State", "Findings", "Submitted"], "rows": jobs}])


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(run_id: str, cg: ConsoleGuard = console_require("run", "read"),
             session: Session = SESSION, state: AppState = Depends(app_state)) -> HTMLResponse:
    """One run with its job's frozen SQL and findings."""
    run = cg.guard.owned(session, Run, run_id, owner=lambda r: r.operator_org_id, kind="run")
    job = session.get(Job, run.job_id)
    assert job is not None
    cg.guard.note(run_id=run.id, job_id=job.id, grant_id=run.grant_id, sql_sha256=run.frozen_sql_sha256)
    return _page(state, "run.html.j2", cg, run=run, job=job, suppression=dict(run.suppression or {}))


@router.get("/usage", response_class=HTMLResponse)
def usage_page(cg: ConsoleGuard = console_require("usage", "read"), session: Session = SESSION,
               state: AppState = Depends(app_state)) -> HTMLResponse:
    """Usage and revenue charts by month, operator and dataset."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(state.settings.billing_timezone)
    q = select(UsageEventRow).where(UsageEventRow.kind != "reversal")
    bq = select(BillRow).where(BillRow.status == "finalized", BillRow.relation == "product")
    if not cg.guard.any_org:
        own = cg.guard.caller.org_id
        q = q.where(or_(UsageEventRow.operator_org_id == own, UsageEventRow.payer_org_id == own))
        bq = bq.where(or_(BillRow.issuer_org_id == own, BillRow.payer_org_id == own))
    names = _names(session)
    by_month: dict[str, int] = defaultdict(int)
    by_operator: dict[str, int] = defaultdict(int)
    rows_by_dataset: dict[str, int] = defaultdict(int)
    for e in session.scalars(q):
        by_month[e.event_time.astimezone(tz).strftime("%Y-%m")] += 1
        by_operator[names.get(e.operator_org_id, e.operator_org_id)] += 1
        for d in e.datasets:
            rows_by_dataset[str(d[0])] += int(d[1])
    revenue: dict[str, Any] = defaultdict(int)
    for b in session.scalars(bq):
        revenue[f"{b.period} {names.get(b.issuer_org_id, b.issuer_org_id)}"] += b.total
    charts = [
        ("Metered accesses by month", bars([(k, float(v), str(v)) for k, v in sorted(by_month.items())])),
        ("Metered accesses by operator", bars([(k, float(v), str(v)) for k, v in sorted(by_operator.items())])),
        ("Rows read by dataset", bars([(k, float(v), str(v)) for k, v in sorted(rows_by_dataset.items())])),
        ("Revenue on final product bills by month and operator (CNY)",
         bars([(k, float(v), fen_text(v)) for k, v in sorted(revenue.items())])),
    ]
    cg.guard.note(events=sum(by_month.values()))
    return _page(state, "usage.html.j2", cg, charts=charts)


def _periods(now: datetime, tz_name: str) -> list[str]:
    from zoneinfo import ZoneInfo

    local = now.astimezone(ZoneInfo(tz_name))
    return [f"{local.year}", f"{local.year}-Q{(local.month + 2) // 3}", f"{local.year}-{local.month:02d}"]


@router.get("/disclosures", response_class=HTMLResponse)
def disclosures_page(cg: ConsoleGuard = console_require("self", "read"),
                     session: Session = SESSION, state: AppState = Depends(app_state)) -> HTMLResponse:
    """Published disclosures, and (for the agency and regulators) the drafts of the current periods."""
    published = [{"period": r.period, "sha256": r.sha256, "published_at": r.published_at.isoformat()}
                 for r in session.scalars(select(DisclosureRow).order_by(DisclosureRow.published_at.desc()))]
    drafts = _periods(state.clock.now(), state.settings.billing_timezone) if cg.may("disclosure", "read_draft") \
        else []
    cg.guard.note(published=len(published), drafts=len(drafts))
    return _page(state, "disclosures.html.j2", cg, published=published, drafts=drafts, base="/console/disclosures")


@router.get("/audit/export", response_model=None)
def audit_export(actor: str = Query("", max_length=40), org: str = Query("", max_length=40),
                 dataset: str = Query("", max_length=64), action: str = Query("", max_length=60),
                 decision: str = Query("", pattern="^(|allow|deny|refused|invalid|failed)$"),
                 since: str = Query("", max_length=40), until: str = Query("", max_length=40),
                 cg: ConsoleGuard = console_require("audit", "export"), session: Session = SESSION,
                 state: AppState = Depends(app_state)) -> Response:
    """The audit export (JSON lines with the signed checkpoint and proofs) for `sluice audit verify`, from the
    browser: the same document as GET /v1/audit/export."""
    from sandbox.app.routes_audit import export

    filters = Filters(actor=actor or None, org=org or None, dataset=dataset or None, action=action or None,
                      decision=decision or None, since=since or None, until=until or None)
    return export(filters=filters, consistency_from=[], guard=cg.guard, session=session, state=state)


def _report_for(cg: ConsoleGuard, session: Session, state: AppState, period: str
                ) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    parsed = disclosures.parse_period(period)
    row = disclosures.published(session, str(parsed))
    cg.guard.audit.resource = f"disclosure/{parsed}"
    if row is not None:
        return disclosures.stored_report(row), row.report.encode("utf-8"), row.signature
    if cg.may("disclosure", "read_draft"):
        built = disclosures.build(session, state.audit_log, state.keyring, parsed,
                                  tz_name=state.settings.billing_timezone, now=state.clock.now())
        return built.report, built.data, built.signature
    raise NotFound(f"the disclosure of {parsed} is not published", code="disclosure_not_published")


@router.get("/disclosures/{period}/file", response_model=None)
def disclosure_file(period: str, format: str = Query("json", pattern="^(json|md|csv|sig)$"),
                    lang: str = Query("en", pattern="^(en|zh-CN)$"),
                    cg: ConsoleGuard = console_require("self", "read"),
                    session: Session = SESSION, state: AppState = Depends(app_state)) -> Response:
    """A disclosure report to download: the signed JSON, its signature, Markdown, or CSV (zip)."""
    from sandbox.app.routes_disclosures import MEDIA, rendered

    report, data, signature = _report_for(cg, session, state, period)
    cg.guard.note(period=report["period"], status=report["status"], format=format, lang=lang)
    stem = f"disclosure-{report['period']}"
    if format == "sig":
        body, media = json.dumps(signature, sort_keys=True).encode("utf-8"), "application/json"
        name = f"{stem}.sig.json"
    else:
        body, media = rendered(report, data, signature, format, lang), MEDIA[format]
        name = f"{stem}.json" if format == "json" else f"{stem}.{lang}.{'zip' if format == 'csv' else format}"
    return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/disclosures/{period}", response_class=HTMLResponse)
def disclosure_page(period: str, lang: str = Query("en", pattern="^(en|zh-CN)$"),
                    cg: ConsoleGuard = console_require("self", "read"),
                    session: Session = SESSION, state: AppState = Depends(app_state)) -> HTMLResponse:
    """A disclosure report as HTML: published, or a draft for those who may read drafts."""
    report, _, signature = _report_for(cg, session, state, period)
    cg.guard.note(period=report["period"], status=report["status"], lang=lang)
    path = f"/console/disclosures/{report['period']}"
    return HTMLResponse(_with_switch(to_html(report, lang, signature=signature), path, lang, downloads=path))


def _with_switch(html: str, path: str, lang: str, downloads: str | None = None) -> str:
    """The report page with a link to the other language, back to the console, and (signed in) downloads."""
    other = "zh-CN" if lang == "en" else "en"
    text = "中文" if other == "zh-CN" else "English"
    files = ""
    if downloads:
        files = "".join(f' · <a href="{downloads}/file?format={f}&amp;lang={lang}">{t}</a>'
                        for f, t in (("json", "JSON"), ("sig", "signature"), ("md", "Markdown"), ("csv", "CSV")))
    nav = (f'<nav aria-label="report"><a href="/console">Console</a> · '
           f'<a id="other-lang" hreflang="{other}" href="{path}?lang={other}">{text}</a>{files}</nav>')
    return html.replace("<main>", nav + "<main>", 1)


# --- public pages ----------------------------------------------------------------------------------------------

@router.get("/catalogue", response_class=HTMLResponse)
def catalogue_page(draft: AuditDraft = public("catalogue:console"), session: Session = SESSION,
                   state: AppState = Depends(app_state)) -> HTMLResponse:
    """The product and service catalogue: operators' listed products and prices, and certified datasets."""
    from sandbox.billing.prices import entry_versions

    names = _names(session)
    now = state.clock.now()
    rows = []
    for e in session.scalars(select(PriceListEntry).order_by(PriceListEntry.operator_org_id, PriceListEntry.id)):
        current = [v for v in entry_versions(session, e) if v.effective_from <= now]
        price = current[-1].unit_price if current else None
        listed = session.scalars(select(Product).where(Product.entry_id == e.id, Product.status == "listed")
                                 .order_by(Product.id)).all()
        rows.append([names.get(e.operator_org_id, e.operator_org_id), e.name, e.category, e.basis, e.unit,
                     "—" if price is None else format(price, "f"),
                     ", ".join(f"{p.name} ({p.id})" for p in listed)])
    from sandbox.catalogue.registry import latest_certified_versions

    datasets = [[v.dataset_id, v.title, v.domain, v.grade, {"href": f"/v1/certificates/{v.certificate_code}",
                                                            "text": v.certificate_code or ""}]
                for v in latest_certified_versions(session)]
    draft.note(entries=len(rows), datasets=len(datasets))
    return _page(state, "table.html.j2", None, title="Product and service catalogue (产品和服务能力清单)",
                 public=True, tables=[
                     {"caption": "Products and services with their prices (CNY)",
                      "headers": ["Operator", "Price-list entry", "Category", "Basis", "Unit", "Unit price",
                                  "Listed products"],
                      "rows": rows},
                     {"caption": "Registered data resources (certified)",
                      "headers": ["Dataset", "Title", "Domain", "Grade", "Certificate"], "rows": datasets}])


@router.get("/published", response_class=HTMLResponse)
def published_page(draft: AuditDraft = public("disclosure:list"), session: Session = SESSION,
                   state: AppState = Depends(app_state)) -> HTMLResponse:
    """Published disclosure reports."""
    published = [{"period": r.period, "sha256": r.sha256, "published_at": r.published_at.isoformat()}
                 for r in session.scalars(select(DisclosureRow).order_by(DisclosureRow.published_at.desc()))]
    draft.note(returned=len(published))
    return _page(state, "disclosures.html.j2", None, published=published, drafts=[], base="/console/published",
                 public=True)


@router.get("/published/{period}", response_class=HTMLResponse)
def published_report(period: str, lang: str = Query("en", pattern="^(en|zh-CN)$"),
                     draft: AuditDraft = public("disclosure:read"), session: Session = SESSION
                     ) -> HTMLResponse:
    """A published disclosure report as HTML."""
    parsed = disclosures.parse_period(period)
    row = disclosures.published(session, str(parsed))
    draft.resource = f"disclosure/{parsed}"
    if row is None:
        raise NotFound(f"the disclosure of {parsed} is not published", code="disclosure_not_published")
    draft.note(period=row.period, sha256=row.sha256, lang=lang)
    html = to_html(disclosures.stored_report(row), lang, signature=row.signature)
    return HTMLResponse(_with_switch(html, f"/console/published/{parsed}", lang))


def certificate_page(result: dict[str, Any], state: AppState) -> HTMLResponse:
    """A certificate's public page in both languages: whether it verifies and whether it was revoked."""
    return _page(state, "certificate.html.j2", None, cert=result, public=True,
                 document=json.dumps(result, ensure_ascii=False, indent=2))

