"""Datasets (registration, versions), the public catalogue, and certificates."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import Response
from pydantic import Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from disclosure.checkpoint import verifier_key
from policy.authz import Scope
from sandbox.app.deps import SESSION, AppState, Guard, app_state, on_rollback, public, require
from sandbox.app.schemas import StrictModel, describe_error, describe_errors
from sandbox.audit import AuditDraft
from sandbox.catalogue import certificates, registration, registry
from sandbox.catalogue.domains import DOMAINS
from sandbox.catalogue.importer import ImportOptions, resolve_import_path
from sandbox.catalogue.registration import RegistrationState
from sandbox.errors import Conflict, Forbidden, InvalidInput, NotFound
from sandbox.store.models import Certificate, Dataset, DatasetVersion, Organization

router = APIRouter(prefix="/v1", tags=["catalogue"])


class ColumnDeclIn(StrictModel):
    constraint: str | None = None
    tags: list[str] = Field(default_factory=list)
    mask: str | None = None
    description: str = ""
    declared_type: str | None = Field(None, description="the type values should have; profiled as conformance")


class DatasetIn(StrictModel):
    """Registration metadata. Send as the `metadata` form field (JSON) next to `file`, or alone with `path`."""

    id: str | None = Field(None, description="stable dataset id; required for a new dataset")
    title: str
    description: str = ""
    domain: str
    update_frequency: str
    grade: str
    entity_column: str | None = None
    population: str | None = Field(None, description="entity id space shared with other datasets (default: the "
                                   "dataset's own); datasets whose entity columns hold the same ids share one")
    columns: dict[str, ColumnDeclIn] = Field(default_factory=dict)
    expectations: list[dict[str, Any]] = Field(
        default_factory=list, description="declared expectations, e.g. {'kind': 'unique', 'column': 'person_id'}")
    freshness_column: str | None = Field(None, description="DATE/TIMESTAMP column whose newest value dates the data")
    certify_now: bool = Field(False, description="demo/test shortcut, agency admin only: certify at once (audited)")
    provider_org_id: str | None = Field(None, description="defaults to the caller's organization")
    path: str | None = Field(None, description="server-side file under SLUICE_IMPORT_ROOT")
    format: str | None = None
    encoding: str = "utf-8"
    null_markers: list[str] = Field(default_factory=lambda: [""])
    delimiter: str = ","
    sheet: str | None = Field(None, description="xlsx: the sheet to register (default: the first)")
    header: bool = True
    column_types: dict[str, str] | None = None


def _parse_meta(raw: str) -> DatasetIn:
    try:
        return DatasetIn.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"metadata is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                           code="invalid_metadata") from None
    except ValidationError as exc:
        errors = list(exc.errors())
        raise InvalidInput(f"metadata is not valid: {describe_errors(errors, DatasetIn)}", code="invalid_metadata",
                           errors=[{"loc": list(e["loc"]), "msg": describe_error(e, DatasetIn)} for e in errors]
                           ) from None


def _spool(upload: UploadFile, dest_dir: Path, max_bytes: int) -> Path:
    """Save an upload under its own name in a fresh folder (errors then name the user's file, not a temp name)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=dest_dir))
    name = Path(upload.filename or "upload").name or "upload"
    target = folder / name
    total = 0
    with open(target, "wb") as out:
        while chunk := upload.file.read(1 << 20):
            total += len(chunk)
            if total > max_bytes:
                out.close()
                shutil.rmtree(folder, ignore_errors=True)
                raise InvalidInput(f"file exceeds SLUICE_MAX_UPLOAD_BYTES ({max_bytes} bytes)",
                                   code="file_too_large")
            out.write(chunk)
    return target


def sees_applications(guard: Guard, owner_org_id: str | None) -> bool:
    """True for the dataset's provider and for callers who read every registration (agency, regulators)."""
    return owner_org_id == guard.caller.org_id or guard.authorizer.widest_scope(
        guard.caller.subjects, "registration", "read") == Scope.OTHER


def public_state(v: DatasetVersion) -> bool:
    """Whether a version's metadata is for every key holder: certified, revoked or in public notice."""
    return v.registration_state in (RegistrationState.CERTIFIED, RegistrationState.REVOKED,
                                    RegistrationState.IN_PUBLIC_NOTICE)


def _certify_now_check(guard: Guard, meta: DatasetIn, owner_org_id: str) -> str | None:
    """The rule that lets this caller use certify_now, or None without it; refuses the agency filing otherwise."""
    if meta.certify_now:
        decision = guard.authorizer.decide(guard.caller.subjects, "registration", "certify_now", Scope.OTHER)
        if not decision.allowed:
            raise Forbidden("certify_now is a demo and test shortcut that only an agency admin may use",
                            code="certify_now_not_allowed", rule=decision.rule)
        return decision.rule
    if owner_org_id != guard.caller.org_id:
        raise Forbidden("a provider files its own applications; the agency registers a provider's dataset only "
                        "through the certify_now shortcut", code="filing_for_another_organization")
    return None


def _register(session: Session, state: AppState, guard: Guard, meta: DatasetIn, upload: UploadFile | None,
              dataset_id: str) -> dict[str, Any]:
    provider_id = meta.provider_org_id or guard.caller.org_id
    existing = session.get(Dataset, dataset_id)
    owner = existing.provider_org_id if existing else provider_id
    guard.check(owner, f"dataset/{dataset_id}")
    shortcut_rule = _certify_now_check(guard, meta, owner)
    provider = session.get(Organization, provider_id)
    if provider is None:
        raise NotFound(f"organization {provider_id} does not exist", code="org_not_found")
    if upload is not None and meta.path:
        raise InvalidInput("send either a file or a server-side path, not both", code="file_and_path")
    settings = state.settings
    spooled: Path | None = None
    if upload is not None:
        spooled = _spool(upload, settings.resolved_home / "uploads", settings.max_upload_bytes)
        source: Path | None = spooled
        source_name = upload.filename or "upload"
    elif meta.path:
        source = resolve_import_path(meta.path, settings.import_root)
        source_name = source.name
    else:
        source, source_name = None, ""
    options = ImportOptions(format=meta.format, encoding=meta.encoding, null_markers=tuple(meta.null_markers),
                            delimiter=meta.delimiter, header=meta.header, column_types=meta.column_types,
                            sheet=meta.sheet)
    dmeta = registry.DatasetMeta(
        title=meta.title, description=meta.description, domain=meta.domain, update_frequency=meta.update_frequency,
        grade=meta.grade, entity_column=meta.entity_column, population=meta.population, expectations=meta.expectations,
        freshness_column=meta.freshness_column,
        columns={k: registry.ColumnDecl(**v.model_dump()) for k, v in meta.columns.items()})
    now = state.clock.now()
    try:
        version = registration.submit(
            session, paths=registry.Paths(settings.resolved_home), provider=provider, dataset_id=dataset_id,
            meta=dmeta, source=source, source_name=source_name, options=options, now=now,
            actor_id=guard.caller.principal_id, max_bytes=settings.max_upload_bytes,
            on_rollback=lambda f: on_rollback(session, f))
    finally:
        if spooled is not None:
            shutil.rmtree(spooled.parent, ignore_errors=True)
    guard.note(dataset=dataset_id, version=version.version, state=version.registration_state,
               path=version.registration_path, parquet_sha256=version.parquet_sha256,
               findings=len(version.quality.get("findings", [])))
    if shortcut_rule is not None:
        registration.certify_now(session, version, actor_id=guard.caller.principal_id, now=now,
                                 keyring=state.keyring, provider=provider,
                                 reason="certify_now at registration (demo/test shortcut)")
        guard.note(shortcut="certify_now", shortcut_rule=shortcut_rule, state=version.registration_state,
                   certificate=version.certificate_code)
    return dict(registry.describe(version, provider.name))


@router.post("/datasets", status_code=201)
def register_dataset(metadata: str = Form(..., description="DatasetIn as JSON"),
                     file: UploadFile | None = File(None), guard: Guard = require("dataset", "create"),
                     session: Session = SESSION, state: AppState = Depends(app_state)
                     ) -> dict[str, Any]:
    """File a registration application for a new dataset (state `applied`); `certify_now` is the admin shortcut."""
    meta = _parse_meta(metadata)
    if not meta.id:
        raise InvalidInput("a new dataset needs an id", code="invalid_dataset_id")
    if session.get(Dataset, meta.id) is not None:
        raise Conflict(f"dataset {meta.id} exists; POST /v1/datasets/{meta.id}/versions adds a version",
                       code="dataset_exists")
    return _register(session, state, guard, meta, file, meta.id)


@router.post("/datasets/{dataset_id}/versions", status_code=201)
def register_version(dataset_id: str, metadata: str = Form(...), file: UploadFile | None = File(None),
                     guard: Guard = require("dataset", "create"), session: Session = SESSION,
                     state: AppState = Depends(app_state)) -> dict[str, Any]:
    """File an application for a new version: new data and/or changed grade, constraints or metadata."""
    meta = _parse_meta(metadata)
    if session.get(Dataset, dataset_id) is None:
        raise NotFound(f"dataset {dataset_id} does not exist", code="dataset_not_found")
    return _register(session, state, guard, meta, file, dataset_id)


def _provider_names(session: Session) -> dict[str, str]:
    return {row[0]: row[1] for row in session.execute(select(Organization.id, Organization.name))}


@router.get("/datasets")
def list_datasets(guard: Guard = require("dataset", "read"), session: Session = SESSION
                  ) -> list[dict[str, Any]]:
    """Every dataset's latest certified version, with column constraints (no data values).

    Applications that are not certified yet are listed under GET /v1/registrations.
    """
    names = _provider_names(session)
    owners = {d.id: d.provider_org_id for d in session.scalars(select(Dataset))}
    return [dict(registry.describe(v, names.get(owners[v.dataset_id])))
            for v in registry.latest_certified_versions(session)]


def _visible_versions(session: Session, guard: Guard, ds: Dataset) -> list[DatasetVersion]:
    versions = session.scalars(select(DatasetVersion).where(DatasetVersion.dataset_id == ds.id)
                               .order_by(DatasetVersion.version)).all()
    if sees_applications(guard, ds.provider_org_id):
        return list(versions)
    return [v for v in versions if public_state(v)]


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: str, guard: Guard = require("dataset", "read"),
                session: Session = SESSION) -> dict[str, Any]:
    """A dataset's latest certified version (else its newest visible one) plus its version history.

    The provider, the agency and regulators see every version; others see certified, revoked and noticed ones.
    """
    ds = session.get(Dataset, dataset_id)
    guard.check(ds.provider_org_id if ds else None, f"dataset/{dataset_id}")
    versions = _visible_versions(session, guard, ds) if ds is not None else []
    if ds is None or not versions:
        raise NotFound(f"dataset {dataset_id} does not exist", code="dataset_not_found")
    names = _provider_names(session)
    certified = [v for v in versions if v.registration_state == RegistrationState.CERTIFIED]
    shown = certified[-1] if certified else versions[-1]
    out = dict(registry.describe(shown, names.get(ds.provider_org_id)))
    out["versions"] = [{"version": v.version, "grade": v.grade, "created_at": v.created_at.isoformat(),
                        "registration_state": v.registration_state, "certificate_code": v.certificate_code,
                        "row_count": v.row_count, "parquet_sha256": v.parquet_sha256} for v in versions]
    return out


