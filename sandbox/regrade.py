"""Re-grading reaches approved jobs: the latest version of a dataset is a ceiling on the version a job is pinned to.

A job runs on the dataset versions it was approved for. When the provider re-registers a dataset as `core`, raises
its grade, or tightens, masks or removes columns the job reads, a run on the older version would keep serving data
under the looser rules. So at run time the *latest* version's grade and column constraints bound the pinned one;
a run they no longer allow is refused with `dataset_regraded` (and audited like every refusal).

`latest_bounding_version` is the one place that says which version bounds a pinned one: the latest *certified*
version (registration is a workflow; a version still in review or public notice bounds nothing yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from policy.constraints import Constraint, Grade, tighten
from policy.errors import ConstraintLoosening
from sandbox.catalogue.registry import CERTIFIED
from sandbox.errors import Refused
from sandbox.grants import covers, effective_constraints
from sandbox.run_inputs import AnyGrant
from sandbox.store.models import DatasetVersion

_GRADE_ORDER = {Grade.GENERAL.value: 0, Grade.IMPORTANT.value: 1, Grade.CORE.value: 2}
_VERSIONS = DatasetVersion.__table__.c
# Built once (a Core statement: no ORM compile step per run); run on every run, so never cached in the process.
_LATEST = (select(_VERSIONS.dataset_id, func.max(_VERSIONS.version))
           .where(_VERSIONS.dataset_id.in_(bindparam("ids", expanding=True)),
                  _VERSIONS.registration_state == CERTIFIED)
           .group_by(_VERSIONS.dataset_id))


def latest_bounding_version(session: Session, dataset_ids: Sequence[str]) -> dict[str, int]:
    """The version that bounds every pinned version of each dataset: the latest *certified* one.

    A version still in registration (applied, in review, in public notice, rejected) bounds nothing yet; the
    same rule as `catalogue.registry.latest_certified_version`, for several datasets in one query.
    """
    rows = session.connection().execute(_LATEST, {"ids": list(dataset_ids)})
    return {dataset_id: int(version) for dataset_id, version in rows}


def ceiling_problem(grant: AnyGrant, pinned: DatasetVersion, latest: DatasetVersion,
                    columns_read: Sequence[str]) -> str | None:
    """Why the latest version no longer allows a run pinned to `pinned`, or None."""
    if _GRADE_ORDER.get(latest.grade, 2) > _GRADE_ORDER.get(pinned.grade, 2):
        return f"{latest.dataset_id} is now graded {latest.grade} (v{latest.version}); the job was approved on " \
               f"{pinned.grade} data (v{pinned.version})"
    coverage = covers(grant, latest)
    if not coverage.covered:
        return f"the grant no longer covers {latest.dataset_id} v{latest.version}: {coverage.reason}"
    if (latest.entity_column or "") != (pinned.entity_column or "") or (latest.population or "") != (
            pinned.population or ""):
        return f"{latest.dataset_id} v{latest.version} declares a different entity column or population"
    now, then = effective_constraints(grant, latest), effective_constraints(grant, pinned)
    masks_now = {c["name"]: c.get("mask") for c in latest.columns}
    masks_then = {c["name"]: c.get("mask") for c in pinned.columns}
    for column in columns_read:
        name = _name(then, column)
        if name is None:
            continue
        current = _name(now, column)
        if current is None:
            return f"{latest.dataset_id}.{column} no longer exists in v{latest.version}"
        if masks_now.get(current) != masks_then.get(name):
            return f"{latest.dataset_id}.{column} is masked differently in v{latest.version}"
        if now[current] != then[name] and not _looser(Constraint(now[current]), Constraint(then[name])):
            return f"{latest.dataset_id}.{column} is {now[current]} in v{latest.version}; the job was approved " \
                   f"when it was {then[name]}"
    return None


def _name(constraints: Mapping[str, str], column: str) -> str | None:
    lowered = column.lower()
    return next((name for name in constraints if name.lower() == lowered), None)


def _looser(latest: Constraint, pinned: Constraint) -> bool:
    """Whether the pinned constraint is a tightening of the latest one (the latest is looser: no problem)."""
    try:
        return tighten(latest, pinned) == pinned
    except ConstraintLoosening:
        return False


def check_regrade(session: Session, grant: AnyGrant, pinned: Mapping[str, DatasetVersion],
                  columns_read: Mapping[str, Sequence[str]], cache: dict[tuple[str, str, int, int], str | None],
                  latest: Mapping[str, int] | None = None) -> None:
    """Refuse (`dataset_regraded`) a run that the latest versions of its datasets no longer allow.

    Costs one query per run (the latest version numbers), unless the caller read them in this transaction already
    (`latest`, as `latest_bounding_version` gives them: sandbox/run_inputs.py reads them with the job); each
    (grant, dataset, pinned, latest) verdict is cached, since versions are immutable.
    """
    if latest is None or set(latest) - set(pinned):
        latest = latest_bounding_version(session, sorted(pinned))
    for dataset_id, version in pinned.items():
        newest = latest.get(dataset_id, version.version)
        if newest <= version.version:
            continue
        key = (grant.id, dataset_id, version.version, newest)
        if key not in cache:
            bound = session.scalar(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id,
                                                                DatasetVersion.version == newest))
            cache[key] = ceiling_problem(grant, version, bound, columns_read.get(dataset_id, ())) if bound else None
        problem = cache[key]
        if problem is not None:
            raise Refused(f"{problem}; submit the job again to have it analysed and reviewed under the new rules",
                          code="dataset_regraded", dataset=dataset_id, pinned_version=version.version,
                          latest_version=newest)
