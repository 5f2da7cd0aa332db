"""The CMS benchmark runs end to end on a small seed (its numbers are not checked here)."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests.inprocess import cms_bench


def test_the_cms_benchmark_runs_on_a_small_seed(tmp_path: Path) -> None:
    out = tmp_path / "cms.json"
    assert cms_bench.main(["--records", "60", "--requests", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["records"] == 60
    assert report["results"]
    assert all(result["p99_ms"] > 0 for result in report["results"].values())
