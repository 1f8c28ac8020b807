"""How the CLI fails: one line saying what was wrong, where, and what to do, and a documented exit code.

No Python traceback reaches a CLI user (docs/cli.md lists the exit codes). Every failure is a `CliFailure`, or is
turned into one here by `failure_for`, and `SluiceGroup` prints it as one line on stderr.
"""

from __future__ import annotations

import json
from enum import IntEnum
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from typer import _click


class Exit(IntEnum):
    """The `sluice` exit codes (docs/cli.md)."""

    OK = 0
    REFUSED = 1  # the API answered with a problem (refusal, invalid input, not found): its code is printed
    USAGE = 2  # the command line itself is wrong (unknown option, value not allowed): click's own code
    INPUT_FILE = 3  # a file given on the command line is missing, unreadable or not valid JSON / PEM
    UNREACHABLE = 4  # the server at --url / SLUICE_URL cannot be reached, or the URL is malformed
    HOME = 5  # SLUICE_HOME is missing or not initialized, or its control store cannot be opened
    INTERNAL = 70  # a bug: an unexpected error (reported in one line, never a traceback)


class CliFailure(Exception):
    """A failure the CLI reports in one line: `error <code>: <what and where>; <what to do>`."""

    def __init__(self, code: str, message: str, hint: str = "", exit_code: Exit = Exit.REFUSED) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def line(self) -> str:
        """The one line printed on stderr (plain text, no markup)."""
        text = f"error {self.code}: {self.message}"
        return f"{text}; {self.hint}" if self.hint else text


def read_bytes(path: Path, what: str = "file") -> bytes:
    """A file's bytes, or a one-line failure naming the file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CliFailure("file_not_found", f"{what} {path} does not exist", "check the path",
                         Exit.INPUT_FILE) from None
    except IsADirectoryError:
        raise CliFailure("file_unreadable", f"{what} {path} is a folder, not a file", "give a file",
                         Exit.INPUT_FILE) from None
    except OSError as exc:
        raise CliFailure("file_unreadable", f"cannot read {what} {path}: {exc.strerror}",
                         "check its permissions", Exit.INPUT_FILE) from None


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 text file, or a one-line failure naming the file."""
    try:
        return read_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliFailure("file_not_utf8", f"{what} {path} is not UTF-8 (byte {exc.start})",
                         "save it as UTF-8", Exit.INPUT_FILE) from None


def read_json(path: Path, what: str = "JSON file") -> Any:
    """A JSON file, or a one-line failure naming the file, line and column of the mistake."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "remove the trailing comma" if exc.msg.startswith("Illegal trailing comma") or (
            exc.msg.startswith("Expecting property name") and text[:exc.pos].rstrip().endswith(",")) or (
            exc.msg.startswith("Expecting value") and text[:exc.pos].rstrip().endswith(",")) else "fix the JSON"
        raise CliFailure("invalid_json", f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}", hint, Exit.INPUT_FILE) from None


def failure_for(exc: BaseException, where: str) -> CliFailure:
    """A `CliFailure` for an exception no verb handled: connection, store and unexpected errors.

    `where` names the server URL or the SLUICE_HOME the command used."""
    import httpx
    import pydantic
    import sqlalchemy.exc

    from sandbox.errors import SluiceError

    if isinstance(exc, CliFailure):
        return exc
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return CliFailure("invalid_url", f"the server URL {where} is not valid ({exc})",
                          "give a full URL such as http://127.0.0.1:8000 with --url or SLUICE_URL", Exit.UNREACHABLE)
    if isinstance(exc, httpx.TransportError):
        return CliFailure("server_unreachable", f"cannot reach the Sluice server at {where} ({type(exc).__name__})",
                          "check --url / SLUICE_URL, or start the server with `sluice serve`", Exit.UNREACHABLE)
    if isinstance(exc, sqlalchemy.exc.SQLAlchemyError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CliFailure("store_unavailable", f"cannot use the control store of {where}: {first}",
                          "run `sluice init`, or check SLUICE_HOME and SLUICE_DATABASE_URL", Exit.HOME)
    if isinstance(exc, pydantic.ValidationError):
        from sandbox.app.schemas import describe_errors

        return CliFailure("invalid_setting", f"a SLUICE_* setting is invalid: {describe_errors(list(exc.errors()))}",
                          "fix the variable (docs/configuration.md)", Exit.USAGE)
    if isinstance(exc, SluiceError):
        return CliFailure(exc.code, exc.message, "", Exit.REFUSED)
    return CliFailure("internal_error", f"unexpected {type(exc).__name__}: {exc}",
                      "this is a bug in sluice; please report the command you ran", Exit.INTERNAL)


def print_failure(failure: CliFailure) -> None:
    """Print a failure as one line on stderr (its text is escaped, never read as Rich markup)."""
    from sandbox.cli.output import err

    err.print(f"[red]error[/red] {escape(failure.line()[len('error '):])}", soft_wrap=True)


class SluiceGroup(typer.core.TyperGroup):
    """The root command: accepts --api-key/--url anywhere, and turns every failure into one line + exit code."""

    GLOBAL_OPTIONS = ("--api-key", "--url")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _flags_as_flags(self)

    def get_params(self, ctx: _click.Context) -> list[Any]:
        """The root's parameters, flags shown as flags (completion options are added after construction)."""
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_bool_flag", False) and param.metavar is None:
                param.metavar = ""
        return params

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        """Move the global options to the front, so that `sluice jobs list --api-key K` works too."""
        front: list[str] = []
        rest: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                rest += args[i:]
                break
            name = arg.split("=", 1)[0]
            if name in self.GLOBAL_OPTIONS and "=" in arg:
                front.append(arg)
            elif arg in self.GLOBAL_OPTIONS and i + 1 < len(args):
                front += [arg, args[i + 1]]
                i += 1
            else:
                rest.append(arg)
            i += 1
        return super().parse_args(ctx, front + rest)

    def invoke(self, ctx: _click.Context) -> Any:
        """Run the verb; any failure becomes one line on stderr and its exit code."""
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise
        except Exception as exc:  # the one place that keeps tracebacks from users
            failure = failure_for(exc, _where())
            print_failure(failure)
            raise typer.Exit(failure.exit_code) from None


def _flags_as_flags(command: Any) -> None:
    """Show boolean flags as flags in --help (`--json`), not as `--json <bool>`."""
    for sub in getattr(command, "commands", {}).values():
        _flags_as_flags(sub)
    for param in command.params:
        if getattr(param, "is_bool_flag", False) and param.metavar is None:
            param.metavar = ""
    original = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = original(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = help_option


def _where() -> str:
    """The server URL or SLUICE_HOME the current command used (for failure messages)."""
    from sandbox.cli import settings

    try:
        s = settings()
    except Exception:  # settings themselves may be what failed
        return "the configured server"
    if s.url:
        return s.url
    return f"SLUICE_HOME {s.resolved_home}"
