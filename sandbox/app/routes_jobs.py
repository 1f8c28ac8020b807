"""Jobs, reviews, runs and result downloads: the governed query path."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from metering.events import DatasetUse
from sandbox import jobs, runs
from sandbox.app.deps import SESSION, AppState, Guard, app_state, require
from sandbox.app.direct import DirectRoute
from sandbox.app.governed import execute_governed
from sandbox.app.schemas import StrictModel
from sandbox.errors import NotFound, Refused
from sandbox.executor import RunStatus
from sandbox.result_formats import MEDIA_TYPES, ResultFormat, encode_result
from sandbox.run_inputs import AnyJob, RunInputs, read_job_with_grant
from sandbox.run_record import AnyRun, RunRecord
from sandbox.store.models import Grant, Job, JobReview, Run
from sandbox.tracing import phase_spans

router = APIRouter(prefix="/v1", tags=["jobs"])


class JobIn(StrictModel):
    grant_id: str
    title: str = Field(min_length=1, max_length=300)
    purpose: str = Field(min_length=1)
    sql: str = Field(min_length=1)
    parameters: dict[str, str] = Field(default_factory=dict, description="$name -> type, e.g. {'d': 'VARCHAR'}")
    replaces: str | None = Field(None, description="the job this one corrects (same grant)")


class CheckIn(StrictModel):
    grant_id: str
    sql: str = Field(min_length=1)
    parameters: dict[str, str] = Field(default_factory=dict, description="$name -> type, e.g. {'d': 'VARCHAR'}")


class ReviewIn(StrictModel):
    decision: str = Field(description="approve or reject")
    comment: str = Field(min_length=1)


class RunIn(StrictModel):
    params: dict[str, Any] = Field(default_factory=dict)
    result: ResultFormat | None = Field(
        None, description="also send the result, in this format, when the run succeeds: the response body is then "
                          "the result (an audited, metered download committed with the run; needs `result:read`), "
                          "with the run's id in `Location` and `X-Run-Id`. A run that does not succeed answers "
                          "with its record as JSON, as without this field.")


@router.post("/jobs", status_code=201)
def submit_job(body: JobIn, guard: Guard = require("job", "create"), session: Session = SESSION,
               state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Submit SQL under a grant; it is analysed now, and stored whatever the verdict."""
    grant = session.get(Grant, body.grant_id)
    guard.check(grant.operator_org_id if grant else None, f"grant/{body.grant_id}")
    if grant is None:
        raise NotFound(f"grant {body.grant_id} does not exist", code="grant_not_found")
    with state.tracer.start_as_current_span("sluice.job.submit", attributes={"sluice.grant_id": grant.id}) as span:
        sub = jobs.submit(session, grant=grant, submitted_by=guard.caller.principal_id, title=body.title,
                          purpose=body.purpose, sql=body.sql, parameters=body.parameters, now=state.clock.now(),
                          replaces=body.replaces)
        span.set_attribute("sluice.job_id", sub.job.id)
        span.set_attribute("sluice.job_state", sub.job.state)
        phase_spans(state.tracer, sub.analysis.timings)
    job = sub.job
    guard.note(job_id=job.id, grant_id=grant.id, state=job.state, findings=[f["code"] for f in job.findings],
               auto_approved=sub.auto_approved, datasets=sorted(job.dataset_versions), title=job.title,
               purpose=job.purpose, replaces=job.replaces,
               sql_sha256=hashlib.sha256(body.sql.encode("utf-8")).hexdigest())
    guard.audit.resource = f"job/{job.id}"
    if job.state == jobs.JobState.REJECTED:
        for code in sorted({f["code"] for f in job.findings}):
            state.metrics.analysis_rejections.labels(code).inc()
        codes = sorted({f["code"] for f in job.findings})
        # the rejected job is kept, committed in one transaction with the audit record of its refusal
        raise guard.refuse_with(session, Refused(f"query refused by analysis: {', '.join(codes)}",
                                                 code="query_refused", job_id=job.id, findings=job.findings))
    return jobs.job_out(job)


