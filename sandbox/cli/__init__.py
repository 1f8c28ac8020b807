"""`sluice`: the command line. Verbs act as an authenticated principal through the API (no back door)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from sandbox.cli.client import ApiError, Client
from sandbox.cli.errors import CliFailure, Exit, SluiceGroup, print_failure, read_bytes, read_json, read_text
from sandbox.cli.options import JobStateOpt, OrgKindOpt, ResultFormat, ReviewDecision, SigningContext
from sandbox.cli.output import emit, err, write_output
from sandbox.clock import SystemClock
from sandbox.config import Settings, load_settings

app = typer.Typer(help="Sluice: authorized operation of public data. Exit codes: docs/cli.md.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=SluiceGroup)
db_app = typer.Typer(help="Control store migrations.", no_args_is_help=True)
orgs_app = typer.Typer(help="Organizations.", no_args_is_help=True)
principals_app = typer.Typer(help="Principals and API keys.", no_args_is_help=True)
datasets_app = typer.Typer(help="Dataset catalogue.", no_args_is_help=True)
grants_app = typer.Typer(help="Grants (authorized operation).", no_args_is_help=True)
certs_app = typer.Typer(help="Registration certificates (一证一码).", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
jobs_app = typer.Typer(help="Jobs: submit SQL under a grant, review it.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys in SLUICE_HOME (local administration, like init).", no_args_is_help=True)
runs_app = typer.Typer(help="Runs of approved jobs and their results.", no_args_is_help=True)
for sub, name in ((db_app, "db"), (orgs_app, "orgs"), (principals_app, "principals"), (datasets_app, "datasets"),
                  (grants_app, "grants"), (certs_app, "certificates"), (audit_app, "audit"), (jobs_app, "jobs"),
                  (runs_app, "runs"), (keys_app, "keys")):
    app.add_typer(sub, name=name)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_state: dict[str, Any] = {}


@app.callback()
def _root(api_key: Annotated[str | None, typer.Option("--api-key", help="Act with this key (else SLUICE_API_KEY).")]
          = None,
          url: Annotated[str | None, typer.Option("--url", help="Talk to this server (else SLUICE_URL; "
                                                                 "unset runs the API in-process).")] = None) -> None:
    overrides: dict[str, Any] = {}
    if api_key:
        overrides["api_key"] = api_key
    if url:
        overrides["url"] = url
    _state["settings"] = load_settings(**overrides)


def settings() -> Settings:
    s: Settings = _state.get("settings") or load_settings()
    return s


def check_target(s: Settings) -> None:
    """Fail in one line when the server URL is malformed, or the in-process SLUICE_HOME is not initialized."""
    if s.url:
        if not s.url.startswith(("http://", "https://")):
            raise CliFailure("invalid_url", f"the server URL {s.url!r} has no http:// or https://",
                             f"use e.g. --url http://{s.url.lstrip('/')}", Exit.UNREACHABLE)
        return
    home = s.resolved_home
    if not home.is_dir():
        raise CliFailure("home_missing", f"SLUICE_HOME {home} does not exist",
                         "run `sluice init` to create it, set SLUICE_HOME to an initialized home, or SLUICE_URL "
                         "to a server", Exit.HOME)
    if not (home / "keys").is_dir() or (s.database_url is None and not (home / "sluice.db").is_file()):
        raise CliFailure("home_not_initialized", f"SLUICE_HOME {home} is not initialized",
                         "run `sluice init` (or set SLUICE_HOME to an initialized home)", Exit.HOME)


def client(public: bool = False) -> Client:
    """A client for the configured server or in-process API; `public` verbs need no API key."""
    s = settings()
    if not public and not s.api_key:
        raise CliFailure("missing_credentials", "this command needs an API key",
                         "pass --api-key or set SLUICE_API_KEY", Exit.REFUSED)
    check_target(s)
    return Client(s)


def _problem_line(e: ApiError) -> CliFailure:
    """One line for a problem+json answer: code, detail, the fields at fault, and where the key was checked."""
    detail = str(e.problem.get("detail", ""))
    hint = ""
    if e.status == 401 and not settings().url:
        hint = f"the key was checked against SLUICE_HOME {settings().resolved_home}"
    return CliFailure(e.code, detail, hint, Exit.REFUSED)


def call(fn: Any, as_json: bool, public: bool = False, **emit_kw: Any) -> Any:
    """Run an API call, print problems as `error code: detail` on stderr and exit 1."""
    try:
        with client(public) as c:
            data = fn(c)
    except ApiError as e:
        if as_json:
            sys.stdout.write(json.dumps({"error": e.problem}, ensure_ascii=False, indent=2) + "\n")
        else:
            print_failure(_problem_line(e))
            print_findings(e.problem)
        raise typer.Exit(Exit.REFUSED) from None
    if emit_kw.get("quiet"):
        return data
    emit(data, as_json, **{k: v for k, v in emit_kw.items() if k != "quiet"})
    return data


def print_findings(problem: dict[str, Any]) -> None:
    """A refused query's findings, one per line as `line:col code: message`, and the job id kept for review."""
    from rich.markup import escape

    context = problem.get("context") or {}
    findings = context.get("findings") or []
    for f in findings:
        where = f"{f['line']}:{f.get('column') or 1} " if f.get("line") is not None else ""
        err.print(escape(f"  {where}{f.get('code', '')}: {f.get('message', '')}"), soft_wrap=True)
    if context.get("job_id"):
        err.print(escape(f"  job {context['job_id']} (kept, refused)"), soft_wrap=True)


