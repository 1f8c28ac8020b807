"""`sluice quality …`: quality profiles, quality reports and their answers, feedback statistics."""

from __future__ import annotations

from typing import Annotated, Any

import typer

app = typer.Typer(help="Data quality: self-check profiles, reports found in use, answers, statistics.",
                  no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _call(fn: Any, as_json: bool, **kw: Any) -> Any:
    from sandbox.cli import call

    return call(fn, as_json, **kw)


@app.command("profile")
def profile(dataset_id: str, version: int, as_json: JsonOpt = False) -> None:
    """A version's quality self-check (values only for open columns)."""
    _call(lambda c: c.get(f"/v1/datasets/{dataset_id}/versions/{version}/quality"), as_json)


@app.command("report")
def report(dataset_id: str,
           category: Annotated[str, typer.Option(help="missing_values, wrong_values, duplicates, stale_data, "
                                                      "schema, documentation or other")],
           description: Annotated[str, typer.Option(help="what is wrong, in words")],
           version: Annotated[int | None, typer.Option(help="default: latest certified")] = None,
           column: Annotated[str | None, typer.Option(help="the column concerned")] = None,
           as_json: JsonOpt = False) -> None:
    """File a quality problem found in use (operators, customers); you get a receipt, not the answer."""
    body = {"dataset": dataset_id, "version": version, "category": category, "column": column,
            "description": description}
    _call(lambda c: c.post("/v1/quality/reports", body), as_json)


@app.command("list")
def list_(status: Annotated[str | None, typer.Option(help="only this status")] = None,
          overdue: Annotated[bool, typer.Option("--overdue", help="only open reports past their deadline")] = False,
          dataset: Annotated[str | None, typer.Option(help="only this dataset")] = None,
          as_json: JsonOpt = False) -> None:
    """Reports the caller may read (providers: their datasets'; agency: all)."""
    params: dict[str, Any] = {"overdue": overdue}
    if status:
        params["status"] = status
    if dataset:
        params["dataset"] = dataset
    _call(lambda c: c.get("/v1/quality/reports", params=params), as_json,
          columns=["id", "dataset", "version", "category", "column", "status", "overdue", "due_at"])


@app.command("show")
def show(report_id: str, as_json: JsonOpt = False) -> None:
    """One report (provider and agency only)."""
    _call(lambda c: c.get(f"/v1/quality/reports/{report_id}"), as_json)


@app.command("answer")
def answer(report_id: str, answer: Annotated[str, typer.Option(help="acknowledged, fixed_in_version or "
                                                                    "not_a_defect")],
           reason: Annotated[str, typer.Option(help="why (recorded and audited)")] = "",
           fixed_in_version: Annotated[int | None, typer.Option(help="the version that fixes it")] = None,
           as_json: JsonOpt = False) -> None:
    """Answer a report about your dataset (provider)."""
    body = {"answer": answer, "reason": reason, "fixed_in_version": fixed_in_version}
    _call(lambda c: c.post(f"/v1/quality/reports/{report_id}/answer", body), as_json)


@app.command("stats")
def stats(since: Annotated[str | None, typer.Option(help="ISO time with offset")] = None,
          until: Annotated[str | None, typer.Option(help="RFC 3339 time (exclusive)")] = None,
          provider: Annotated[str | None, typer.Option(help="provider organization id")] = None,
          as_json: JsonOpt = False) -> None:
    """Counts and median time to resolve (what disclosure reports publish)."""
    params = {k: v for k, v in {"since": since, "until": until, "provider": provider}.items() if v}
    _call(lambda c: c.get("/v1/quality/stats", params=params), as_json)
