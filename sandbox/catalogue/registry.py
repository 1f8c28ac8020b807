"""Dataset registration: validate metadata, normalize the file, profile it and record an immutable version.

A version starts as an application (`applied`); sandbox/catalogue/registration.py moves it through the workflow
and issues its certificate. `latest_certified_version` is the one way grants, jobs and runs pick a version.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from policy.constraints import KNOWN_TAGS, Constraint, Grade, MaskKind, default_constraint, masked_type
from sandbox.catalogue.domains import DOMAINS
from sandbox.catalogue.importer import ImportOptions, NormalizedFile, normalize
from sandbox.catalogue.profile import (
    ProfileInput,
    UpdateFrequency,
    declared_type,
    freshness_column_check,
    parse_expectations,
    profile,
)
from sandbox.errors import Conflict, Forbidden, InvalidInput, NotFound
from sandbox.populations import check_population_name
from sandbox.store.models import Dataset, DatasetVersion, Organization

CERTIFIED = "certified"  # RegistrationState.CERTIFIED (registration.py imports this module, not the reverse)
DATASET_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
STRING_TYPES = ("VARCHAR",)
GENERALIZABLE = ("DATE", "TIMESTAMP", "TINYINT", "SMALLINT", "INTEGER", "BIGINT")


@dataclass
class ColumnDecl:
    """What a steward declares about one column; unset fields take defaults."""

    constraint: str | None = None
    tags: list[str] = field(default_factory=list)
    mask: str | None = None
    description: str = ""
    declared_type: str | None = None


@dataclass
class DatasetMeta:
    """Metadata of a dataset version."""

    title: str
    domain: str
    update_frequency: str
    grade: str
    description: str = ""
    entity_column: str | None = None
    population: str | None = None
    columns: dict[str, ColumnDecl] = field(default_factory=dict)
    expectations: list[dict[str, Any]] = field(default_factory=list)
    freshness_column: str | None = None


@dataclass(frozen=True)
class Paths:
    """Where the catalogue keeps files."""

    home: Path

    @property
    def data(self) -> Path:
        return self.home / "data"


def _validate_meta(meta: DatasetMeta) -> None:
    if not meta.title.strip():
        raise InvalidInput("title must not be empty", code="invalid_title")
    if meta.domain not in DOMAINS:
        raise InvalidInput(f"unknown domain {meta.domain!r}; use one of GET /v1/domains or 'other'",
                           code="invalid_domain", domain=meta.domain)
    try:
        Grade(meta.grade)
    except ValueError:
        raise InvalidInput(f"grade must be one of {', '.join(Grade)}", code="invalid_grade") from None
    try:
        UpdateFrequency(meta.update_frequency)
    except ValueError:
        raise InvalidInput(f"update_frequency must be one of {', '.join(UpdateFrequency)}",
                           code="invalid_update_frequency") from None
    if meta.population is not None:
        if meta.entity_column is None:
            raise InvalidInput("population names the entity id space of the entity_column; set entity_column too",
                               code="population_without_entity_column")
        check_population_name(meta.population)
    for name, decl in meta.columns.items():
        for tag in decl.tags:
            if tag not in KNOWN_TAGS:
                close = difflib.get_close_matches(tag, KNOWN_TAGS, n=1, cutoff=0.6)
                hint = f"did you mean `{close[0]}`?" if close else f"known tags: {', '.join(KNOWN_TAGS)}"
                raise InvalidInput(f"column {name}: unknown tag {tag!r} ({hint})", code="invalid_tag", column=name,
                                   tag=tag)


def population_of(meta: DatasetMeta, dataset_id: str) -> str | None:
    """The population a dataset's entity column belongs to: declared, else the dataset's own id space."""
    if meta.entity_column is None:
        return None
    return meta.population or dataset_id


def build_columns(meta: DatasetMeta, normalized: NormalizedFile) -> list[dict[str, Any]]:
    """Merge the file's schema with the steward's declarations into the stored column list."""
    names = [c.name for c in normalized.columns]
    unknown = sorted(set(meta.columns) - set(names))
    if unknown:
        raise InvalidInput(f"declared columns not in the file: {', '.join(unknown)}", code="unknown_column",
                           columns=unknown)
    if meta.entity_column is not None and meta.entity_column not in names:
        raise InvalidInput(f"entity_column {meta.entity_column} is not a column of the file",
                           code="unknown_entity_column", column=meta.entity_column)
    out = []
    for col in normalized.columns:
        decl = meta.columns.get(col.name, ColumnDecl())
        is_entity = col.name == meta.entity_column
        try:
            constraint = Constraint(decl.constraint) if decl.constraint else default_constraint(
                decl.tags, is_entity=is_entity)
        except ValueError:
            raise InvalidInput(f"column {col.name}: constraint must be one of {', '.join(Constraint)}",
                               code="invalid_constraint", column=col.name) from None
        if is_entity and constraint != Constraint.JOIN:
            raise InvalidInput(f"entity column {col.name} must be `join`: it is never output, compared or grouped, "
                               "and the threshold counts entities through it (hidden would make every run fail)",
                               code="entity_column_not_join", column=col.name)
        mask = None
        if decl.mask:
            try:
                mask = MaskKind(decl.mask)
            except ValueError:
                raise InvalidInput(f"column {col.name}: mask must be one of {', '.join(MaskKind)}",
                                   code="invalid_mask", column=col.name) from None
            base_type = col.type.split("(")[0]
            if mask == MaskKind.PARTIAL and base_type not in STRING_TYPES:
                raise InvalidInput(f"column {col.name}: partial masks apply to text columns", code="invalid_mask",
                                   column=col.name)
            if mask == MaskKind.GENERALIZE and base_type not in GENERALIZABLE:
                raise InvalidInput(f"column {col.name}: generalize applies to dates and integers",
                                   code="invalid_mask", column=col.name)
        entry = {"name": col.name, "type": col.type, "constraint": constraint.value,
                 "tags": sorted(set(decl.tags)), "mask": mask.value if mask else None,
                 "description": decl.description}
        if decl.declared_type:
            entry["declared_type"] = declared_type(col.name, decl.declared_type)
        out.append(entry)
    return out


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def certificate_metadata(version: DatasetVersion, provider: Organization) -> dict[str, Any]:
    """The canonical metadata a certificate signs.

    Versions certified through the workflow also sign their registration dates (application, acceptance,
    review, notice, issue) and path; versions migrated from before the workflow sign what they signed then.
    """
    body: dict[str, Any] = {
        "dataset": {"id": version.dataset_id, "version": version.version, "title": version.title,
                    "description": version.description, "domain": version.domain, "grade": version.grade,
                    "update_frequency": version.update_frequency_legacy or version.update_frequency,
                    "entity_column": version.entity_column},
        "provider": {"id": provider.id, "name": provider.name},
        "columns": [{k: c[k] for k in ("name", "type", "constraint", "tags", "mask")} for c in version.columns],
        "row_count": version.row_count,
        "byte_size": version.byte_size,
        "source_sha256": version.source_sha256,
        "parquet_sha256": version.parquet_sha256,
    }
    if version.registration_path != "migrated":
        body["registration"] = {
            "path": version.registration_path, "applied_at": _when(version.applied_at),
            "accepted_at": _when(version.accepted_at), "reviewed_at": _when(version.reviewed_at),
            "notice_started_at": _when(version.notice_started_at), "notice_ended_at": _when(version.notice_ends_at),
            "issued_at": _when(version.certified_at),
        }
    return body


def _version_dir(paths: Paths, dataset_id: str, version: int) -> Path:
    return paths.data / dataset_id / str(version)


def register(session: Session, *, paths: Paths, provider: Organization, dataset_id: str,
             meta: DatasetMeta, source: Path | None, source_name: str, options: ImportOptions, now: datetime,
             actor_id: str, max_bytes: int | None = None,
             progress: Callable[[int, int | None], None] | None = None,
             on_rollback: Callable[[Callable[[], None]], None] | None = None) -> DatasetVersion:
    """Store a new dataset (version 1) or a new version of an existing one, profiled, not yet in any state.

    With `source` None, a new version reuses the previous version's normalized data (metadata-only change).
    Nothing is left half-registered: files written here are removed if the transaction rolls back. Callers
    go through `registration.submit`, which puts the version in the workflow.
    """
    if provider.kind != "provider":
        raise Forbidden("datasets are registered by a data_steward of a provider organization (an agency admin may "
                        "file for a provider with provider_org_id and certify_now)", code="not_a_provider")
    if not DATASET_ID_RE.match(dataset_id):
        raise InvalidInput("dataset id must match ^[a-z][a-z0-9_]{0,62}$", code="invalid_dataset_id")
    _validate_meta(meta)
    ds = session.get(Dataset, dataset_id)
    previous: DatasetVersion | None = None
    if ds is None:
        if source is None:
            raise InvalidInput("a new dataset needs a data file", code="file_required")
        number = 1
    else:
        if ds.provider_org_id != provider.id:
            raise Forbidden(f"dataset {dataset_id} belongs to another provider", code="dataset_of_another_provider")
        previous = session.scalar(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id,
                                                               DatasetVersion.version == ds.latest_version))
        number = ds.latest_version + 1
    target = _version_dir(paths, dataset_id, number)
    if target.exists():
        raise Conflict(f"storage for {dataset_id} v{number} already exists; another registration is running?",
                       code="version_storage_exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if source is not None:
            normalized = normalize(source, target, options, max_bytes=max_bytes, progress=progress)
        else:
            assert previous is not None
            normalized = _reuse(paths, previous, target)
    except BaseException:
        _remove_version_dir(target)
        raise
    if on_rollback is not None:
        on_rollback(lambda: _remove_version_dir(target))
    try:
        columns = build_columns(meta, normalized)
        expectations = parse_expectations(meta.expectations, columns)
        freshness_column_check(meta.freshness_column, columns)
        if previous is not None and source is None and _same(previous, meta, columns, expectations):
            raise InvalidInput("nothing changed: a new version needs new data or changed metadata",
                               code="no_change")
        if ds is None:
            ds = Dataset(id=dataset_id, provider_org_id=provider.id, latest_version=number, created_at=now)
            session.add(ds)
        else:
            ds.latest_version = number
        version = DatasetVersion(
            dataset_id=dataset_id, version=number, title=meta.title.strip(), description=meta.description,
            domain=meta.domain, update_frequency=meta.update_frequency, grade=meta.grade,
            entity_column=meta.entity_column, population=population_of(meta, dataset_id), columns=columns,
            row_count=normalized.row_count,
            byte_size=normalized.byte_size, source_sha256=normalized.source_sha256,
            source_bytes=normalized.source_bytes, parquet_sha256=normalized.parquet_sha256,
            source_name=source_name, storage_path=str(normalized.path.relative_to(paths.home)),
            certificate_code=None, created_at=now, created_by=actor_id, expectations=expectations,
            freshness_column=meta.freshness_column, registration_state="", registration_path="",
            state_reason="", return_fields=[], applied_at=now,
            quality=profile(normalized.path, ProfileInput(
                columns=columns, expectations=expectations, update_frequency=UpdateFrequency(meta.update_frequency),
                freshness_column=meta.freshness_column), now=now))
        session.add(version)
        session.flush()
    except BaseException:
        _remove_version_dir(target)
        raise
    return version


def _remove_version_dir(target: Path) -> None:
    """Remove a refused version's folder, and its dataset folder when nothing else is in it (no empty folders)."""
    shutil.rmtree(target, ignore_errors=True)
    with contextlib.suppress(OSError):  # other versions (or another registration) live there
        target.parent.rmdir()