# --- service ---------------------------------------------------------------------------------------------

@app.command()
def init(as_json: JsonOpt = False) -> None:
    """Create SLUICE_HOME, migrate, make keys, create the platform agency and print the bootstrap admin key."""
    from sandbox.bootstrap import init_home

    result = init_home(settings(), SystemClock())
    data = {"api_key": result.api_key, "home": result.home, "database_url": result.database_url,
            "org_id": result.org_id, "principal_id": result.principal_id, "key_ids": result.key_ids,
            "created": result.created}
    if as_json:
        emit(data, True)
    elif result.created:
        emit(data, False, title="Sluice initialized — store the api_key now, it is shown once")
    else:
        emit(data, False, title="Already initialized (no new key issued)")


@app.command()
def serve(host: Annotated[str | None, typer.Option(help="address to bind (else SLUICE_HOST)")] = None,
          port: Annotated[int | None, typer.Option(help="port to bind (else SLUICE_PORT)")] = None,
          processes: Annotated[int | None, typer.Option("--processes", "--http-workers", min=1,
                                                        help="API processes on one store (else SLUICE_PROCESSES); "
                                                             "above 1 needs PostgreSQL")] = None) -> None:
    """Run the HTTP API with uvicorn; runs a previous crash interrupted are marked failed first."""
    import uvicorn

    from sandbox.app import create_app, settle_heap
    from sandbox.billing.recovery import recover_interrupted_runs
    from sandbox.logs import configure_json_logging

    s = settings()
    count = processes or s.processes
    single = _sqlite_single_server(s, count)  # held until this command exits
    configure_json_logging()  # one JSON line per record, with the trace id (uvicorn's access log is replaced)
    recovered = recover_interrupted_runs(s, SystemClock())
    if recovered:
        err.print(f"marked {len(recovered)} interrupted run(s) failed: {', '.join(recovered)}")
    try:
        if count <= 1:
            app = create_app(s)
            settle_heap()
            uvicorn.run(app, host=host or s.host, port=port or s.port, log_config=None, access_log=False)
            return
        with _multiprocess_metrics_dir(s):  # the worker processes inherit it; this process gets it back unchanged
            uvicorn.run("sandbox.app:app_from_environment", factory=True, workers=count, host=host or s.host,
                        port=port or s.port, log_config=None, access_log=False)
    finally:
        if single is not None:
            single.close()


