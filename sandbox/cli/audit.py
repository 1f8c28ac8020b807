"""`sluice audit`: list, checkpoint, export, and the regulator's offline tools `verify` and `witness`."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from sandbox.cli import JsonOpt, audit_app, call, client
from sandbox.cli.client import ApiError
from sandbox.cli.errors import CliFailure, Exit, read_bytes, read_json, read_text
from sandbox.cli.output import emit, err, out, write_output


def _filters(actor: str | None, org: str | None, dataset: str | None, action: str | None, decision: str | None,
             since: str | None, until: str | None) -> dict[str, str]:
    given = {"actor": actor, "org": org, "dataset": dataset, "action": action, "decision": decision,
             "since": since, "until": until}
    return {k: v for k, v in given.items() if v is not None}


Actor = Annotated[str | None, typer.Option(help="principal id of the actor")]
Org = Annotated[str | None, typer.Option(help="organization of the actor or of the resource")]
Dataset = Annotated[str | None, typer.Option(help="dataset id")]
Action = Annotated[str | None, typer.Option(help="e.g. run:create, or a prefix such as run:")]
DecisionOpt = Annotated[str | None, typer.Option(help="allow, deny, refused, invalid or failed")]
Since = Annotated[str | None, typer.Option(help="RFC 3339 time, e.g. 2026-06-01T00:00:00Z")]
Until = Annotated[str | None, typer.Option(help="RFC 3339 time (exclusive)")]


def business_reason(event: dict[str, Any]) -> str:
    """The reason a person gave (suspension reason, review comment, job purpose), else the decision's reason."""
    detail = event.get("detail") or {}
    for key in ("reason", "comment", "purpose"):
        if isinstance(detail.get(key), str) and detail[key]:
            return str(detail[key])
    return str(event.get("reason") or "")


@audit_app.command("list")
def audit_list(actor: Actor = None, org: Org = None, dataset: Dataset = None, action: Action = None,
               decision: DecisionOpt = None, since: Since = None, until: Until = None,
               latest: Annotated[int | None, typer.Option(help="the newest N records")] = None,
               limit: Annotated[int, typer.Option(help="records per page")] = 50,
               cursor: Annotated[int, typer.Option(help="continue from a previous page's next cursor")] = 0,
               proofs: Annotated[bool, typer.Option(help="include inclusion proofs")] = False,
               as_json: JsonOpt = False) -> None:
    """Read the audit trail: resource and business reason per record; says when more records exist."""
    params: dict[str, Any] = {**_filters(actor, org, dataset, action, decision, since, until), "limit": limit,
                              "cursor": cursor, "proofs": proofs}
    if latest is not None:
        params["latest"] = latest
    page = call(lambda c: c.get("/v1/audit/events", params=params), as_json, quiet=True)
    if as_json:
        emit(page, True)
        return
    rows = [{"seq": e["seq"], "time": e["time"][:19].replace("T", " "), "actor": e["actor"]["principal"] or "-",
             "action": e["action"], "resource": e["resource"]["name"], "decision": e["decision"],
             "code": e["code"] or "", "reason": business_reason(e)} for e in page["events"]]
    emit(rows, False, columns=["seq", "time", "actor", "action", "resource", "decision", "code", "reason"])
    if page["more"]:
        hint = (f"--cursor {page['next_cursor']}" if page.get("next_cursor") is not None
                else "a larger --latest, or filters")
        err.print(f"more records exist: use {hint} (log size {page['tree_size']})")


@audit_app.command("checkpoint")
def audit_checkpoint(output: Annotated[Path | None, typer.Option("-o", "--output", help="save the signed note")]
                     = None, as_json: JsonOpt = False) -> None:
    """The latest signed checkpoint (made now if the log grew)."""
    data = call(lambda c: c.get("/v1/audit/checkpoint"), as_json, quiet=True)
    if output is not None:
        write_output(output, data["note"])
    if as_json:
        emit(data, True)
    else:
        out.print(data["note"], end="", markup=False, highlight=False)


@audit_app.command("public-key")
def audit_public_key(output: Annotated[Path, typer.Option("-o", "--output", help="file to write; - for stdout")],
                     kid: Annotated[str | None, typer.Option(help="key id (default: the newest)")] = None,
                     as_json: JsonOpt = False) -> None:
    """Save the checkpoint verifier key (C2SP `name+hash+key` string) for offline verification."""
    keys = call(lambda c: c.get("/v1/keys"), as_json, public=True, quiet=True)["checkpoint_verifier_keys"]
    chosen = kid or sorted(keys)[-1]
    if chosen not in keys:
        raise CliFailure("key_not_found", f"no checkpoint key {chosen}", f"known: {', '.join(sorted(keys))}")
    if write_output(output, keys[chosen] + "\n") != "-":
        emit({"kid": chosen, "verifier_key": keys[chosen], "file": str(output)}, as_json)


def _checkpoint_sizes(files: list[Path]) -> list[int]:
    sizes = []
    for f in files:
        lines = read_text(f, "checkpoint file").split("\n")
        if len(lines) < 2 or not lines[1].isdigit():
            raise CliFailure("checkpoint_malformed", f"{f} is not a checkpoint",
                             "save one with `sluice audit checkpoint -o FILE`", Exit.INPUT_FILE)
        sizes.append(int(lines[1]))
    return sizes