def _same(previous: DatasetVersion, meta: DatasetMeta, columns: list[dict[str, Any]],
          expectations: list[dict[str, Any]]) -> bool:
    return (previous.title, previous.description, previous.domain, previous.update_frequency, previous.grade,
            previous.entity_column, previous.population, previous.columns, previous.expectations,
            previous.freshness_column) == (
        meta.title.strip(), meta.description, meta.domain, meta.update_frequency, meta.grade, meta.entity_column,
        population_of(meta, previous.dataset_id), columns, expectations, meta.freshness_column)


def _reuse(paths: Paths, previous: DatasetVersion, target: Path) -> NormalizedFile:
    """Link (or copy) the previous version's Parquet into a new version directory."""
    from sandbox.catalogue.importer import describe_parquet

    src = paths.home / previous.storage_path
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.mkdir(parents=True)
    dest = tmp / src.name
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)
    tmp.rename(target)
    return describe_parquet(target / src.name, source_sha256=previous.source_sha256,
                            source_bytes=previous.source_bytes)


def latest_version(session: Session, dataset_id: str) -> DatasetVersion:
    """The newest version of a dataset."""
    ds = session.get(Dataset, dataset_id)
    if ds is None:
        raise NotFound(f"dataset {dataset_id} does not exist", code="dataset_not_found")
    return get_version(session, dataset_id, ds.latest_version)


