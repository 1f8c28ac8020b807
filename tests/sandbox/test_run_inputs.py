"""The run path reads a job and its grant as plain rows that equal the ORM models, field for field."""

from __future__ import annotations

from billing_world import _job, build_world

from sandbox.regrade import latest_bounding_version
from sandbox.run_inputs import GRANT_COLUMNS, JOB_COLUMNS, read_job_with_grant
from sandbox.store.db import make_engine, session_factory
from sandbox.store.models import Grant, Job


def test_the_grant_row_has_every_column_of_the_grants_table_and_the_job_row_only_job_columns() -> None:
    assert sorted(GRANT_COLUMNS) == sorted(Grant.__table__.c.keys())
    assert set(JOB_COLUMNS) <= set(Job.__table__.c.keys())


def test_a_job_and_its_grant_read_as_rows_equal_what_the_orm_loads(api) -> None:  # type: ignore[no-untyped-def]
    w = build_world(api)
    second = api.grant(w.industry, purpose_class="public_interest", auto_approve=True)["id"]  # the org's second
    job_id = _job(api, w.industry_key, second, w.dataset)
    engine = make_engine(api.settings.resolved_database_url)
    with session_factory(engine)() as s:
        found = read_job_with_grant(s, job_id)
        job = s.get(Job, job_id)
        assert found is not None and job is not None
        grant = s.get(Grant, job.grant_id)
        assert grant is not None and grant.id == second
        assert {name: getattr(found.job, name) for name in JOB_COLUMNS} == {name: getattr(job, name)
                                                                             for name in JOB_COLUMNS}
        assert {name: getattr(found.grant, name) for name in GRANT_COLUMNS} == {name: getattr(grant, name)
                                                                                 for name in GRANT_COLUMNS}
        assert found.latest is None  # not asked for
        assert read_job_with_grant(s, "job_missing") is None
    with session_factory(engine)() as s:
        datasets = sorted(job.dataset_versions)
        again = read_job_with_grant(s, job_id, datasets)
        assert again is not None and again.latest == latest_bounding_version(s, datasets) == {w.dataset: 1}
        assert again.job == found.job and again.grant == found.grant
        other = read_job_with_grant(s, job_id, ["another_dataset"])  # not the job's datasets: not returned
        assert other is not None and other.latest is None
    engine.dispose()
