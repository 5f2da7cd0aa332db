"""The search benchmark runs end to end on a small seed (its numbers are not checked here)."""

from __future__ import annotations

from loadtests.inprocess import search_bench


def test_the_search_benchmark_runs_on_a_small_seed() -> None:
    args = search_bench.build_parser().parse_args(
        ["--documents", "60", "--records", "20", "--words", "80", "--queries", "5", "--edits", "1"]
    )
    results = search_bench.run(args)
    assert results["one word"]["p99_ms"] > 0
    assert results["three words"]["median_total"] >= 1  # the words of one document find it
    assert results["edit_to_searchable_s"]["max"] < 30