def latest_certified_version(session: Session, dataset_id: str) -> DatasetVersion | None:
    """The newest `certified` version of a dataset, or None: the ONE version grants, jobs and runs may use.

    Only a certified version can be granted or queried. A newer version that is not certified yet (applied,
    under review, in public notice, ...) leaves every grant and job on this one. Run-time checks that compare
    a pinned version with "the latest" (e.g. re-grading) must compare with this version, not `latest_version`.
    """
    return session.scalar(select(DatasetVersion).where(
        DatasetVersion.dataset_id == dataset_id, DatasetVersion.registration_state == CERTIFIED)
        .order_by(DatasetVersion.version.desc()).limit(1))


def latest_certified_versions(session: Session) -> list[DatasetVersion]:
    """Every dataset's `latest_certified_version`, ordered by dataset id (datasets with none are left out)."""
    newest = (select(DatasetVersion.dataset_id, func.max(DatasetVersion.version).label("v"))
              .where(DatasetVersion.registration_state == CERTIFIED).group_by(DatasetVersion.dataset_id)
              .subquery())
    return list(session.scalars(select(DatasetVersion).join(newest, and_(
        DatasetVersion.dataset_id == newest.c.dataset_id, DatasetVersion.version == newest.c.v))
        .order_by(DatasetVersion.dataset_id)))


