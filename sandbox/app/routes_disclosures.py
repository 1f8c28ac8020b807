"""Disclosure reports over HTTP: published reports are public; drafts (a period not closed or not published)
are shown only to the agency and regulators; the agency publishes a closed period (docs/disclosure.md)."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from disclosure.labels import LANGS
from disclosure.render import to_csv, to_html, to_markdown
from disclosure.signing import canonical_json
from policy.authz import Scope
from sandbox import disclosures
from sandbox.app.deps import SESSION, AppState, Guard, _bearer, app_state, public, require
from sandbox.audit import AuditDraft
from sandbox.errors import Forbidden, NotFound
from sandbox.identity import authenticate
from sandbox.store.models import DisclosureRow

router = APIRouter(prefix="/v1/disclosures", tags=["disclosures"])
FORMAT = Query("json", pattern="^(json|html|md|csv)$", description="json (signed bytes), html, md, or csv (zip)")
LANG = Query("en", pattern="^(en|zh-CN)$", description="labels of html, md and csv; JSON is language-neutral")
MEDIA = {"json": "application/json", "html": "text/html; charset=utf-8", "md": "text/markdown; charset=utf-8",
         "csv": "application/zip"}


def schema_text() -> str:
    """The published JSON Schema of the report document."""
    return resources.files("disclosure").joinpath("disclosure.schema.json").read_text("utf-8")


def rendered(report: dict[str, Any], data: bytes, signature: dict[str, Any], fmt: str, lang: str) -> bytes:
    """The report in `fmt`: the signed JSON bytes themselves, or a rendering of them in `lang`."""
    if fmt == "json":
        return data
    if fmt == "html":
        return to_html(report, lang, signature=signature).encode("utf-8")
    if fmt == "md":
        return to_markdown(report, lang).encode("utf-8")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in sorted(to_csv(report, lang).items()):
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), content)
        z.writestr(zipfile.ZipInfo("report.json", date_time=(1980, 1, 1, 0, 0, 0)), data)
        z.writestr(zipfile.ZipInfo("report.sig.json", date_time=(1980, 1, 1, 0, 0, 0)),
                   json.dumps(signature, sort_keys=True))
    return buf.getvalue()


def draft_reader(request: Request, state: AppState, session: Session, draft: AuditDraft) -> None:
    """Let a public request see a draft only with a key that may read drafts (agency, regulators); audited."""
    if not request.headers.get("authorization"):
        raise NotFound("this period's disclosure is not published; drafts need a key of the agency or a "
                       "regulator", code="disclosure_not_published")
    caller = authenticate(session, _bearer(request), now=state.clock.now(), cache=state.key_cache)
    draft.actor_id, draft.actor_org_id, draft.actor_key_id = caller.principal_id, caller.org_id, caller.key_id
    decision = state.authorizer.decide(caller.subjects, "disclosure", "read_draft", Scope.OTHER)
    draft.rule, draft.reason = decision.rule, decision.reason
    if not decision.allowed:
        raise Forbidden("drafts are visible only to the agency and regulators", code="permission_denied",
                        rule=decision.rule)


def report_for(request: Request, state: AppState, session: Session, draft: AuditDraft, period_text: str
               ) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """The published report of a period, or (for the agency and regulators) the draft built now."""
    period = disclosures.parse_period(period_text)
    row = disclosures.published(session, str(period))
    draft.resource = f"disclosure/{period}"
    if row is not None:
        draft.note(period=str(period), status="published", sha256=row.sha256)
        return disclosures.stored_report(row), row.report.encode("utf-8"), row.signature
    draft_reader(request, state, session, draft)
    built = disclosures.build(session, state.audit_log, state.keyring, period,
                              tz_name=state.settings.billing_timezone, now=state.clock.now())
    draft.note(period=str(period), status=built.report["status"], sha256=built.signature["sha256"])
    return built.report, built.data, built.signature


@router.get("")
def list_disclosures(draft: AuditDraft = public("disclosure:list"),
                     session: Session = SESSION) -> dict[str, Any]:
    """Published disclosure reports, newest first."""
    rows = session.scalars(select(DisclosureRow).order_by(DisclosureRow.published_at.desc()))
    out = [{"period": r.period, "sha256": r.sha256, "cut_off": r.cut_off.isoformat(),
            "published_at": r.published_at.isoformat(), "kid": r.signature["signature"]["kid"]} for r in rows]
    draft.note(returned=len(out))
    return {"disclosures": out, "languages": list(LANGS)}


@router.get("/schema")
def get_schema(_: AuditDraft = public("disclosure:schema")) -> Response:
    """The JSON Schema of the report document."""
    return Response(schema_text(), media_type="application/schema+json")


@router.get("/{period}", response_model=None)
def get_disclosure(period: str, request: Request, format: str = FORMAT, lang: str = LANG,
                   draft: AuditDraft = public("disclosure:read"), session: Session = SESSION,
                   state: AppState = Depends(app_state)) -> Response:
    """A period's report: public once published; a draft otherwise, for the agency and regulators only."""
    report, data, signature = report_for(request, state, session, draft, period)
    draft.note(format=format, lang=lang)
    headers = {"X-Disclosure-SHA256": signature["sha256"], "X-Disclosure-Status": report["status"],
               "X-Disclosure-Signature": base64.b64encode(canonical_json(signature)).decode("ascii")}
    if format == "csv":
        headers["Content-Disposition"] = f'attachment; filename="disclosure-{report["period"]}-{lang}.zip"'
    return Response(rendered(report, data, signature, format, lang), media_type=MEDIA[format], headers=headers)


@router.get("/{period}/signature")
def get_signature(period: str, request: Request, draft: AuditDraft = public("disclosure:read"),
                  session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """The signature document of a period's report (verify it with the `disclosure` keys of /v1/keys)."""
    return report_for(request, state, session, draft, period)[2]


@router.post("/{period}/publish", status_code=201)
def publish(period: str, guard: Guard = require("disclosure", "publish"),
            session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Publish a closed period's report: its cut-off is now; the signed JSON is stored and served as it is."""
    parsed = disclosures.parse_period(period)
    guard.check(guard.caller.org_id, f"disclosure/{parsed}")
    row = disclosures.publish(session, state.audit_log, state.keyring, parsed,
                              tz_name=state.settings.billing_timezone, now=state.clock.now(),
                              actor=guard.caller.principal_id)
    guard.note(period=row.period, sha256=row.sha256, checkpoint_size=row.checkpoint_size)
    return {"period": row.period, "sha256": row.sha256, "cut_off": row.cut_off.isoformat(),
            "checkpoint_size": row.checkpoint_size, "signature": row.signature,
            "published_at": row.published_at.isoformat()}