def _sqlite_single_server(s: Settings, count: int) -> Any:
    """SQLite serves one API process: refuse more, and refuse a second `sluice serve` on the same store (a lock
    file in SLUICE_HOME held while serving). Returns the held lock file, or None on PostgreSQL."""
    import fcntl

    if not s.resolved_database_url.startswith("sqlite"):
        return None
    if count > 1:
        err.print(f"[red]error[/red] processes_need_postgresql: --processes {count} needs PostgreSQL "
                  "(SLUICE_DATABASE_URL=postgresql+psycopg://...); the SQLite store serves one process")
        raise typer.Exit(2)
    s.resolved_home.mkdir(parents=True, exist_ok=True)
    handle = open(s.resolved_home / "serve.lock", "a+b")  # noqa: SIM115 - held while serving
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        err.print(f"[red]error[/red] store_in_use: another `sluice serve` already serves the SQLite store in "
                  f"{s.resolved_home}; SQLite supports one server process (use PostgreSQL for several)")
        raise typer.Exit(2) from None
    return handle


@contextmanager
def _multiprocess_metrics_dir(s: Settings) -> Iterator[None]:
    """Point prometheus_client's multi-process mode at PROMETHEUS_MULTIPROC_DIR (default HOME/metrics, emptied)
    while the worker processes are started and served, then restore the variable: an in-process caller (a test,
    an embedding program) must not find its later apps switched to multi-process metrics over this folder."""
    import os

    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    folder = Path(given) if given else s.resolved_home / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    if not given:  # samples of a previous server would be summed in; our own folder starts empty
        for old in folder.glob("*.db"):
            old.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    try:
        yield
    finally:
        if given is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = given


@db_app.command("upgrade")
def db_upgrade(as_json: JsonOpt = False) -> None:
    """Apply migrations (safe to run twice)."""
    from sandbox.store.db import current_revision, make_engine, upgrade

    s = settings()
    s.resolved_home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(s.resolved_database_url)
    upgrade(engine)
    emit({"revision": current_revision(engine)}, as_json)


@app.command()
def whoami(as_json: JsonOpt = False) -> None:
    """Who the API key belongs to."""
    call(lambda c: c.get("/v1/me"), as_json)


