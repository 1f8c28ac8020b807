"""Replay a CLI transcript: each `$ sluice ...` command runs through the real CLI app and its output is compared
line by line with the transcript.

Transcript syntax (tests/cli/first_use.transcript):
- `# ...` outside a command's output is a comment;
- `% write NAME` ... `% end` writes a file in the working folder (values substituted);
- `$ sluice ARGS` runs a command; the lines after it are its output (stdout and stderr, interleaved as a user
  sees them), and `[exit N]` closes it with the expected exit code;
- in expected lines `{*}` matches any text, `{=name}` captures a token for later use as `{name}`, `<BOM>` is
  the UTF-8 byte-order mark, and a line `...` skips any lines up to the next expected one.

`python tests/cli/transcript.py FILE` prints the actual output of each command (to update a transcript).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TOKEN = re.compile(r"\{\*\}|\{=(\w+)\}|\{(\w+)\}|<BOM>")


@dataclass
class Step:
    """One command (or file to write) of a transcript, with its line number."""

    line: int
    command: str = ""
    write: tuple[str, str] | None = None
    expected: list[str] = field(default_factory=list)
    exit_code: int = 0


def parse(text: str) -> list[Step]:
    """The steps of a transcript."""
    steps: list[Step] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("% write "):
            body = []
            i += 1
            while lines[i] != "% end":
                body.append(lines[i])
                i += 1
            steps.append(Step(i + 1, write=(line[len("% write "):].strip(), "\n".join(body) + "\n")))
        elif line.startswith("$ "):
            step = Step(i + 1, command=line[2:])
            i += 1
            while not lines[i].startswith("[exit "):
                step.expected.append(lines[i])
                i += 1
            step.exit_code = int(lines[i][len("[exit "):-1])
            steps.append(step)
        elif line.strip() and not line.startswith("#"):
            raise ValueError(f"transcript line {i + 1}: expected `$ `, `% write` or a comment, got {line!r}")
        i += 1
    return steps


def substitute(text: str, values: dict[str, str]) -> str:
    """`{name}` replaced by captured values."""
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), text)


def _pattern(expected: str, values: dict[str, str]) -> re.Pattern[str]:
    parts: list[str] = []
    pos = 0
    for m in TOKEN.finditer(expected):
        parts.append(re.escape(expected[pos:m.start()]))
        if m.group(0) == "{*}":
            parts.append(".*")
        elif m.group(0) == "<BOM>":
            parts.append("\ufeff")
        elif m.group(1):
            parts.append(f"(?P<{m.group(1)}>[^\\s\"',│]+)")
        else:
            name = m.group(2)
            if name not in values:
                raise KeyError(f"{{{name}}} is used before it is captured")
            parts.append(re.escape(values[name]))
        pos = m.end()
    parts.append(re.escape(expected[pos:]))
    return re.compile("".join(parts))


def match(expected: list[str], actual: list[str], values: dict[str, str]) -> str | None:
    """Compare output lines; capture `{=name}` values into `values`. Returns a mismatch description or None."""
    a = 0
    skip = False
    for e in expected:
        if e == "...":
            skip = True
            continue
        pattern = _pattern(e, values)
        while True:
            if a >= len(actual):
                return f"missing line {e!r}"
            m = pattern.fullmatch(actual[a].rstrip())
            a += 1
            if m:
                values.update({k: v for k, v in m.groupdict().items() if v is not None})
                skip = False
                break
            if not skip:
                return f"expected {e!r}, got {actual[a - 1].rstrip()!r}"
    if not skip and a < len(actual):
        return f"unexpected line {actual[a].rstrip()!r}"
    return None


Runner = Callable[[list[str]], tuple[int, str]]


def replay(text: str, workdir: Path, run: Runner, values: dict[str, str]) -> list[str]:
    """Run every step; the list of mismatches (empty when the transcript holds)."""
    problems: list[str] = []
    for step in parse(text):
        if step.write is not None:
            name, body = step.write
            (workdir / name).write_text(substitute(body, values), "utf-8")
            continue
        argv = shlex.split(substitute(step.command, values))
        assert argv[0] == "sluice", step.command
        code, output = run(argv[1:])
        lines = output.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        problem = match(step.expected, lines, values)
        if code != step.exit_code:
            problem = f"exit {code}, expected {step.exit_code}" + (f"; {problem}" if problem else "")
        if problem:
            shown = "\n    ".join(lines)
            problems.append(f"line {step.line} `{step.command}`: {problem}\n  output:\n    {shown}")
    return problems


def _record(path: Path) -> None:
    """Run a transcript in a fresh folder and print each command's actual output and exit code."""
    import os
    import tempfile

    from typer.testing import CliRunner

    from sandbox.cli import app

    path = path.resolve()
    work = Path(tempfile.mkdtemp())
    os.chdir(work)
    os.environ["SLUICE_HOME"] = str(work / "home")
    runner = CliRunner()
    values: dict[str, str] = {"home": str(work / "home")}
    for step in parse(path.read_text("utf-8")):
        if step.write is not None:
            (work / step.write[0]).write_text(substitute(step.write[1], values), "utf-8")
            continue
        result = runner.invoke(app, shlex.split(substitute(step.command, values))[1:], prog_name="sluice")
        lines = result.output.split("\n")
        match(step.expected, lines, values)
        print(f"$ {step.command}\n{result.output.rstrip()}\n[exit {result.exit_code}]\n")


if __name__ == "__main__":
    import sys

    _record(Path(sys.argv[1]))