@router.post("/jobs/check")
def check_job(body: CheckIn, guard: Guard = require("job", "create", audit_action="job:check"),
              session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Check SQL under a grant before submitting: the findings and the SQL that would run. Static analysis only:
    no job is stored and no data is read; the check is authorized like a submission and audited."""
    grant = session.get(Grant, body.grant_id)
    guard.check(grant.operator_org_id if grant else None, f"grant/{body.grant_id}")
    if grant is None:
        raise NotFound(f"grant {body.grant_id} does not exist", code="grant_not_found")
    result = jobs.check(session, grant=grant, sql=body.sql, parameters=body.parameters, now=state.clock.now())
    guard.note(grant_id=grant.id, verdict=result["verdict"], findings=[f["code"] for f in result["findings"]],
               datasets=sorted(result["dataset_versions"]),
               sql_sha256=hashlib.sha256(body.sql.encode("utf-8")).hexdigest())
    return result


@router.get("/jobs")
def list_jobs(guard: Guard = require("job", "read"), session: Session = SESSION,
              state: str | None = Query(None)) -> list[dict[str, Any]]:
    """Jobs the caller may see (operators: their organization's)."""
    q = select(Job).order_by(Job.created_at, Job.id)
    if not guard.any_org:
        q = q.where(Job.operator_org_id == guard.caller.org_id)
    if state:
        q = q.where(Job.state == state)
    return [jobs.job_out(j) for j in session.scalars(q)]


def _job_owner(job: AnyJob) -> str:
    return job.operator_org_id


def _job(session: Session, guard: Guard, job_id: str) -> Job:
    return guard.owned(session, Job, job_id, owner=_job_owner, kind="job")


def _job_with_grant(session: Session, guard: Guard, state: AppState, job_id: str) -> RunInputs:
    """The job and its grant, read fresh in one query (plain rows) and authorized like `_job` (404 after the
    check); from the job's second run in this process on, with its datasets' latest certified versions."""
    known = state.runs.job_datasets
    found = read_job_with_grant(session, job_id, known.get(job_id, ()))
    guard.authorized(found.job if found is not None else None, job_id, owner=_job_owner, kind="job")
    assert found is not None
    if job_id not in known:
        known[job_id] = tuple(sorted(found.job.dataset_versions))  # never changes for a job
    return found


def _reviews(session: Session, job: Job) -> list[JobReview]:
    return list(session.scalars(select(JobReview).where(JobReview.job_id == job.id).order_by(JobReview.id)))


@router.get("/jobs/{job_id}")
def get_job(job_id: str, guard: Guard = require("job", "read"), session: Session = SESSION
            ) -> dict[str, Any]:
    """One job with its findings, reviews and history (the chain of corrections it belongs to)."""
    job = _job(session, guard, job_id)
    return {**jobs.job_out(job, _reviews(session, job)), "history": jobs.history(session, job)}


@router.post("/jobs/{job_id}/review")
def review_job(job_id: str, body: ReviewIn, guard: Guard = require("job", "review"),
               session: Session = SESSION, state: AppState = Depends(app_state)) -> dict[str, Any]:
    """Approve or reject a pending job (agency reviewers; important data needs two)."""
    job = _job(session, guard, job_id)
    jobs.review(session, job, reviewer_id=guard.caller.principal_id, decision=body.decision, comment=body.comment,
                now=state.clock.now())
    guard.note(job_id=job.id, grant_id=job.grant_id, datasets=sorted(job.dataset_versions), decision=body.decision,
               comment=body.comment, state=job.state, sql_sha256=job.frozen_sql_sha256)
    return jobs.job_out(job, _reviews(session, job))


def run_job(job_id: str, body: RunIn | None = None, guard: Guard = require("run", "create"),
            session: Session = SESSION, state: AppState = Depends(app_state),
            idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=200)
            ) -> Response:
    """Run an approved job in the sandbox; a retried Idempotency-Key returns the same run."""
    read = _job_with_grant(session, guard, state, job_id)
    job, grant = read.job, read.grant
    caller = guard.caller.principal_id
    earlier = runs.find_idempotent(session, job, caller, idempotency_key)
    fmt = body.result if body else None
    if earlier is not None:
        guard.note(run_id=earlier.id, idempotent_replay=True, grant_id=grant.id)
        jobs.check_grant_usable(grant, state.clock.now())  # no replay once the grant is suspended or over
        if fmt is not None and earlier.status == RunStatus.SUCCEEDED and earlier.result_path:
            again = _Inline(state, guard, session, earlier, fmt)
            guard.commit_with(session, [again.usage(None)], status=201)
            return again.response()
        return _json(runs.run_out(earlier))
    guard.note(job_id=job.id, grant_id=grant.id, datasets=sorted(job.dataset_versions),
               sql_sha256=job.frozen_sql_sha256)
    params = runs.coerce_params(job.parameters, (body.params if body else {}))
    now = state.clock.now()
    run = runs.new_run(job, requested_by=caller, idempotency_key=idempotency_key, params=params, now=now,
                       instance=state.runs.instance)
    guard.audit.resource = f"run/{run.id}"
    guard.note(run_id=run.id, params_sha256=runs.params_digest(run.params))
    inline = None if fmt is None else _Inline(state, guard, session, run, fmt)  # authorized before the run
    with state.tracer.start_as_current_span("sluice.run", attributes={"sluice.run_id": run.id,
                                                                      "sluice.job_id": job.id}) as span:
        done = execute_governed(state, guard, session, job, grant, run, params, now,
                                finished=None if inline is None else inline.finished, latest=read.latest)
        answer = runs.run_out(done.earlier or done.run)
        span.set_attribute("sluice.run_status", str(answer["status"]))
    if inline is not None and done.earlier is None and inline.body is not None:
        return inline.response()
    return _json(answer)


# served without FastAPI's dependency solving when well formed (the same gate, session and validation; see direct.py)
router.add_api_route("/jobs/{job_id}/runs", run_job, methods=["POST"], status_code=201, response_model=None,
                     route_class_override=DirectRoute)
router.routes.insert(0, router.routes.pop())  # matched first: the router scans its routes in order (no overlap)


def _json(answer: dict[str, Any]) -> Response:
    """A run record as the 201 response, rendered directly: its values are JSON types already (no
    `jsonable_encoder` walk; the same bytes as FastAPI's own rendering of the dict)."""
    return JSONResponse(answer, status_code=201)


class _Inline:
    """A run POST's result download: authorized up front, encoded and metered once the run has succeeded, and
    audited as its own `result:read` record right after the run's, in the same commit."""

    def __init__(self, state: AppState, guard: Guard, session: Session, run: AnyRun, fmt: ResultFormat) -> None:
        self.state, self.guard, self.session, self.run, self.fmt = state, guard, session, run, fmt
        self.draft = guard.second_access("result", "read", run.operator_org_id, f"run/{run.id}")
        self.body: bytes | None = None
        self.sent_sha256 = ""

    def finished(self, run: RunRecord, datasets: Sequence[DatasetUse]) -> list[Any]:
        """The download's usage event, for the run's commit (nothing when the run did not succeed)."""
        if run.status != RunStatus.SUCCEEDED or not run.result_path:
            return []
        return [self.usage(datasets)]

    def usage(self, datasets: Sequence[DatasetUse] | None) -> Any:
        """Encode the result, note the download in its own audit record, and return its usage event."""
        run = self.run
        self.body = encode_result(self.state.settings.resolved_home / (run.result_path or ""), self.fmt)
        self.sent_sha256 = hashlib.sha256(self.body).hexdigest()
        self.draft.note(run_id=run.id, grant_id=run.grant_id, datasets=sorted(run.dataset_versions),
                        sql_sha256=run.frozen_sql_sha256, format=self.fmt.value, result_sha256=run.result_sha256,
                        result_rows=run.result_rows, sent_sha256=self.sent_sha256, with_run=True)
        self.guard.follow(self.draft)
        return self.state.metering.download(self.session, run, self.fmt, len(self.body), self.state.clock.now(),
                                            self.guard.trace_id, datasets=datasets)

    def response(self) -> Response:
        """The result as the response body, with the run's id and the hashes in headers."""
        run = self.run
        assert self.body is not None
        return Response(self.body, status_code=201, media_type=MEDIA_TYPES[self.fmt], headers={
            "Location": f"/v1/runs/{run.id}", "X-Run-Id": run.id, "X-Run-Status": str(run.status),
            "X-Result-Rows": str(run.result_rows), "X-Suppressed-Cells": str(run.suppressed_cells),
            "X-Truncated-Rows": str(run.truncated_rows), "X-Result-SHA256": self.sent_sha256,
            "X-Result-Parquet-SHA256": run.result_sha256 or "",
            "Content-Disposition": f'attachment; filename="{run.id}.{self.fmt.value}"'})


@router.get("/runs")
def list_runs(guard: Guard = require("run", "read"), session: Session = SESSION,
              job_id: str | None = Query(None)) -> list[dict[str, Any]]:
    """Runs the caller may see."""
    q = select(Run).order_by(Run.created_at, Run.id)
    if not guard.any_org:
        q = q.where(Run.operator_org_id == guard.caller.org_id)
    if job_id:
        q = q.where(Run.job_id == job_id)
    return [runs.run_out(r) for r in session.scalars(q)]


def _run(session: Session, guard: Guard, run_id: str) -> Run:
    return guard.owned(session, Run, run_id, owner=lambda r: r.operator_org_id, kind="run")


@router.get("/runs/{run_id}")
def get_run(run_id: str, guard: Guard = require("run", "read"), session: Session = SESSION
            ) -> dict[str, Any]:
    """One run's record."""
    return runs.run_out(_run(session, guard, run_id))


@router.get("/runs/{run_id}/result", response_model=None)
def download_result(run_id: str, format: ResultFormat = Query(ResultFormat.JSON),
                    bom: bool = Query(False, description="CSV for Excel: UTF-8 with a byte-order mark and CRLF "
                                                         "line ends (default: plain UTF-8, LF)"),
                    guard: Guard = require("result", "read"), session: Session = SESSION,
                    state: AppState = Depends(app_state)) -> Response:
    """Download a succeeded run's result; every download is an audited access."""
    run = _run(session, guard, run_id)
    guard.note(run_id=run.id, grant_id=run.grant_id, datasets=sorted(run.dataset_versions),
               sql_sha256=run.frozen_sql_sha256)
    if run.status != RunStatus.SUCCEEDED or not run.result_path:
        raise NotFound(f"run {run_id} has no result (status {run.status})", code="result_not_available")
    grant = session.get(Grant, run.grant_id)
    assert grant is not None
    jobs.check_grant_usable(grant, state.clock.now())  # the file is kept for audit, but no longer handed out
    path = state.settings.resolved_home / run.result_path
    guard.note(run_id=run.id, format=format.value, result_sha256=run.result_sha256, result_rows=run.result_rows)
    headers = {"X-Result-Parquet-SHA256": run.result_sha256 or "", "Content-Disposition":
               f'attachment; filename="{run.id}.{format.value}"'}
    if format == ResultFormat.PARQUET:
        _metered(state, guard, session, run, format, path.stat().st_size)
        return FileResponse(path, media_type=MEDIA_TYPES[format],
                            headers={**headers, "X-Result-SHA256": run.result_sha256 or ""})
    body = encode_result(path, format, bom=bom)
    _metered(state, guard, session, run, format, len(body))
    headers["X-Result-SHA256"] = hashlib.sha256(body).hexdigest()  # the bytes actually sent
    return Response(body, media_type=MEDIA_TYPES[format], headers=headers)


def _metered(state: AppState, guard: Guard, session: Session, run: AnyRun, fmt: str, size: int) -> None:
    """Commit the download's usage event with its audit row (group commit) before any byte is sent."""
    usage = state.metering.download(session, run, fmt, size, state.clock.now(), guard.trace_id)
    guard.commit_with(session, [usage], status=200)
