"""The project's own Python sources, without what tools generate beside them (git-ignored:
the load tool's results, which may hold a whole virtualenv of a peer server; node_modules)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = (ROOT / "loadtests" / "results",)
GENERATED_PARTS = frozenset({"node_modules", "__pycache__"})


def python_sources(package: str) -> list[Path]:
    """Every ``.py`` file of ``package`` (a top-level folder), sorted."""
    return [
        path
        for path in sorted((ROOT / package).rglob("*.py"))
        if not GENERATED_PARTS & set(path.parts)
        and not any(path.is_relative_to(folder) for folder in GENERATED)
    ]
