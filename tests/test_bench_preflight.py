"""`make bench` without wrk: it says what is missing before its first benchmark, never after the others."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import throughput


def _no_benchmark_may_start(*args: object, **kwargs: object) -> None:
    raise AssertionError("a benchmark started before wrk was checked")


def test_without_wrk_make_bench_stops_first_naming_wrk_and_how_to_install_or_skip_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no wrk
    monkeypatch.setattr(bench_main.tpch, "generate", _no_benchmark_may_start)
    monkeypatch.setattr(sys, "argv", ["bench"])
    with pytest.raises(SystemExit) as stopped:
        bench_main.main()
    assert stopped.value.code == throughput.WRK_MISSING
    assert "apt-get install wrk" in throughput.WRK_MISSING and "--skip-throughput" in throughput.WRK_MISSING


def test_the_throughput_benchmark_alone_checks_wrk_before_generating_data(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(throughput.tpch, "generate", _no_benchmark_may_start)
    monkeypatch.setattr(sys, "argv", ["bench", "--throughput-only"])
    with pytest.raises(SystemExit) as stopped:
        bench_main.main()
    assert stopped.value.code == throughput.WRK_MISSING


def test_with_wrk_on_the_path_the_check_returns_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "wrk"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert throughput.require_wrk() == str(fake)
