"""The checks that decide access, at the service level on an in-memory store (no app): key checks
(`authenticate`, `KeyCache`), review (`jobs.review`), grant validity (`effective_status`, `check_grant_usable`)
and the run-time checks (`check_runnable`).

These are fast on purpose: `make mutants` runs them for every mutant of those functions (docs/testing.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from sandbox import identity, jobs
from sandbox.errors import Conflict, Refused, Unauthenticated
from sandbox.grants import effective_status
from sandbox.identity import Caller, KeyCache, authenticate
from sandbox.jobs import JobState
from sandbox.runs import check_runnable
from sandbox.store.models import Base, DatasetVersion, Grant, Job, JobReview

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def session() -> Iterator[Session]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with sessionmaker(engine)() as s:
        yield s
    engine.dispose()


def _key(session: Session, *, ttl: timedelta | None = None, kind: str = "operator", roles: tuple[str, ...] = (
        "operator",), platform: bool = False) -> tuple[Any, str]:
    org = identity.create_org(session, name=identity.new_id("org"), kind=kind,
                              now=NOW, is_platform=platform)
    principal = identity.create_principal(session, org=org, name="alice", roles=list(roles), now=NOW,
                                          created_by=None)
    key, token = identity.issue_key(session, principal=principal, now=NOW, ttl=ttl)
    return key, token


def _refusal(session: Session, token: str, now: datetime = NOW, cache: KeyCache | None = None) -> tuple[str, str]:
    """The refusal's code and message; a well-formed token's refusal names its key id (the audit records it)."""
    with pytest.raises(Unauthenticated) as refused:
        authenticate(session, token, now=now, cache=cache)
    key_id = identity.key_id_of(token)
    assert refused.value.context == ({"key_id": key_id} if key_id else {})
    return refused.value.code, refused.value.message


def test_a_valid_key_resolves_to_its_principal_organization_roles_and_key(session: Session) -> None:
    key, token = _key(session, kind="agency", roles=("reviewer", "admin"), platform=True)
    caller = authenticate(session, token, now=NOW)
    principal = session.get(identity.Principal, key.principal_id)
    assert principal is not None
    assert caller == Caller(principal_id=principal.id, principal_name="alice", org_id=principal.org_id,
                            org_kind="agency", roles=("reviewer", "admin"), is_platform=True, key_id=key.id)


# --- review ---------------------------------------------------------------------------------------------------

def _job(session: Session, **overrides: Any) -> Job:
    sql = overrides.pop("frozen", "SELECT district, count(*) AS n FROM residents GROUP BY district")
    job = Job(**{"id": identity.new_id("job"), "grant_id": "grt_1", "operator_org_id": "org_op",
                 "submitted_by": "prn_op", "title": "t", "purpose": "p", "sql": sql, "parameters": {},
                 "state": JobState.PENDING_REVIEW.value, "findings": [], "analysis": {"sql": sql},
                 "dataset_versions": {"residents": 1}, "reviews_required": 1, "created_at": NOW - timedelta(hours=1),
                 **overrides})
    session.add(job)
    session.flush()
    return job


def _reviews(session: Session, job: Job) -> list[tuple[str, str, str, datetime]]:
    rows = session.scalars(select(JobReview).where(JobReview.job_id == job.id).order_by(JobReview.id))
    return [(r.reviewer_id, r.decision, r.comment, r.at) for r in rows]


def test_an_approval_freezes_the_analysed_sql_and_records_the_review_and_its_time(session: Session) -> None:
    job = _job(session, frozen="SELECT 1 AS analysed")
    assert jobs.review(session, job, reviewer_id="prn_r1", decision="approve", comment="  fine  ", now=NOW) is job
    assert (job.state, job.decided_at, job.rejection_source) == ("approved", NOW, None)
    assert job.frozen_sql == "SELECT 1 AS analysed"
    assert job.frozen_sql_sha256 == hashlib.sha256(b"SELECT 1 AS analysed").hexdigest()
    assert _reviews(session, job) == [("prn_r1", "approve", "fine", NOW)]


def test_a_rejection_ends_the_job_as_rejected_by_the_reviewer_and_freezes_nothing(session: Session) -> None:
    job = _job(session, reviews_required=2)
    jobs.review(session, job, reviewer_id="prn_r1", decision="reject", comment="too fine-grained", now=NOW)
    assert (job.state, job.decided_at, job.rejection_source, job.frozen_sql) == ("rejected", NOW, "reviewer", None)
    assert _reviews(session, job) == [("prn_r1", "reject", "too fine-grained", NOW)]
    with pytest.raises(Conflict) as late:
        jobs.review(session, job, reviewer_id="prn_r2", decision="approve", comment="fine", now=NOW)
    assert (late.value.code, late.value.message) == (
        "job_not_pending_review", f"job {job.id} is rejected; only pending_review jobs are reviewed")


def test_important_data_needs_two_different_approving_reviewers_of_the_same_job(session: Session) -> None:
    job, other = _job(session, reviews_required=2), _job(session, reviews_required=2)
    jobs.review(session, other, reviewer_id="prn_r2", decision="approve", comment="fine", now=NOW)
    jobs.review(session, job, reviewer_id="prn_r1", decision="approve", comment="fine", now=NOW)
    assert (job.state, job.decided_at, job.frozen_sql) == ("pending_review", None, None)  # r2's approval is of another
    with pytest.raises(Conflict) as twice:
        jobs.review(session, job, reviewer_id="prn_r1", decision="approve", comment="again", now=NOW)
    assert (twice.value.code, twice.value.message) == (
        "already_reviewed", "this reviewer has already reviewed the job; a second approval needs a different reviewer")
    later = NOW + timedelta(minutes=5)
    jobs.review(session, job, reviewer_id="prn_r2", decision="approve", comment="agreed", now=later)
    assert (job.state, job.decided_at) == ("approved", later)
    assert _reviews(session, job) == [("prn_r1", "approve", "fine", NOW), ("prn_r2", "approve", "agreed", later)]


@pytest.mark.parametrize("state", ["approved", "rejected", "stopped"])
def test_only_a_pending_job_is_reviewed(session: Session, state: str) -> None:
    job = _job(session, state=state)
    with pytest.raises(Conflict) as refused:
        jobs.review(session, job, reviewer_id="prn_r1", decision="approve", comment="fine", now=NOW)
    assert (refused.value.code, refused.value.context) == ("job_not_pending_review", {"state": state})
    assert _reviews(session, job) == []


def test_a_review_reads_the_job_again_and_refuses_one_decided_meanwhile(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    Base.metadata.create_all(engine)
    with sessionmaker(engine)() as mine, sessionmaker(engine)() as theirs:
        job = _job(mine)
        mine.commit()
        assert job.state == "pending_review"  # as this request read it
        theirs.execute(update(Job).where(Job.id == job.id).values(state="rejected"))
        theirs.commit()
        with pytest.raises(Conflict) as refused:
            jobs.review(mine, job, reviewer_id="prn_r1", decision="approve", comment="fine", now=NOW)
        assert refused.value.code == "job_not_pending_review" and refused.value.context == {"state": "rejected"}
    engine.dispose()


# --- key checks -----------------------------------------------------------------------------------------------

def test_a_malformed_an_unknown_or_a_wrong_secret_key_is_refused_saying_so(session: Session) -> None:
    key, token = _key(session)
    assert _refusal(session, "sk_nothex_secret") == ("key_malformed", "API key is malformed; expected sk_<id>_<secret>")
    assert _refusal(session, token + "x") == ("key_malformed", "API key is malformed; expected sk_<id>_<secret>")
    unknown = f"sk_{'0' * 12}_{token.split('_', 2)[2]}"
    assert _refusal(session, unknown) == ("key_unknown", "API key is not known")
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert _refusal(session, wrong) == ("key_unknown", "API key is not known")
    with pytest.raises(Unauthenticated) as refused:
        authenticate(session, wrong, now=NOW)
    assert refused.value.context == {"key_id": key.id}


def test_a_revoked_key_is_refused_saying_to_ask_for_a_new_one(session: Session) -> None:
    key, token = _key(session)
    key.revoked_at = NOW - timedelta(seconds=1)
    session.flush()
    assert _refusal(session, token) == ("key_revoked", "API key was revoked; ask an admin for a new key")


def test_a_key_is_honoured_until_the_instant_it_expires_and_refused_from_then_on(session: Session) -> None:
    _, token = _key(session, ttl=timedelta(days=1))
    expiry = NOW + timedelta(days=1)
    assert authenticate(session, token, now=expiry - timedelta(microseconds=1)).roles == ("operator",)
    for when in (expiry, expiry + timedelta(days=3)):
        assert _refusal(session, token, when) == ("key_expired", "API key has expired; ask an admin for a new key")
    _, lasting = _key(session, ttl=None)
    assert authenticate(session, lasting, now=NOW + timedelta(days=3650)).roles == ("operator",)


def test_a_cached_key_is_answered_without_the_store_until_its_ttl_or_its_expiry(session: Session) -> None:
    key, token = _key(session, ttl=timedelta(seconds=90))
    cache = KeyCache(ttl_seconds=60)
    caller = authenticate(session, token, now=NOW, cache=cache)
    no_store: Any = None  # a cache hit must not touch the store
    assert authenticate(no_store, token, now=NOW + timedelta(seconds=59), cache=cache) == caller
    key.revoked_at = NOW  # another process revoked it: seen once the entry is older than the ttl
    session.flush()
    assert _refusal(session, token, NOW + timedelta(seconds=60), cache) == (
        "key_revoked", "API key was revoked; ask an admin for a new key")
    key.revoked_at = None
    session.flush()
    assert authenticate(session, token, now=NOW + timedelta(seconds=61), cache=cache) == caller  # cached again
    assert _refusal(session, token, NOW + timedelta(seconds=90), cache) == (  # the key's expiry beats the ttl
        "key_expired", "API key has expired; ask an admin for a new key")


def test_a_refused_key_is_never_cached(session: Session) -> None:
    key, token = _key(session)
    cache = KeyCache(ttl_seconds=60)
    key.revoked_at = NOW
    session.flush()
    assert _refusal(session, token, NOW, cache)[0] == "key_revoked"
    assert cache.get(token, NOW) is None


def _caller(key_id: str = "k1") -> Caller:
    return Caller(principal_id="prn_a", principal_name="a", org_id="org_a", org_kind="operator",
                  roles=("operator",), is_platform=False, key_id=key_id)


def test_the_key_cache_keeps_an_entry_for_its_ttl_by_the_clock_and_forgets_a_stale_one() -> None:
    cache = KeyCache(ttl_seconds=60)
    cache.put("sk_a", _caller(), None, NOW)
    assert cache.get("sk_a", NOW) == _caller()
    assert cache.get("sk_a", NOW + timedelta(seconds=59.999)) == _caller()
    assert cache.get("sk_a", NOW - timedelta(seconds=1)) is None  # a clock that went back: not trusted
    cache.put("sk_a", _caller(), None, NOW)
    assert cache.get("sk_a", NOW + timedelta(seconds=60)) is None
    assert cache.get("sk_a", NOW + timedelta(seconds=1)) is None  # a stale entry is dropped, not kept for later
    cache.put("sk_a", _caller(), NOW + timedelta(seconds=5), NOW)
    assert cache.get("sk_a", NOW + timedelta(seconds=5)) is None
    assert cache.get("sk_a", NOW + timedelta(seconds=1)) is None


def test_the_key_cache_is_keyed_by_the_whole_token() -> None:
    cache = KeyCache(ttl_seconds=60)
    cache.put("sk_000000000001_secretA", _caller(), None, NOW)
    assert cache.get("sk_000000000001_secretB", NOW) is None
    assert cache.get("sk_000000000001_secretA", NOW) == _caller()


def test_a_key_cache_with_no_ttl_is_off() -> None:
    cache = KeyCache(ttl_seconds=0)
    cache.put("sk_a", _caller(), None, NOW)
    assert cache.get("sk_a", NOW) is None


def test_a_full_key_cache_starts_again_empty() -> None:
    cache = KeyCache(ttl_seconds=60, max_entries=2)
    cache.put("sk_a", _caller("ka"), None, NOW)
    cache.put("sk_b", _caller("kb"), None, NOW)
    assert (cache.get("sk_a", NOW), cache.get("sk_b", NOW)) == (_caller("ka"), _caller("kb"))
    cache.put("sk_c", _caller("kc"), None, NOW)
    assert (cache.get("sk_a", NOW), cache.get("sk_b", NOW), cache.get("sk_c", NOW)) == (None, None, _caller("kc"))


def test_the_key_cache_holds_ten_thousand_keys_by_default() -> None:
    cache = KeyCache(ttl_seconds=60)
    for i in range(10_000):
        cache.put(f"sk_{i}", _caller(), None, NOW)
    assert cache.get("sk_0", NOW) == _caller() and cache.get("sk_9999", NOW) == _caller()
    cache.put("sk_one_more", _caller(), None, NOW)
    assert cache.get("sk_0", NOW) is None and cache.get("sk_one_more", NOW) == _caller()


def test_revoking_a_key_drops_every_cached_token_of_that_key_only() -> None:
    cache = KeyCache(ttl_seconds=60)
    for token, key_id in (("sk_a1", "ka"), ("sk_a2", "ka"), ("sk_b", "kb")):
        cache.put(token, _caller(key_id), None, NOW)
    cache.invalidate("ka")
    assert [cache.get(t, NOW) for t in ("sk_a1", "sk_a2", "sk_b")] == [None, None, _caller("kb")]


# --- grant validity and the run-time checks -------------------------------------------------------------------

def _grant(**overrides: Any) -> Grant:
    return Grant(**{"id": "grt_1", "status": "active", "status_reason": "", "valid_from": NOW,
                    "valid_until": NOW + timedelta(days=30), "engine": "duckdb", **overrides})


def _grant_refusal(grant: Grant, now: datetime) -> tuple[str, str, dict[str, Any]]:
    with pytest.raises(Refused) as refused:
        jobs.check_grant_usable(grant, now)
    return refused.value.code, refused.value.message, refused.value.context


def test_a_grant_is_usable_from_its_first_instant_to_just_before_its_end() -> None:
    grant = _grant()
    for now in (NOW, NOW + timedelta(days=30) - timedelta(microseconds=1)):
        assert effective_status(grant, now) == "active"
        jobs.check_grant_usable(grant, now)
    assert effective_status(grant, NOW - timedelta(microseconds=1)) == "not_yet_valid"
    assert _grant_refusal(grant, NOW - timedelta(microseconds=1)) == (
        "grant_not_yet_valid", "grant grt_1 is not_yet_valid", {"grant_id": "grt_1"})
    assert effective_status(grant, NOW + timedelta(days=30)) == "expired"
    assert _grant_refusal(grant, NOW + timedelta(days=31)) == (
        "grant_expired", "grant grt_1 is expired", {"grant_id": "grt_1"})


@pytest.mark.parametrize("status", ["suspended", "revoked"])
def test_a_suspended_or_revoked_grant_is_refused_with_its_reason_even_inside_its_validity(status: str) -> None:
    grant = _grant(status=status, status_reason="audit finding 12")
    assert effective_status(grant, NOW + timedelta(days=1)) == status
    assert effective_status(grant, NOW + timedelta(days=60)) == status  # the stored state beats expiry
    assert _grant_refusal(grant, NOW + timedelta(days=1)) == (
        f"grant_{status}", f"grant grt_1 is {status}: audit finding 12", {"grant_id": "grt_1"})


def test_a_stopped_or_unapproved_job_never_runs(session: Session) -> None:
    stopped = _job(session, state="stopped", stopped_reason="dataset withdrawn", frozen_sql="SELECT 1")
    with pytest.raises(Refused) as refused:
        check_runnable(session, stopped, _grant(), NOW)
    assert (refused.value.code, refused.value.message, refused.value.context) == (
        "job_stopped", f"job {stopped.id} was stopped: dataset withdrawn",
        {"state": "stopped", "reason": "dataset withdrawn"})
    for state, frozen in (("pending_review", None), ("rejected", None), ("approved", None)):
        job = _job(session, state=state, frozen_sql=frozen)
        with pytest.raises(Conflict) as conflict:
            check_runnable(session, job, _grant(), NOW)
        assert (conflict.value.code, conflict.value.message, conflict.value.context) == (
            "job_not_approved", f"job {job.id} is {state}; only approved jobs run", {"state": state})


def test_an_approved_job_under_an_unusable_grant_never_runs(session: Session) -> None:
    job = _job(session, state="approved", frozen_sql="SELECT 1")
    with pytest.raises(Refused) as refused:
        check_runnable(session, job, _grant(status="suspended", status_reason="inquiry"), NOW)
    assert refused.value.code == "grant_suspended"
    with pytest.raises(Refused) as expired:
        check_runnable(session, job, _grant(), NOW + timedelta(days=30))
    assert expired.value.code == "grant_expired"


def _version(session: Session, version: int = 1, **overrides: Any) -> DatasetVersion:
    row = DatasetVersion(**{
        "dataset_id": "residents", "version": version, "title": "Residents", "domain": "population",
        "update_frequency": "monthly", "grade": "general", "entity_column": None, "population": None,
        "columns": [{"name": "district", "type": "VARCHAR", "constraint": "aggregate", "tags": [], "mask": None}],
        "row_count": 40, "byte_size": 1, "source_sha256": "0" * 64, "source_bytes": 1, "parquet_sha256": "0" * 64,
        "source_name": "residents.csv", "storage_path": "data/residents/v1", "created_at": NOW, "created_by": "prn_s",
        "registration_state": "certified", "registration_path": "standard", "applied_at": NOW, **overrides})
    session.add(row)
    session.flush()
    return row


def _runnable(session: Session, **overrides: Any) -> Job:
    analysis = {"sql": "SELECT 1", "columns_read": {"residents": ["district"]}, **overrides.pop("analysis", {})}
    return _job(session, **{"state": "approved", "frozen_sql": "SELECT 1", "analysis": analysis, **overrides})


def _run_refusal(session: Session, job: Job, grant: Grant, service: Any = None) -> tuple[str, str, dict[str, Any]]:
    with pytest.raises(Refused) as refused:
        check_runnable(session, job, grant, NOW, service)
    return refused.value.code, refused.value.message, refused.value.context


def _scoped(**overrides: Any) -> Grant:
    return _grant(**{"scope": "domain", "domains": ["population"], "datasets": [], "column_overrides": {},
                     **overrides})


def test_an_approved_job_runs_on_the_pinned_versions_its_grant_still_covers(session: Session) -> None:
    pinned = _version(session)
    tables = check_runnable(session, _runnable(session), _scoped(), NOW)
    assert list(tables) == ["residents"] and tables["residents"].version is pinned
    assert [c.name for c in tables["residents"].policy.columns] == ["district"]


def test_a_run_is_refused_when_the_grant_no_longer_covers_a_pinned_dataset(session: Session) -> None:
    _version(session)
    assert _run_refusal(session, _runnable(session), _scoped(domains=["economy"])) == (
        "dataset_not_covered", "the grant no longer covers residents", {"datasets": ["residents"]})


def test_a_run_is_refused_when_a_pinned_version_is_no_longer_certified(session: Session) -> None:
    _version(session, registration_state="withdrawn", state_reason="errors in the source")
    assert _run_refusal(session, _runnable(session), _scoped()) == (
        "dataset_version_not_certified", "residents v1 is withdrawn, not certified: errors in the source",
        {"dataset": "residents", "version": 1, "state": "withdrawn"})


def test_a_job_analysed_before_the_release_audit_or_for_another_engine_must_be_submitted_again(
        session: Session) -> None:
    _version(session)
    old = _runnable(session, analysis={"entity_tables": ["residents"]})
    assert _run_refusal(session, old, _scoped()) == (
        "job_reanalysis_required", "this job was analysed before the release audit existed; submit it again",
        {"job_id": old.id})
    audited = _runnable(session, analysis={"entity_tables": ["residents"], "release": {"cells": []}})
    assert list(check_runnable(session, audited, _scoped(), NOW)) == ["residents"]
    assert _run_refusal(session, audited, _scoped(engine="spark"))[0] == "job_reanalysis_required"
    spark = _runnable(session, analysis={"engine_sql": {"spark": "SELECT 1"}})
    assert list(check_runnable(session, spark, _scoped(engine="spark"), NOW)) == ["residents"]


def test_a_run_is_refused_when_a_later_certified_version_raised_the_grade(session: Session) -> None:
    _version(session)
    _version(session, 2, grade="important", registration_state="applied")  # still in registration: bounds nothing
    job = _runnable(session)
    assert list(check_runnable(session, job, _scoped(), NOW)) == ["residents"]
    session.execute(update(DatasetVersion).where(DatasetVersion.version == 2).values(registration_state="certified"))
    code, message, context = _run_refusal(session, job, _scoped())
    assert (code, context) == ("dataset_regraded", {"dataset": "residents", "pinned_version": 1, "latest_version": 2})
    assert message.startswith("residents is now graded important (v2)")


class _Service:
    """What check_runnable caches across requests (a RunService's `tables` and `regrades`)."""

    def __init__(self) -> None:
        self.tables: dict[Any, Any] = {}
        self.regrades: dict[Any, Any] = {}


def test_coverage_of_a_pinned_version_is_cached_but_the_grant_state_is_checked_on_every_run(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    Base.metadata.create_all(engine)
    service = _Service()
    with sessionmaker(engine)() as session:
        _version(session)
        session.commit()
        job = _runnable(session, dataset_versions={"residents": 1})
        first = check_runnable(session, job, _scoped(), NOW, service)  # type: ignore[arg-type]
        assert list(service.tables) == [("grt_1", (("residents", 1),))]
        session.rollback()  # a later request's rollback must not expire what the cache holds
    cached = service.tables[("grt_1", (("residents", 1),))]
    assert cached is first and cached["residents"].version.grade == "general"
    with sessionmaker(engine)() as session:
        job = _runnable(session, dataset_versions={"residents": 1})
        session.execute(update(DatasetVersion).values(domain="economy"))  # (versions are immutable; shows the cache)
        assert check_runnable(session, job, _scoped(), NOW, service) is cached  # type: ignore[arg-type]
        assert _run_refusal(session, job, _scoped())[0] == "dataset_not_covered"  # without the cache
        assert _run_refusal(session, job, _scoped(status="suspended"), service)[0] == "grant_suspended"
    engine.dispose()


def test_a_run_names_every_pinned_dataset_its_grant_no_longer_covers(session: Session) -> None:
    _version(session)
    _version(session, dataset_id="clinic_visits")
    job = _runnable(session, dataset_versions={"residents": 1, "clinic_visits": 1})
    assert _run_refusal(session, job, _scoped(domains=["economy"])) == (
        "dataset_not_covered", "the grant no longer covers clinic_visits, residents",
        {"datasets": ["clinic_visits", "residents"]})


def _group_column(constraint: str) -> list[dict[str, Any]]:
    return [{"name": "district", "type": "VARCHAR", "constraint": constraint, "tags": [], "mask": None}]


def test_a_run_is_refused_when_a_later_version_tightened_a_column_the_job_reads(session: Session) -> None:
    _version(session, columns=_group_column("group"))
    _version(session, 2, columns=_group_column("aggregate"))
    code, message, _ = _run_refusal(session, _runnable(session), _scoped())
    assert code == "dataset_regraded"
    assert message == ("residents.district is aggregate in v2; the job was approved when it was group; submit the "
                       "job again to have it analysed and reviewed under the new rules")
    unread = _runnable(session, analysis={"columns_read": {"residents": []}})
    assert list(check_runnable(session, unread, _scoped(), NOW)) == ["residents"]


def test_a_regrade_verdict_is_cached_per_grant_and_version_pair(session: Session) -> None:
    _version(session)
    _version(session, 2)
    service, job = _Service(), _runnable(session)
    check_runnable(session, job, _scoped(), NOW, service)  # type: ignore[arg-type]
    assert service.regrades == {("grt_1", "residents", 1, 2): None}
    session.execute(update(DatasetVersion).where(DatasetVersion.version == 2).values(grade="important"))
    assert list(check_runnable(session, job, _scoped(), NOW, service)) == ["residents"]  # type: ignore[arg-type]
    assert _run_refusal(session, job, _scoped())[0] == "dataset_regraded"