def get_version(session: Session, dataset_id: str, version: int) -> DatasetVersion:
    """One version of a dataset."""
    v = session.scalar(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id,
                                                    DatasetVersion.version == version))
    if v is None:
        raise NotFound(f"dataset {dataset_id} has no version {version}", code="dataset_version_not_found")
    return v


def describe(v: DatasetVersion, provider_name: str | None = None) -> Mapping[str, Any]:
    """Public metadata of a version: never data values, never storage paths."""
    return {
        "id": v.dataset_id, "version": v.version, "title": v.title, "description": v.description,
        "domain": v.domain, "grade": v.grade, "update_frequency": v.update_frequency,
        "entity_column": v.entity_column, "population": v.population, "row_count": v.row_count,
        "byte_size": v.byte_size,
        "certificate_code": v.certificate_code, "created_at": v.created_at.isoformat(),
        "provider": provider_name, "registration_state": v.registration_state,
        "registration_path": v.registration_path, "freshness_column": v.freshness_column,
        "expectations": v.expectations,
        "columns": [{**{k: c.get(k) for k in ("name", "type", "declared_type", "constraint", "tags", "mask",
                                              "description")}, "query_type": query_type(c)} for c in v.columns],
    }


def query_type(column: Mapping[str, Any]) -> str:
    """The type a stored column has in queries: its catalogue type after its mask (`hash`, `partial`: VARCHAR)."""
    return masked_type(str(column["type"]), MaskKind(column["mask"]) if column.get("mask") else None)
