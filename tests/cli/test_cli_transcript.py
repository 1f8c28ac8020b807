"""A newcomer's first session, replayed line by line: errors are one line with an exit code, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from transcript import replay
from typer.testing import CliRunner

from sandbox.cli import app

TRANSCRIPT = Path(__file__).with_name("first_use.transcript")


@pytest.mark.slow
def test_first_use_transcript_replays_line_by_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SLUICE_HOME", str(home))
    for name in ("SLUICE_DATABASE_URL", "SLUICE_URL", "SLUICE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(args: list[str]) -> tuple[int, str]:
        result = runner.invoke(app, args, prog_name="sluice")
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    problems = replay(TRANSCRIPT.read_text("utf-8"), tmp_path, run, {"home": str(home)})
    assert not problems, "\n".join(problems)
