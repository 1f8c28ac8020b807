"""`sluice registrations …`: the registration workflow through the API (see docs/registration.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sandbox.cli.client import Client

app = typer.Typer(help="Registration workflow: accept, review, notice, objections, certificates.",
                  no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Reason = Annotated[str, typer.Option(help="why (recorded and audited)")]


def _call(fn: Any, as_json: bool, **kw: Any) -> Any:
    from sandbox.cli import call

    return call(fn, as_json, **kw)


def _path(dataset_id: str, version: int, action: str = "") -> str:
    return f"/v1/registrations/{dataset_id}/{version}" + (f"/{action}" if action else "")


@app.command("list")
def list_(state: Annotated[str | None, typer.Option(help="only this state, e.g. applied")] = None,
          as_json: JsonOpt = False) -> None:
    """Registrations the caller may see (providers: their own; agency and regulators: all)."""
    _call(lambda c: c.get("/v1/registrations", params={"state": state} if state else {}), as_json,
          columns=["dataset", "version", "state", "path", "grade", "provider", "certificate_code"])


@app.command("notices")
def notices(as_json: JsonOpt = False) -> None:
    """Registrations in public notice (public; no key needed)."""
    from sandbox.cli import settings

    with Client(settings()) as c:
        from sandbox.cli.output import emit

        emit(c.get("/v1/registrations/notices"), as_json,
             columns=["dataset", "version", "title", "grade", "provider", "notice_ends_at", "objections"])


@app.command("show")
def show(dataset_id: str, version: int, as_json: JsonOpt = False) -> None:
    """One registration with dates, quality findings, history and objections."""
    _call(lambda c: c.get(_path(dataset_id, version)), as_json)


def _post(dataset_id: str, version: int, action: str, body: dict[str, Any] | None, as_json: bool) -> None:
    _call(lambda c: c.post(_path(dataset_id, version, action), body), as_json)


@app.command("accept")
def accept(dataset_id: str, version: int, comment: Annotated[str, typer.Option(help="why (recorded and audited)")] = "",
           as_json: JsonOpt = False) -> None:
    """受理: accept an application (agency)."""
    _post(dataset_id, version, "accept", {"comment": comment}, as_json)


@app.command("return")
def return_(dataset_id: str, version: int, reason: Reason,
            field: Annotated[list[str], typer.Option(help="a field to correct (repeatable): data, title, "
                                                          "grade, columns.<name>, ...")],
            as_json: JsonOpt = False) -> None:
    """Return an application with the reason and the fields to correct (agency)."""
    _post(dataset_id, version, "return", {"reason": reason, "fields": field}, as_json)


@app.command("start-review")
def start_review(dataset_id: str, version: int, as_json: JsonOpt = False) -> None:
    """审查: take an accepted application for review (a reviewer who did not accept it)."""
    _post(dataset_id, version, "start-review", None, as_json)


@app.command("approve")
def approve(dataset_id: str, version: int, comment: Annotated[str, typer.Option(help="why (recorded and audited)")],
            acknowledge_findings: Annotated[bool, typer.Option("--acknowledge-findings",
                                                               help="I have read the quality findings")] = False,
            as_json: JsonOpt = False) -> None:
    """Pass the review: public notice starts (a metadata-only change is certified at once)."""
    _post(dataset_id, version, "approve", {"comment": comment, "acknowledge_findings": acknowledge_findings},
          as_json)


@app.command("reject")
def reject(dataset_id: str, version: int, reason: Reason, as_json: JsonOpt = False) -> None:
    """Reject an application under review."""
    _post(dataset_id, version, "reject", {"reason": reason}, as_json)


@app.command("withdraw")
def withdraw(dataset_id: str, version: int, reason: Reason, as_json: JsonOpt = False) -> None:
    """Withdraw your own application (provider)."""
    _post(dataset_id, version, "withdraw", {"reason": reason}, as_json)


@app.command("issue")
def issue(dataset_id: str, version: int, as_json: JsonOpt = False) -> None:
    """凭证签发: issue the certificate after the notice period with every objection resolved."""
    _post(dataset_id, version, "issue", None, as_json)


@app.command("certify-now")
def certify_now(dataset_id: str, version: int, reason: Reason, as_json: JsonOpt = False) -> None:
    """Demo/test shortcut (agency admin only, audited): certify an application at once."""
    _post(dataset_id, version, "certify-now", {"reason": reason}, as_json)


@app.command("revoke")
def revoke(dataset_id: str, version: int, reason: Reason, as_json: JsonOpt = False) -> None:
    """注销: revoke a certified registration; its certificate is revoked and its jobs stop."""
    _post(dataset_id, version, "revoke", {"reason": reason}, as_json)


@app.command("object")
def object_(dataset_id: str, version: int, reason: Reason, as_json: JsonOpt = False) -> None:
    """异议: object to a registration in public notice."""
    _post(dataset_id, version, "objections", {"reason": reason}, as_json)


@app.command("resolve")
def resolve(dataset_id: str, version: int, objection_id: str,
            outcome: Annotated[str, typer.Option(help="dismiss or uphold")],
            resolution: Annotated[str, typer.Option(help="published with the notice")],
            as_json: JsonOpt = False) -> None:
    """Resolve an objection (agency reviewer); upholding returns the application."""
    _post(dataset_id, version, f"objections/{objection_id}/resolve", {"outcome": outcome, "resolution": resolution},
          as_json)