@router.get("/datasets/{dataset_id}/versions/{version}")
def get_dataset_version(dataset_id: str, version: int, guard: Guard = require("dataset", "read"),
                        session: Session = SESSION) -> dict[str, Any]:
    """One immutable version (applications only for their provider, the agency and regulators)."""
    ds = session.get(Dataset, dataset_id)
    guard.check(ds.provider_org_id if ds else None, f"dataset/{dataset_id}/{version}")
    v = registry.get_version(session, dataset_id, version)
    assert ds is not None
    if not public_state(v) and not sees_applications(guard, ds.provider_org_id):
        raise NotFound(f"dataset {dataset_id} has no version {version}", code="dataset_version_not_found")
    return dict(registry.describe(v, _provider_names(session).get(ds.provider_org_id)))


@router.get("/catalogue")
def public_catalogue(response: Response, audit: AuditDraft = public("catalogue:read"),
                     session: Session = SESSION) -> list[dict[str, Any]]:
    """The public catalogue: certified datasets, their grade and certificate; no schemas' values, no data.
    Operators' products built on them are listed at `GET /v1/products` (the `Link` header)."""
    response.headers["Link"] = '</v1/products>; rel="related"; title="products and services"'
    names = _provider_names(session)
    owners = {d.id: d.provider_org_id for d in session.scalars(select(Dataset))}
    versions = registry.latest_certified_versions(session)
    audit.note(datasets_listed=len(versions))
    return [{"id": v.dataset_id, "version": v.version, "title": v.title, "description": v.description,
             "domain": v.domain, "grade": v.grade, "update_frequency": v.update_frequency,
             "provider": names.get(owners[v.dataset_id]), "certificate_code": v.certificate_code,
             "columns": [c["name"] for c in v.columns]} for v in versions]


