"""The release audit's replay bench (bench/release_audit_replay.py) replays the bench's own timed runs, from one
snapshot, in children that import the code version they are given, and refuses replays that decide differently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import release_audit, release_audit_replay

ROOT = Path(__file__).resolve().parents[1]
POPULATION, SIZES, RUNS = 20_000, [120, 240], 2


@pytest.fixture(scope="module")
def prepared() -> release_audit_replay.Prepared:
    return release_audit_replay.prepare(POPULATION, SIZES, RUNS, warmup=2)


def test_the_replayed_runs_are_the_benchs_timed_runs_at_its_last_size(
        prepared: release_audit_replay.Prepared, capsys: pytest.CaptureFixture[str]) -> None:
    bench = release_audit.measure(POPULATION, SIZES, RUNS)["sizes"][-1]
    capsys.readouterr()
    answer = release_audit_replay.replay_once(prepared, None)
    assert prepared.ledger_cells == bench["ledger_cells"]
    assert sum(len(sets) for _, sets in prepared.timed) == bench["cells_audited"]
    assert len(answer["cpu_ms"]) == RUNS and all(ms > 0 for ms in answer["cpu_ms"])
    assert sum(len(s) for s in answer["suppressed"]) == bench["suppressed"]
    assert answer["sets"] == bench["distinct_sets"]


def test_a_replay_of_a_source_tree_imports_the_audit_from_that_tree(prepared: release_audit_replay.Prepared,
                                                                    tmp_path: Path) -> None:
    other = tmp_path / "tree"  # another tree (its policy/ a link to this one's: numba's cache serves it)
    other.mkdir()
    (other / "policy").symlink_to(ROOT / "policy", target_is_directory=True)
    answer = release_audit_replay.replay_once(prepared, other)
    assert answer["policy"] == str(other / "policy")
    result = release_audit_replay.compare(prepared, [None, other], replays=2)
    assert set(result["versions"]) == {"this tree", str(other)}
    for row in result["versions"].values():
        assert len(row["run_min_ms"]) == RUNS and row["median_run_of_mins_ms"] > 0
    assert result["median_ratio"] is not None and result["min_ratio"] is not None


def test_replays_that_decide_differently_stop_the_comparison(prepared: release_audit_replay.Prepared,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def replay(prepared: release_audit_replay.Prepared, root: Path | None) -> dict[str, Any]:
        calls.append(1)
        return {"cpu_ms": [1.0] * RUNS, "suppressed": [[len(calls)]] + [[]] * (RUNS - 1), "sets": 1, "atoms": 1}

    monkeypatch.setattr(release_audit_replay, "replay_once", replay)
    with pytest.raises(RuntimeError, match="decided differently"):
        release_audit_replay.compare(prepared, [None], replays=2)