@audit_app.command("export")
def audit_export(output: Annotated[Path, typer.Option("-o", "--output", help="JSON-lines file to write")],
                 actor: Actor = None, org: Org = None, dataset: Dataset = None, action: Action = None,
                 decision: DecisionOpt = None, since: Since = None, until: Until = None,
                 checkpoint: Annotated[list[Path] | None, typer.Option(
                     "--checkpoint", help="a checkpoint you hold: the export carries a consistency proof from it")]
                 = None, as_json: JsonOpt = False) -> None:
    """Export the log (or a filtered part, with inclusion proofs) with its signed checkpoint."""
    params: dict[str, Any] = {**_filters(actor, org, dataset, action, decision, since, until),
                              "consistency_from": _checkpoint_sizes(checkpoint or [])}
    data = call(lambda c: c.get("/v1/audit/export", raw=True, params=params), as_json, quiet=True)
    header = json.loads(data.split(b"\n", 1)[0])
    if write_output(output, data) == "-":
        return
    emit({"file": str(output), "tree_size": header["tree_size"], "filtered": header["filtered"],
          "records": data.count(b"\n") - 1}, as_json)


def _keys(public_key: Path, origin: str | None) -> list[Any]:
    from disclosure.checkpoint import CheckpointError, load_verifier_key

    try:
        return [load_verifier_key(read_bytes(public_key, "verifier key file"), origin)]
    except (CheckpointError, ValueError) as exc:
        raise CliFailure("invalid_public_key", f"verifier key file {public_key} is not valid "
                         f"({getattr(exc, 'message', exc)})", "save one with `sluice audit public-key -o FILE`",
                         Exit.INPUT_FILE) from None


def _proof(path: Path) -> list[str]:
    data = read_json(path, "proof file")
    if not isinstance(data, dict) or not isinstance(data.get("proof"), list):
        raise CliFailure("proof_malformed", f"proof file {path} has no `proof` list",
                         "save the JSON of /v1/audit/proofs/consistency", Exit.INPUT_FILE)
    return [str(p) for p in data["proof"]]


def _export_origin(data: bytes) -> str | None:
    try:
        return str(json.loads(data.split(b"\n", 1)[0])["checkpoint"].split("\n", 1)[0])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@audit_app.command("verify")
def audit_verify(export_file: Annotated[Path, typer.Argument(help="an export from `sluice audit export`")],
                 public_key: Annotated[Path, typer.Option("--public-key", help="checkpoint key: C2SP verifier key "
                                                          "string or PEM (from `sluice audit public-key`)")],
                 checkpoint: Annotated[list[Path] | None, typer.Option(
                     "--checkpoint", help="another checkpoint you hold (repeatable): must be consistent")] = None,
                 origin: Annotated[str | None, typer.Option(help="the log's origin, if the key is PEM")] = None,
                 as_json: JsonOpt = False) -> None:
    """Verify an export fully offline: signatures, the tree, proofs, consistency; exit 1 on any failure."""
    from disclosure.export import verify_export

    data = read_bytes(export_file, "export file")
    keys = _keys(public_key, origin or _export_origin(data))
    notes = [read_text(p, "checkpoint file") for p in checkpoint or []]
    report = verify_export(data, keys, notes, origin=origin)
    if as_json:
        emit(report.as_dict(), True)
    elif report.ok:
        kind = "filtered export, every inclusion proof" if report.filtered else "full export, the whole tree"
        out.print(f"[green]OK[/green] {report.entries} records verified ({kind}) against the checkpoint of size "
                  f"{report.tree_size}; {len(report.checkpoints) - 1} other checkpoint(s) consistent")
    else:
        where = (f" — first bad entry {report.first_bad_entry} (line {report.first_bad_line})"
                 if report.first_bad_entry is not None else "")
        err.print(f"[red]FAILED[/red]{where}")
        for problem in report.problems:
            err.print(escape(f"  {problem}"), soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("witness")
def audit_witness(state: Annotated[Path, typer.Option(help="file holding the last accepted checkpoint")],
                  public_key: Annotated[Path, typer.Option("--public-key", help="checkpoint verifier key or PEM")],
                  checkpoint: Annotated[Path | None, typer.Option(help="offline: a new checkpoint file")] = None,
                  proof: Annotated[Path | None, typer.Option(help="offline: consistency proof (JSON from "
                                                             "/v1/audit/proofs/consistency)")] = None,
                  origin: Annotated[str | None, typer.Option(help="the log's origin, if the key is PEM")] = None,
                  as_json: JsonOpt = False) -> None:
    """Accept the log's newest checkpoint only if it is consistent with the last one accepted; exit 1 if not."""
    from disclosure.checkpoint import CheckpointError
    from disclosure.witness import Witness

    keys = _keys(public_key, origin)
    witness = Witness(state, keys)
    try:
        previous = witness.last()
    except (CheckpointError, ValueError, KeyError) as exc:
        raise CliFailure("witness_state_invalid", f"witness state {state} is not valid "
                         f"({getattr(exc, 'message', exc)})", "restore it from a backup or start a new one",
                         Exit.INPUT_FILE) from None
    if checkpoint is not None:
        note = read_text(checkpoint, "checkpoint file")
        proof_b64 = _proof(proof) if proof else []
    else:
        try:
            with client() as c:
                note = c.get("/v1/audit/checkpoint")["note"]
                size = int(note.split("\n")[1])
                proof_b64 = []
                if previous is not None and 0 < previous.size < size:
                    proof_b64 = c.get("/v1/audit/proofs/consistency",
                                      params={"first": previous.size, "second": size})["proof"]
        except ApiError as e:
            raise CliFailure(e.code, str(e.problem.get("detail", "")), "", Exit.REFUSED) from None
    result = witness.accept(note, [base64.b64decode(p) for p in proof_b64])
    data = {"accepted": result.accepted, "reason": result.reason,
            "previous_size": result.previous.size if result.previous else None,
            "size": result.current.size if result.current else None,
            "timestamp": result.current.timestamp.isoformat() if result.current else None}
    emit(data, as_json)
    if not result.accepted:
        raise typer.Exit(1)
