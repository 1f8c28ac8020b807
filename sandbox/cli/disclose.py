"""`sluice disclose`: build a period's disclosure report (draft or published) in every format and language,
publish a closed period, and verify a report offline against the disclosure public keys."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from disclosure.labels import LANGS
from disclosure.render import to_csv, to_html, to_markdown
from sandbox.cli import JsonOpt, call, client, settings
from sandbox.cli.client import ApiError
from sandbox.cli.output import emit, err

disclose_app: typer.Typer = typer.Typer(help="Disclosure reports (信息披露): build, publish, verify.",
                                        invoke_without_command=True)
FORMATS = ("json", "html", "md", "csv")
PeriodOpt = Annotated[str, typer.Option("--period", help="a year (2026), a quarter (2026-Q3) or a month (2026-11)")]


def _choices(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    chosen = list(allowed) if value == "all" else [v.strip() for v in value.split(",")]
    bad = [v for v in chosen if v not in allowed]
    if bad:
        err.print(f"[red]error[/red] invalid_{what}: {', '.join(bad)}; use {', '.join(allowed)} or all")
        raise typer.Exit(1)
    return chosen


def write_report(out: Path, data: bytes, signature: dict[str, Any], formats: list[str], langs: list[str]
                 ) -> list[str]:
    """Write the signed JSON, its signature and the renderings into `out`; returns the paths written."""
    report = json.loads(data)
    stem = f"disclosure-{report['period']}"
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name: str, content: bytes) -> None:
        (out / name).write_bytes(content)
        written.append(str(out / name))

    put(f"{stem}.sig.json", json.dumps(signature, ensure_ascii=False, sort_keys=True, indent=2).encode("utf-8"))
    if "json" in formats:
        put(f"{stem}.json", data)
    for lang in langs:
        if "html" in formats:
            put(f"{stem}.{lang}.html", to_html(report, lang, signature=signature).encode("utf-8"))
        if "md" in formats:
            put(f"{stem}.{lang}.md", to_markdown(report, lang).encode("utf-8"))
        if "csv" in formats:
            folder = out / f"{stem}.{lang}.csv"
            folder.mkdir(exist_ok=True)
            for name, content in sorted(to_csv(report, lang).items()):
                (folder / name).write_bytes(content)
            written.append(str(folder))
    return written


@disclose_app.callback()
def disclose(ctx: typer.Context, period: Annotated[str | None, typer.Option(
                 "--period", help="a year (2026), a quarter (2026-Q3) or a month (2026-11)")] = None,
             lang: Annotated[str, typer.Option(help="en, zh-CN, or all")] = "all",
             format: Annotated[str, typer.Option("--format", help="json, html, md, csv (comma-separated) or all")]
             = "all",
             out: Annotated[Path, typer.Option("--out", help="folder for the files")] = Path("disclosures"),
             as_json: JsonOpt = False) -> None:
    """Build the report of a period: published if it is, else a draft (agency and regulators only)."""
    if ctx.invoked_subcommand is not None:
        return
    if period is None:
        err.print("[red]error[/red] missing_period: pass --period 2026, 2026-Q3 or 2026-11")
        raise typer.Exit(1)
    formats, langs = _choices(format, FORMATS, "format"), _choices(lang, LANGS, "lang")
    try:
        with client() as c:
            data, headers = c.fetch(f"/v1/disclosures/{period}", params={"format": "json"})
    except ApiError as e:
        err.print(f"[red]error[/red] {e.code}: {e.problem.get('detail', '')}")
        raise typer.Exit(1) from None
    signature = json.loads(base64.b64decode(headers["x-disclosure-signature"]))
    written = write_report(out, data, signature, formats, langs)
    report = json.loads(data)
    emit({"period": report["period"], "status": report["status"], "sha256": signature["sha256"],
          "out": str(out), "files": written}, as_json)


@disclose_app.command("publish")
def publish(period: PeriodOpt, as_json: JsonOpt = False) -> None:
    """Publish a closed period's report (the agency): its cut-off is now, and it is signed and stored."""
    call(lambda c: c.post(f"/v1/disclosures/{period}/publish"), as_json)


@disclose_app.command("verify")
def verify(report: Annotated[Path, typer.Argument(help="the report's JSON file")],
           signature: Annotated[Path | None, typer.Option(help="its .sig.json (default: beside the report)")] = None,
           public_key: Annotated[list[Path] | None, typer.Option(
               "--public-key", help="a disclosure public key (PEM); default: this home's keys")] = None,
           as_json: JsonOpt = False) -> None:
    """Verify a report offline: canonical JSON, its SHA-256 and the Ed25519 signature (no server needed)."""
    from disclosure.errors import DisclosureError
    from disclosure.sealed import verify_report
    from disclosure.signing import KeyRing, kid_for, load_public_key_pem

    sig_path = signature or report.with_name(report.name.removesuffix(".json") + ".sig.json")
    try:
        data = report.read_bytes()
        envelope = json.loads(sig_path.read_text("utf-8"))
        if public_key:
            keys = {kid_for(k): k for k in (load_public_key_pem(p.read_bytes()) for p in public_key)}
        else:
            keys = KeyRing(settings().keys_dir).public_keys("disclosure")
        kid = verify_report(data, envelope, keys)
    except (OSError, ValueError) as exc:
        err.print(f"[red]error[/red] unreadable_input: {exc}")
        raise typer.Exit(1) from None
    except DisclosureError as exc:
        if as_json:
            emit({"verified": False, "code": exc.code, "detail": exc.message}, True)
        else:
            err.print(f"[red]NOT VERIFIED[/red] {exc.code}: {exc.message}")
        raise typer.Exit(1) from None
    emit({"verified": True, "period": envelope["period"], "status": envelope["status"], "sha256": envelope["sha256"],
          "kid": kid}, as_json)