@app.command()
def demo(home: Annotated[Path | None, typer.Option(help="Fresh state folder (default: SLUICE_HOME)")] = None,
         as_json: JsonOpt = False) -> None:
    """Run the whole flow on synthetic city data in a fresh SLUICE_HOME."""
    from sandbox.demo.run import DemoError, run_demo

    try:
        run_demo(home or settings().home, as_json=as_json)
    except (DemoError, ApiError) as exc:
        err.print(f"[red]demo failed[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None


@keys_app.command("rotate")
def keys_rotate(context: Annotated[SigningContext, typer.Option(help="the signing context")],
                as_json: JsonOpt = False) -> None:
    """Make a new active signing key for a context; old public keys keep verifying (docs/certificates.md)."""
    from sandbox.bootstrap import rotate_signing_key

    emit(rotate_signing_key(settings(), SystemClock(), context), as_json)


@keys_app.command("list")
def keys_list(as_json: JsonOpt = False) -> None:
    """Key ids per signing context, and which one is active."""
    from disclosure.signing import KeyRing
    from sandbox.bootstrap import SIGNING_CONTEXTS

    ring = KeyRing(settings().keys_dir)
    emit([{"context": c, "active": ring.active_kid(c), "kids": sorted(ring.public_keys(c))} for c in SIGNING_CONTEXTS],
         as_json)


@app.command()
def domains(as_json: JsonOpt = False) -> None:
    """The data domains datasets are filed under (public: no API key needed)."""
    call(lambda c: c.get("/v1/domains"), as_json, public=True)


# --- organizations and principals ------------------------------------------------------------------------

@orgs_app.command("create")
def orgs_create(name: Annotated[str, typer.Argument(help="the organization's name")],
                kind: Annotated[OrgKindOpt, typer.Option(help="what the organization is")],
                as_json: JsonOpt = False) -> None:
    """Create an organization."""
    call(lambda c: c.post("/v1/orgs", {"name": name, "kind": kind}), as_json)


@orgs_app.command("list")
def orgs_list(as_json: JsonOpt = False) -> None:
    """List organizations."""
    call(lambda c: c.get("/v1/orgs"), as_json, columns=["id", "name", "kind"])


@orgs_app.command("show")
def orgs_show(org_id: str, as_json: JsonOpt = False) -> None:
    """Show an organization."""
    call(lambda c: c.get(f"/v1/orgs/{org_id}"), as_json)


@principals_app.command("create")
def principals_create(org: Annotated[str, typer.Option(help="organization id")],
                      name: Annotated[str, typer.Option(help="a name people will recognise")],
                      role: Annotated[list[str], typer.Option(help="repeatable")],
                      key_ttl_days: Annotated[int | None,
                      typer.Option(help="days until the API key expires (default: SLUICE_KEY_TTL_DAYS)")] = None,
                      as_json: JsonOpt = False) -> None:
    """Create a principal; prints its API key once."""
    call(lambda c: c.post("/v1/principals", {"org_id": org, "name": name, "roles": role,
                                             "key_ttl_days": key_ttl_days}), as_json)


@principals_app.command("list")
def principals_list(as_json: JsonOpt = False) -> None:
    """List principals."""
    call(lambda c: c.get("/v1/principals"), as_json, columns=["id", "org_id", "name", "roles"])


@principals_app.command("keys")
def principals_keys(principal_id: str, as_json: JsonOpt = False) -> None:
    """List a principal's keys."""
    call(lambda c: c.get(f"/v1/principals/{principal_id}/keys"), as_json)


@principals_app.command("new-key")
def principals_new_key(principal_id: str, ttl_days: Annotated[int | None,
                       typer.Option(help="days until the key expires (default: SLUICE_KEY_TTL_DAYS)")] = None,
                       as_json: JsonOpt = False) -> None:
    """Issue another key for a principal; printed once."""
    call(lambda c: c.post(f"/v1/principals/{principal_id}/keys", {"ttl_days": ttl_days}), as_json)


@principals_app.command("revoke-key")
def principals_revoke_key(principal_id: str, key_id: str, reason: Annotated[str,
                          typer.Option(help="why (recorded and audited)")] = "revoked",
                          as_json: JsonOpt = False) -> None:
    """Revoke a key."""
    call(lambda c: c.post(f"/v1/principals/{principal_id}/keys/{key_id}/revoke", {"reason": reason}), as_json)


# --- datasets --------------------------------------------------------------------------------------------

def _load_meta(meta: Path | None, extra: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = read_json(meta, "metadata file") if meta else {}
    if not isinstance(data, dict):
        raise CliFailure("invalid_metadata", f"metadata file {meta} must hold a JSON object", "see docs/catalogue.md",
                         Exit.INPUT_FILE)
    data.update({k: v for k, v in extra.items() if v is not None})
    return data


def _upload(path: str, metadata: dict[str, Any], file: Path | None, as_json: bool) -> None:
    if file is not None and not file.is_file():
        read_bytes(file, "data file")  # fails in one line: missing, a folder, or unreadable
    def run(c: Client) -> Any:
        if file is None or as_json or not err.is_terminal:  # a progress bar only on a terminal
            return c.upload(path, metadata, file)
        total = file.stat().st_size
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), console=err, transient=True) as bar:
            task = bar.add_task(f"importing {file.name}", total=total)
            return c.upload(path, metadata, file, progress=lambda n: bar.advance(task, n))

    call(run, as_json)


