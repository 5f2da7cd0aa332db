"""Every module of the packages the server is made of, and of the load tool, stays under 600
lines (STYLE.md: split by responsibility past 600); persistence/ has its own check in
test_layering.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.sources import python_sources

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 600


@pytest.mark.parametrize("package", ["protocol", "crdt", "server", "loadtests"])
def test_modules_stay_under_600_lines(package: str) -> None:
    paths = python_sources(package)
    assert paths, f"no modules found under {package}/"
    long = {
        str(path.relative_to(ROOT)): n
        for path in paths
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split by responsibility past {MAX_MODULE_LINES} lines: {long}"