@router.get("/domains")
def domains(audit: AuditDraft = public("domains:read")) -> list[dict[str, str]]:
    """Data domains (codes with English and Chinese names)."""
    return [{"code": k, "name": en, "name_zh": zh} for k, (en, zh) in DOMAINS.items()]


def _certificate(session: Session, code: str) -> Certificate:
    cert = session.get(Certificate, code)
    if cert is None:
        raise NotFound(f"no certificate {code}", code="certificate_not_found")
    return cert


@router.get("/certificates/{code}", response_model=None)
def verify_certificate_online(code: str, request: Request, audit: AuditDraft = public("certificate:verify"),
                              session: Session = SESSION, state: AppState = Depends(app_state)
                              ) -> dict[str, Any] | Response:
    """Verify a certificate online: signature, key, agreement with the registry, and revocation. A browser
    (Accept: text/html, as when a printed QR code is scanned) gets the bilingual certificate page."""
    audit.resource = f"certificate/{code}"
    cert = _certificate(session, code)
    keyring = state.keyring
    check = certificates.verify_certificate_document(cert.document.encode("utf-8"),
                                                     keyring.public_keys("certificate"))
    version = registry.get_version(session, cert.dataset_id, cert.version)
    ds = session.get(Dataset, cert.dataset_id)
    provider = session.get(Organization, ds.provider_org_id) if ds else None
    matches = bool(check.valid and provider is not None and check.body is not None
                   and all(check.body.get(k) == v for k, v in
                           registry.certificate_metadata(version, provider).items()))
    revoked = cert.revoked_at is not None
    status = "revoked" if revoked else ("valid" if check.valid and matches else "invalid")
    audit.note(dataset=cert.dataset_id, version=cert.version, valid=bool(check.valid and matches and not revoked),
               status=status, check=check.reason)
    audit.resource_org_id = ds.provider_org_id if ds else None
    result = {"code": code, "valid": bool(check.valid and matches and not revoked), "status": status,
              "signature_valid": check.valid, "matches_registry": matches, "reason": check.reason,
              "revoked": revoked, "revoked_at": cert.revoked_at.isoformat() if cert.revoked_at else None,
              "revoked_reason": cert.revoked_reason, "registration_state": version.registration_state,
              "kid": cert.kid, "issued_at": cert.issued_at.isoformat(), "dataset": cert.dataset_id,
              "version": cert.version, "body": check.body}
    if "text/html" in request.headers.get("accept", ""):
        from sandbox.app.routes_console import certificate_page

        audit.note(page="html")
        return certificate_page(result, state)
    return result