@datasets_app.command("register")
def datasets_register(
    file: Annotated[Path | None, typer.Argument(help="CSV, Parquet, JSON-lines or Excel (.xlsx) file to upload")]
    = None,
    meta: Annotated[Path | None, typer.Option(help="metadata JSON (see docs/catalogue.md)")] = None,
    dataset_id: Annotated[str | None, typer.Option("--id", help="dataset id: lower-case letters, digits and _")] = None,
    server_path: Annotated[str | None, typer.Option("--server-path", help="file under SLUICE_IMPORT_ROOT")] = None,
    encoding: Annotated[str | None, typer.Option(help="utf-8 or gbk")] = None,
    delimiter: Annotated[str | None, typer.Option(help="CSV field separator, e.g. ';' (default ,)")] = None,
    sheet: Annotated[str | None, typer.Option(help="xlsx: the sheet to register (default: the first)")] = None,
    provider: Annotated[str | None, typer.Option(help="provider organization id (agency admin with "
                                                      "--certify-now)")] = None,
    certify_now: Annotated[bool, typer.Option("--certify-now", help="demo/test shortcut, agency admin only: "
                                                                    "certify at once (audited)")] = False,
    as_json: JsonOpt = False,
) -> None:
    """File a registration application from a file (uploaded) or a server-side path; it starts as `applied`."""
    metadata = _load_meta(meta, {"id": dataset_id, "path": server_path, "encoding": encoding, "delimiter": delimiter,
                                 "sheet": sheet, "provider_org_id": provider, "certify_now": certify_now or None})
    _upload("/v1/datasets", metadata, file, as_json)


