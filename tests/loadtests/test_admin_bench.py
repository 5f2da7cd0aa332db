"""The administration benchmark runs, small (its timings are not checked here; its I/O is:
counting does none)."""

from __future__ import annotations

from loadtests.inprocess import admin_bench


async def test_the_admin_benchmark_runs_small() -> None:
    results = await admin_bench.measure(counts=1000, rights=10)
    assert results["io_calls_during_counts"] == 0
    assert results["flush_io_calls"] == 2  # one type: its hour and its day
    assert results["right_us_per_call_cached"] > 0