@router.get("/certificates/{code}/document")
def certificate_document(code: str, audit: AuditDraft = public("certificate:read"),
                         session: Session = SESSION) -> Response:
    """The signed certificate file, for offline verification."""
    audit.resource = f"certificate/{code}"
    cert = _certificate(session, code)
    audit.note(dataset=cert.dataset_id, version=cert.version)
    return Response(cert.document.encode("utf-8"), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{code}.json"'})


@router.get("/certificates/{code}/qr.png")
def certificate_qr(code: str, audit: AuditDraft = public("certificate:read"),
                   session: Session = SESSION, state: AppState = Depends(app_state)) -> Response:
    """A QR code with the certificate code and its public verification URL."""
    audit.resource = f"certificate/{code}/qr.png"
    cert = _certificate(session, code)
    url = f"{state.settings.public_url.rstrip('/')}/v1/certificates/{cert.code}"
    return Response(certificates.qr_png(cert.code, url), media_type="image/png")


@router.get("/keys")
def public_keys(audit: AuditDraft = public("keys:read"), state: AppState = Depends(app_state)
                ) -> dict[str, Any]:
    """Public verification keys by signing context and key id (PEM); `checkpoint_verifier_keys` gives the
    checkpoint keys as C2SP verifier key strings named by the log's origin."""
    keyring = state.keyring
    out: dict[str, Any] = {}
    for context in ("certificate", "checkpoint", "disclosure"):
        out[context] = {kid: keyring.public_key_pem(context, kid).decode("ascii")
                        for kid in keyring.public_keys(context)}
    origin = state.settings.resolved_log_origin
    out["checkpoint_verifier_keys"] = {kid: verifier_key(origin, key)
                                       for kid, key in keyring.public_keys("checkpoint").items()}
    return out

