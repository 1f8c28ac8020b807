"""Checks a mutation experiment found missing: each test here fails if one security-critical line changes
(key expiry, the key cache, not-yet-valid grants, auto-approval of joins, self-review, the DuckDB lock-down)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pytest

from sandbox import jobs
from sandbox.errors import Forbidden, InvalidInput
from sandbox.executor.lockdown import lockdown_statements, open_instance
from sandbox.executor.types import EngineLimits
from sandbox.identity import Caller, KeyCache
from sandbox.store.models import Job

LIMITS = EngineLimits(memory_limit_mb=256, threads=2, timeout_ms=1500, address_space_mb=4096)


def test_every_lockdown_setting_is_in_force_in_an_instance() -> None:
    con = open_instance([], LIMITS).con  # no inputs: one DuckDB thread (instance_threads; LIMITS allows 2)
    settings = {
        "temp_directory": "", "allow_persistent_secrets": False, "secret_directory": "",
        "memory_limit": "256.0 MiB", "threads": 1, "max_execution_time": 1500, "max_expression_depth": 250,
        "autoinstall_known_extensions": False, "autoload_known_extensions": False,
        "allow_community_extensions": False, "allow_unsigned_extensions": False,
        "python_enable_replacements": False, "enable_external_access": False, "lock_configuration": True,
    }
    got = {name: con.execute(f"SELECT current_setting('{name}')").fetchall()[0][0] for name in settings}
    assert got == settings
    with pytest.raises(duckdb.Error, match="disabled"):
        con.execute("SELECT * FROM read_text('/etc/hostname')").fetchall()


def test_external_access_and_the_local_file_system_are_each_switched_off() -> None:
    """DuckDB does not report `disabled_filesystems` through current_setting, so each layer is shown to work
    alone: without the other one, it still stops a file read."""
    statements = lockdown_statements(LIMITS)
    layers = {"enable_external_access": "file system operations are disabled",
              "disabled_filesystems": "LocalFileSystem has been disabled"}
    for layer, message in layers.items():
        [only] = [s for s in statements if f" {layer} = " in s]
        con = duckdb.connect(":memory:")
        con.execute(only)
        with pytest.raises(duckdb.Error, match=message):
            con.execute("SELECT * FROM read_text('/etc/hostname')").fetchall()
        con.close()
    assert statements[-1] == "SET GLOBAL lock_configuration = true"


def _caller() -> Caller:
    return Caller(principal_id="prn_a", principal_name="a", org_id="org_a", org_kind="operator",
                  roles=("operator",), is_platform=False, key_id="k1")


def test_the_key_cache_never_honours_a_key_past_its_expiry_within_its_ttl() -> None:
    cache = KeyCache(ttl_seconds=3600)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    cache.put("sk_token", _caller(), now + timedelta(seconds=10), now)
    assert cache.get("sk_token", now + timedelta(seconds=9)) == _caller()
    assert cache.get("sk_token", now + timedelta(seconds=10)) is None  # expired exactly now
    cache.put("sk_token", _caller(), None, now)
    assert cache.get("sk_token", now + timedelta(seconds=3599)) == _caller()
    assert cache.get("sk_token", now + timedelta(seconds=3600)) is None  # the cache's own ttl


def test_a_key_is_refused_at_the_instant_it_expires(api) -> None:  # type: ignore[no-untyped-def]
    key = api.principal(api.org("operator"), "operator", key_ttl_days=1)
    assert api.call("GET", "/v1/me", key).status_code == 200  # now also in the key cache
    api.clock.advance(timedelta(days=1) - timedelta(microseconds=1))
    assert api.call("GET", "/v1/me", key).status_code == 200
    api.clock.advance(timedelta(microseconds=1))
    resp = api.call("GET", "/v1/me", key)
    assert resp.status_code == 401 and resp.json()["code"] == "key_expired"


def test_self_review_is_refused_by_the_service() -> None:
    """No API path reaches it (operators cannot review), so the rule is checked where it lives."""
    job = Job(id="job_x", state=jobs.JobState.PENDING_REVIEW.value, submitted_by="prn_same", reviews_required=1)
    with pytest.raises(Forbidden) as refused:
        jobs.review(None, job, reviewer_id="prn_same", decision="approve", comment="looks fine",  # type: ignore[arg-type]
                    now=datetime(2026, 6, 1, tzinfo=UTC))
    assert (refused.value.code, refused.value.message) == ("self_review", "a reviewer may not review their own job")


@pytest.mark.parametrize(("decision", "comment", "code", "message"), [
    ("maybe", "looks fine", "invalid_review_decision", "decision must be approve or reject"),
    ("approve", "  \t ", "comment_required", "a review needs a comment"),
])
def test_a_review_with_an_unknown_decision_or_a_blank_comment_is_refused_saying_what_to_fix(
        decision: str, comment: str, code: str, message: str) -> None:
    """The API schema lets both through (any string; a comment of one character), so the service decides."""
    job = Job(id="job_x", state=jobs.JobState.PENDING_REVIEW.value, submitted_by="prn_op", reviews_required=1)
    with pytest.raises(InvalidInput) as refused:
        jobs.review(None, job, reviewer_id="prn_reviewer", decision=decision, comment=comment,  # type: ignore[arg-type]
                    now=datetime(2026, 6, 1, tzinfo=UTC))
    assert (refused.value.code, refused.value.message) == (code, message)


STATIONS = "station,district\n" + "".join(f"s{i},{'东区' if i % 2 else '西区'}\n" for i in range(40))
READINGS = "station,temp\n" + "".join(f"s{i % 40},{i % 9}.5\n" for i in range(200))


@pytest.fixture
def weather_grant(api) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    _, steward = api.actor("provider", "data_steward")
    for name, content in (("stations", STATIONS), ("readings", READINGS)):
        api.register(steward, dataset_id=name, content=content, domain="meteorology")
    op, key = api.actor("operator", "operator")
    return {"op": op, "key": key}


def _submit(api, key: str, grant: str, sql: str) -> Any:  # type: ignore[no-untyped-def]
    return api.call("POST", "/v1/jobs", key, json={"grant_id": grant, "title": "t", "purpose": "p", "sql": sql})


def test_auto_approval_never_covers_a_query_that_joins_datasets(api, weather_grant) -> None:  # type: ignore[no-untyped-def]
    grant = api.grant(weather_grant["op"], scope="domain", domains=["meteorology"], auto_approve=True)["id"]
    single = _submit(api, weather_grant["key"], grant, "SELECT station, avg(temp) AS t FROM readings GROUP BY 1")
    assert single.status_code == 201 and single.json()["state"] == "approved"
    joined = _submit(api, weather_grant["key"], grant, "SELECT s.district, avg(r.temp) AS t FROM readings r "
                     "JOIN stations s ON r.station = s.station GROUP BY s.district")
    assert joined.status_code == 201, joined.text
    assert joined.json()["analysis"]["joins_datasets"] is True and joined.json()["state"] == "pending_review"


def test_a_reviewer_who_approved_one_job_may_approve_another(api, weather_grant) -> None:  # type: ignore[no-untyped-def]
    """`already_reviewed` is per job: it must not stop a reviewer's decision on a different job."""
    grant = api.grant(weather_grant["op"], scope="domain", domains=["meteorology"])["id"]
    reviewer = api.principal(api.platform_org_id, "reviewer")
    for sql in ("SELECT station, avg(temp) AS t FROM readings GROUP BY 1", "SELECT count(*) AS n FROM readings"):
        job = _submit(api, weather_grant["key"], grant, sql)
        assert job.status_code == 201 and job.json()["state"] == "pending_review", job.text
        decided = api.ok("POST", f"/v1/jobs/{job.json()['id']}/review", reviewer,
                         json={"decision": "approve", "comment": "fine"})
        assert decided["state"] == "approved"


def test_a_grant_is_unusable_before_it_is_valid(api, weather_grant) -> None:  # type: ignore[no-untyped-def]
    start = api.clock.now() + timedelta(days=7)
    grant = api.grant(weather_grant["op"], scope="domain", domains=["meteorology"], auto_approve=True,
                      valid_from=start.isoformat())["id"]
    early = _submit(api, weather_grant["key"], grant, "SELECT station, avg(temp) AS t FROM readings GROUP BY 1")
    assert early.status_code == 422 and early.json()["code"] == "grant_not_yet_valid"
    api.clock.advance(timedelta(days=7))
    assert _submit(api, weather_grant["key"], grant, "SELECT station FROM readings").status_code == 201
