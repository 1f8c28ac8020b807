"""First-use failures of the real `sluice` script: one line saying what, where and what to do, and an exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.cli.errors import CliFailure, Exit, print_failure
from sandbox.cli.options import JobStateOpt
from sandbox.cli.output import emit
from sandbox.jobs import JobState

SLUICE = str(Path(sys.executable).with_name("sluice"))


def _sluice(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    return subprocess.run([SLUICE, *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.slow
def test_the_console_script_answers_first_use_mistakes_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "grant.json").write_text('{"scope": "whole",\n}\n', "utf-8")
    cases = [
        # no SLUICE_HOME outside the repo: the default ./.sluice does not exist
        (("domains",), {}, Exit.HOME,
         f"error home_missing: SLUICE_HOME {tmp_path / '.sluice'} does not exist; run `sluice init` to create it, "
         "set SLUICE_HOME to an initialized home, or SLUICE_URL to a server"),
        (("grants", "create", "grant.json", "--api-key", "sk_x"), {}, Exit.INPUT_FILE,
         "error invalid_json: grant file grant.json is not valid JSON: Expecting property name enclosed in double "
         "quotes at line 2 column 1; remove the trailing comma"),
        (("whoami",), {"SLUICE_URL": "http://127.0.0.1:9", "SLUICE_API_KEY": "sk_x"}, Exit.UNREACHABLE,
         "error server_unreachable: cannot reach the Sluice server at http://127.0.0.1:9 (ConnectError); check "
         "--url / SLUICE_URL, or start the server with `sluice serve`"),
    ]
    for args, env, code, line in cases:
        done = _sluice(*args, cwd=tmp_path, **env)
        assert (done.returncode, done.stderr.strip().splitlines(), done.stdout) == (code, [line], ""), args


def test_a_home_without_sluice_init_says_to_run_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SLUICE_HOME", str(home))
    monkeypatch.delenv("SLUICE_URL", raising=False)
    result = CliRunner().invoke(app, ["whoami", "--api-key", "sk_x"])
    assert result.exit_code == Exit.HOME
    assert result.output == (f"error home_not_initialized: SLUICE_HOME {home} is not initialized; run `sluice init` "
                             "(or set SLUICE_HOME to an initialized home)\n")


def test_an_unexpected_error_is_one_line_and_exit_70(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_HOME", str(tmp_path))

    def boom(*_: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("sandbox.bootstrap.init_home", boom)
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == Exit.INTERNAL
    assert result.output.splitlines() == ["error internal_error: unexpected RuntimeError: disk on fire; this is a bug "
                                          "in sluice; please report the command you ran"]


def test_a_missing_key_file_and_a_folder_are_named(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["certificates", "verify", str(tmp_path), "--public-key", str(tmp_path / "k.pem")])
    assert result.exit_code == Exit.INPUT_FILE
    key = tmp_path / "k.pem"
    assert result.output == f"error file_not_found: public key file {key} does not exist; check the path\n"


def test_rich_markup_in_messages_and_tables_is_printed_literally(capsys: pytest.CaptureFixture[str]) -> None:
    pattern = "^[a-z][a-z0-9_]{0,62}$"
    print_failure(CliFailure("invalid_dataset_id", f"id must match {pattern}", "[bold]rename[/bold] it"))
    emit([{"id": "x", "rule": pattern}], False)
    emit({"rule": "[red]not red[/red]"}, False)
    captured = capsys.readouterr()
    assert f"id must match {pattern}; [bold]rename[/bold] it" in captured.err
    assert pattern in captured.out and "[red]not red[/red]" in captured.out


def test_ids_in_a_table_are_never_cut_at_80_columns(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": f"grt_4825f5{i:010d}", "operator_org_id": f"org_{i:016d}", "title": "a long title " * 4}
            for i in range(3)]
    emit(rows, False, columns=["id", "operator_org_id:operator", "title"])
    out = capsys.readouterr().out
    assert all(len(line) <= 80 for line in out.splitlines())
    assert all(r["id"] in out and r["operator_org_id"] in out for r in rows)


def test_every_option_has_a_help_text() -> None:
    missing = []

    def walk(cmd: typer.core.TyperGroup | typer.core.TyperCommand, path: str) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")
        missing.extend(f"{path} --{p.name}" for p in cmd.params
                       if type(p).__name__ == "TyperOption" and not getattr(p, "help", None))

    walk(typer.main.get_command(app), "sluice")  # type: ignore[arg-type]
    assert missing == []


def test_the_cli_job_states_are_the_job_states() -> None:
    assert [s.value for s in JobStateOpt] == [s.value for s in JobState]


def test_output_dash_writes_the_download_to_stdout(tmp_path: Path) -> None:
    from sandbox.cli.output import write_output

    target = tmp_path / "-"
    runner = CliRunner()


    with runner.isolation() as (out, _err, *_):
        assert write_output(Path("-"), "a,b\r\n") == "-"
        assert out.getvalue() == b"a,b\r\n"
    assert not target.exists()


def test_flags_are_shown_as_flags_in_help() -> None:
    runner = CliRunner()
    for args in (["--help"], ["audit", "list", "--help"], ["runs", "download", "--help"]):
        result = runner.invoke(app, args, prog_name="sluice")
        assert result.exit_code == 0 and "<bool>" not in result.output, args
    listed = runner.invoke(app, ["jobs", "list", "--help"], prog_name="sluice").output
    assert "pending_review" in listed and "stopped" in listed  # the allowed values are listed