@datasets_app.command("version")
def datasets_version(
    dataset_id: str,
    file: Annotated[Path | None, typer.Argument(help="new data; omit for a metadata-only version")] = None,
    meta: Annotated[Path | None, typer.Option(help="metadata JSON")] = None,
    server_path: Annotated[str | None, typer.Option("--server-path", help="file under SLUICE_IMPORT_ROOT")] = None,
    certify_now: Annotated[bool, typer.Option("--certify-now", help="demo/test shortcut, agency admin only")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """File an application for a new version of a dataset."""
    metadata = _load_meta(meta, {"path": server_path, "certify_now": certify_now or None})
    _upload(f"/v1/datasets/{dataset_id}/versions", metadata, file, as_json)


@datasets_app.command("list")
def datasets_list(as_json: JsonOpt = False) -> None:
    """List datasets (latest versions)."""
    call(lambda c: c.get("/v1/datasets"), as_json,
         columns=["id", "version:v", "title", "certificate_code:certificate", "registration_state:state"])


@datasets_app.command("show")
def datasets_show(dataset_id: str, as_json: JsonOpt = False) -> None:
    """Show a dataset with its columns and versions."""
    call(lambda c: c.get(f"/v1/datasets/{dataset_id}"), as_json)


@datasets_app.command("usage")
def datasets_usage(dataset_id: Annotated[str, typer.Argument(help="a dataset of your provider organization")],
                   as_json: JsonOpt = False) -> None:
    """Who uses a dataset: the jobs and runs that read it (metadata only; for its provider's data stewards)."""
    data = call(lambda c: c.get(f"/v1/datasets/{dataset_id}/usage"), as_json, quiet=True)
    if as_json:
        emit(data, True)
        return
    emit([{**j, "runs": len(j["runs"])} for j in data["jobs"]], False,
         columns=["job_id:job", "operator", "title", "state", "runs", "created_at:created"])


# --- grants ----------------------------------------------------------------------------------------------

@grants_app.command("create")
def grants_create(spec: Annotated[Path, typer.Argument(help="grant JSON (see docs/grants.md)")],
                  as_json: JsonOpt = False) -> None:
    """Create a grant from a JSON file."""
    body = read_json(spec, "grant file")
    call(lambda c: c.post("/v1/grants", body), as_json)


@grants_app.command("list")
def grants_list(as_json: JsonOpt = False) -> None:
    """List grants visible to the caller."""
    call(lambda c: c.get("/v1/grants"), as_json,
         columns=["id", "operator_org_id:operator", "effective_status:status", "valid_until"])


@grants_app.command("show")
def grants_show(grant_id: str, as_json: JsonOpt = False) -> None:
    """Show a grant and its history."""
    call(lambda c: c.get(f"/v1/grants/{grant_id}"), as_json)


def _grant_action(action: str, grant_id: str, reason: str, as_json: bool) -> None:
    call(lambda c: c.post(f"/v1/grants/{grant_id}/{action}", {"reason": reason}), as_json)


@grants_app.command("suspend")
def grants_suspend(grant_id: str, reason: Annotated[str, typer.Option(help="why (recorded and audited)")],
                   as_json: JsonOpt = False) -> None:
    """Suspend a grant."""
    _grant_action("suspend", grant_id, reason, as_json)


@grants_app.command("revoke")
def grants_revoke(grant_id: str, reason: Annotated[str, typer.Option(help="why (recorded and audited)")],
                  as_json: JsonOpt = False) -> None:
    """Revoke a grant."""
    _grant_action("revoke", grant_id, reason, as_json)


@grants_app.command("reinstate")
def grants_reinstate(grant_id: str, reason: Annotated[str, typer.Option(help="why (recorded and audited)")],
                     as_json: JsonOpt = False) -> None:
    """Reinstate a suspended grant."""
    _grant_action("reinstate", grant_id, reason, as_json)


# --- certificates ----------------------------------------------------------------------------------------

@certs_app.command("show")
def certs_show(code: str, as_json: JsonOpt = False) -> None:
    """Verify a certificate online and show it."""
    call(lambda c: c.get(f"/v1/certificates/{code}"), as_json, public=True)


@certs_app.command("fetch")
def certs_fetch(code: str, output: Annotated[Path, typer.Option("-o", "--output", help="file to write; - for stdout")],
                as_json: JsonOpt = False
                ) -> None:
    """Download the signed certificate file."""
    data = call(lambda c: c.get(f"/v1/certificates/{code}/document", raw=True), as_json, public=True, quiet=True)
    if write_output(output, data) != "-":
        emit({"code": code, "file": str(output)}, as_json)


@certs_app.command("qr")
def certs_qr(code: str, output: Annotated[Path, typer.Option("-o", "--output", help="file to write; - for stdout")],
             as_json: JsonOpt = False) -> None:
    """Save the certificate's QR code PNG."""
    data = call(lambda c: c.get(f"/v1/certificates/{code}/qr.png"), as_json, public=True, quiet=True)
    if write_output(output, data) != "-":
        emit({"code": code, "file": str(output)}, as_json)


@certs_app.command("public-key")
def certs_public_key(output: Annotated[Path, typer.Option("-o", "--output", help="file to write; - for stdout")],
                     kid: Annotated[str | None, typer.Option(help="key id (default: the newest)")] = None,
                     as_json: JsonOpt = False) -> None:
    """Save the certificate signing public key (PEM) for offline verification."""
    keys = call(lambda c: c.get("/v1/keys"), as_json, public=True, quiet=True)["certificate"]
    chosen = kid or sorted(keys)[-1]
    if chosen not in keys:
        raise CliFailure("key_not_found", f"no certificate key {chosen}", f"known: {', '.join(sorted(keys))}")
    if write_output(output, keys[chosen]) != "-":
        emit({"kid": chosen, "file": str(output)}, as_json)


@certs_app.command("verify")
def certs_verify(file: Path, public_key: Annotated[Path, typer.Option("--public-key", help="PEM file")],
                 as_json: JsonOpt = False) -> None:
    """Verify a certificate file offline; exit 1 if it does not verify."""
    from sandbox.catalogue.certificates import kid_for, load_public_key_pem, verify_certificate_document
    from sandbox.errors import InvalidInput

    try:
        key = load_public_key_pem(read_bytes(public_key, "public key file"))
    except InvalidInput:
        raise CliFailure("invalid_public_key", f"public key file {public_key} is not an Ed25519 public key in "
                         "PEM format", "save one with `sluice certificates public-key -o key.pem`",
                         Exit.INPUT_FILE) from None
    check = verify_certificate_document(read_bytes(file, "certificate file"), {kid_for(key): key})
    emit({"valid": check.valid, "reason": check.reason, "code": check.code, "kid": check.kid}, as_json)
    if not check.valid:
        raise typer.Exit(1)


# --- jobs and runs ---------------------------------------------------------------------------------------

def _params(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise CliFailure("invalid_parameter", f"expected NAME=VALUE, got {pair!r}", "", Exit.USAGE)
        out[name] = value
    return out


@jobs_app.command("submit")
def jobs_submit(grant: Annotated[str, typer.Option(help="grant id")],
                sql_file: Annotated[Path, typer.Argument(help="file with one SQL query")],
                title: Annotated[str, typer.Option(help="a short title")], purpose: Annotated[str,
                typer.Option(help="what the result is for (recorded and audited)")],
                param: Annotated[list[str] | None, typer.Option(help="declared parameter NAME=TYPE, repeatable")]
                = None,
                replaces: Annotated[str | None, typer.Option(help="the job this one corrects (same grant)")] = None,
                as_json: JsonOpt = False) -> None:
    """Submit SQL under a grant; refused SQL prints its findings and exits 1."""
    body = {"grant_id": grant, "title": title, "purpose": purpose, "sql": read_text(sql_file, "SQL file"),
            "parameters": _params(param or []), **({"replaces": replaces} if replaces else {})}
    call(lambda c: c.post("/v1/jobs", body), as_json)


@jobs_app.command("check")
def jobs_check(sql_file: Annotated[Path, typer.Argument(help="file with one SQL query")],
               grant: Annotated[str, typer.Option(help="grant id")],
               param: Annotated[list[str] | None, typer.Option(help="declared parameter NAME=TYPE, repeatable")]
               = None, as_json: JsonOpt = False) -> None:
    """Check SQL before submitting: findings and the SQL that would run; nothing is stored. Exit 1 if refused."""
    body = {"grant_id": grant, "sql": read_text(sql_file, "SQL file"), "parameters": _params(param or [])}
    result = call(lambda c: c.post("/v1/jobs/check", body), as_json, quiet=True)
    if as_json:
        emit(result, True)
    else:
        emit({k: result[k] for k in ("verdict", "would_be", "reviews_required", "sql")}, False)
        print_findings({"context": {"findings": result["findings"]}})
    if result["verdict"] != "accepted":
        raise typer.Exit(Exit.REFUSED)


@jobs_app.command("list")
def jobs_list(state: Annotated[JobStateOpt | None, typer.Option(help="only jobs in this state")] = None,
              as_json: JsonOpt = False) -> None:
    """List jobs visible to the caller."""
    call(lambda c: c.get("/v1/jobs", params={"state": state} if state else {}), as_json,
         columns=["id", "title", "state", "created_at:created"])


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: JsonOpt = False) -> None:
    """Show a job with findings and reviews."""
    call(lambda c: c.get(f"/v1/jobs/{job_id}"), as_json)


@jobs_app.command("review")
def jobs_review(job_id: Annotated[str, typer.Argument(help="the job to review")],
                decision: Annotated[ReviewDecision, typer.Option(help="the decision")],
                comment: Annotated[str, typer.Option(help="why (recorded and audited)")],
                as_json: JsonOpt = False) -> None:
    """Approve or reject a pending job (agency reviewers)."""
    call(lambda c: c.post(f"/v1/jobs/{job_id}/review", {"decision": decision, "comment": comment}), as_json)


@runs_app.command("start")
def runs_start(job_id: str, param: Annotated[list[str] | None, typer.Option(help="NAME=VALUE, repeatable")] = None,
               idempotency_key: Annotated[str | None,
               typer.Option(help="retrying with the same key returns the same run")] = None,
               output: Annotated[Path | None, typer.Option(
                   "-o", "--output", help="also download the result, in the same request, to this file (- for "
                                          "stdout); the download is audited and metered like `runs download`")] = None,
               format: Annotated[ResultFormat, typer.Option(help="the result file's format, with --output")
                                 ] = ResultFormat.CSV,
               as_json: JsonOpt = False) -> None:
    """Run an approved job (with --output, and save its result)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    body: dict[str, Any] = {"params": _params(param or [])}
    if output is None:
        call(lambda c: c.post(f"/v1/jobs/{job_id}/runs", body, headers=headers), as_json)
        return
    body["result"] = format.value
    data, got = call(lambda c: c.fetch(f"/v1/jobs/{job_id}/runs", method="POST", json=body, headers=headers),
                     as_json, quiet=True)
    if "x-run-id" not in got:  # the run did not succeed: the answer is its record
        record = json.loads(data)
        if as_json:
            emit(record, as_json)
        raise CliFailure("run_not_succeeded", f"run {record['id']} ended {record['status']}"
                         f"{' (' + record['error_code'] + ')' if record.get('error_code') else ''}; no result was "
                         "written", f"see `sluice runs show {record['id']}`", Exit.REFUSED)
    if write_output(output, data) != "-":
        emit({"run": got["x-run-id"], "status": got.get("x-run-status"), "result_rows": got.get("x-result-rows"),
              "suppressed_cells": got.get("x-suppressed-cells"), "format": format.value, "file": str(output),
              "bytes": len(data)}, as_json)


@runs_app.command("list")
def runs_list(job: Annotated[str | None, typer.Option(help="only runs of this job")] = None,
              as_json: JsonOpt = False) -> None:
    """List runs visible to the caller."""
    call(lambda c: c.get("/v1/runs", params={"job_id": job} if job else {}), as_json,
         columns=["id", "status", "result_rows:rows", "suppressed_cells:suppressed", "created_at:created"])


@runs_app.command("show")
def runs_show(run_id: str, as_json: JsonOpt = False) -> None:
    """Show a run's record."""
    call(lambda c: c.get(f"/v1/runs/{run_id}"), as_json)


@runs_app.command("download")
def runs_download(run_id: Annotated[str, typer.Argument(help="the run whose result to download")],
                  output: Annotated[Path, typer.Option("-o", "--output", help="file to write; - for stdout")],
                  format: Annotated[ResultFormat, typer.Option(help="the file format")] = ResultFormat.CSV,
                  excel: Annotated[bool, typer.Option("--excel", help="CSV for Excel: UTF-8 with BOM and CRLF, "
                                                                      "so Chinese text opens correctly")] = False,
                  as_json: JsonOpt = False) -> None:
    """Download a run's result (each download is audited)."""
    if excel and format != ResultFormat.CSV:
        raise CliFailure("invalid_option", f"--excel applies to CSV, not {format.value}", "drop --excel or use "
                         "--format csv", Exit.USAGE)
    params = {"format": format.value, **({"bom": "1"} if excel else {})}
    data = call(lambda c: c.get(f"/v1/runs/{run_id}/result", raw=True, params=params), as_json, quiet=True)
    if write_output(output, data) != "-":
        emit({"run": run_id, "format": format.value, "file": str(output), "bytes": len(data)}, as_json)


from sandbox.cli import audit as audit  # noqa: E402  (registers the audit verbs on audit_app)
from sandbox.cli import quality as _quality  # noqa: E402  (sub-apps use `call` defined above)
from sandbox.cli import registrations as _registrations  # noqa: E402

app.add_typer(_registrations.app, name="registrations")
app.add_typer(_quality.app, name="quality")
from sandbox.cli import billing as _billing  # noqa: E402  (its verbs use `call` and `JsonOpt` from above)

for _sub, _name in _billing.APPS:
    app.add_typer(_sub, name=_name)
from sandbox.cli import disclose as _disclose  # noqa: E402  (its verbs use `call` and `client` from above)

app.add_typer(_disclose.disclose_app, name="disclose")
from sandbox.cli import products as _products  # noqa: E402  (its verbs use `call` and `JsonOpt` from above)

for _sub, _name in _products.APPS:
    app.add_typer(_sub, name=_name)


def main() -> None:
    """Entry point of the `sluice` console script."""
    app()
