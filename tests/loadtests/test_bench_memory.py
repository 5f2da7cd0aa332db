"""The memory benchmark at a tiny size: it runs end to end and reports what it measured."""

from __future__ import annotations

import json

import pytest

from loadtests import bench_memory


def test_the_memory_benchmark_runs_at_a_tiny_size(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setattr(bench_memory, "RESULTS_DIR", tmp_path)
    code = bench_memory.main(["--cycles", "3", "--room-kb", "16", "--rooms", "6", "--batch", "3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "3 load/unload cycles" in out
    assert "6 rooms joined" in out
    [result] = list(tmp_path.glob("bench-memory-*.json"))
    data = json.loads(result.read_text())
    assert data["cycles"]["cycles"] == 3
    assert data["many_rooms"]["rooms_joined"] == 6
    assert data["many_rooms"]["rooms_loaded_peak"] >= 6
    assert data["cycles"]["rss_end_bytes"] > 0


def test_the_memory_benchmark_refuses_unbounded_runs() -> None:
    with pytest.raises(SystemExit):
        bench_memory.main(["--cycles", "1000000"])
