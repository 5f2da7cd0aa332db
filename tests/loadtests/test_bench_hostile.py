"""The hostile-frames benchmark at a tiny size: it runs end to end against a real server and
reports what it measured (the numbers themselves belong in docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import bench_hostile


def test_a_tiny_hostile_run_reports_bombs_and_fuzz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hostile.json"
    argv = ["--connections", "3", "--rounds", "2", "--fuzz-frames", "60"]
    argv += ["--fuzz-connections", "3", "--deadline", "60", "--no-pin", "--out", str(out)]
    # 0: target met, 1: missed (a loaded machine); 3 would mean the run itself went wrong.
    assert bench_hostile.main(argv) in (0, 1)

    document = json.loads(out.read_text())
    assert document["problem"] is None
    bombs, fuzz = document["bombs"], document["fuzz"]
    assert bombs["bombs_sent"] == 6
    assert bombs["close_codes"] == {"1007": 6}
    assert set(bombs["by_kind"]) == set(bench_hostile.BOMBS)
    assert bombs["healthz_under_bombs"]["failures"] == 0
    assert fuzz["frames_handled"] == 60
    assert sum(fuzz["outcomes"].values()) == 60
    assert "unanswered" not in fuzz["outcomes"]
    assert fuzz["server_cpu_us_per_frame"] > 0
    assert "| fuzz |" in capsys.readouterr().out
