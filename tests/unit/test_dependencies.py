"""Every third-party package the code imports is declared in pyproject.toml, where it
belongs: the server's in the runtime dependencies, the load tool's in its ``load`` extra
(or the runtime ones), the tests' in ``dev``. And the lock file pins (with hashes) every
runtime dependency, so the image installs exactly what was tested."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from tests.unit.sources import python_sources

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OURS = {"protocol", "crdt", "persistence", "server", "loadtests", "tests"}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match is not None, requirement
    return match[0].lower().replace("_", "-").replace(".", "-")


def _declared(*groups: str) -> set[str]:
    project = PYPROJECT["project"]
    names = {_name(r) for r in project["dependencies"]}
    for group in groups:
        names |= {_name(r) for r in project["optional-dependencies"][group]}
    return names


def _third_party_imports(folder: str) -> dict[str, str]:
    """Top-level module -> a file importing it, for every import of ``folder`` (function
    bodies included) that is neither the standard library nor ours."""
    found: dict[str, str] = {}
    for path in python_sources(folder):
        if "node_modules" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in OURS:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _distributions(module: str) -> set[str]:
    return {
        d.lower().replace("_", "-").replace(".", "-")
        for d in packages_distributions().get(module, [])
    }


@pytest.mark.parametrize(
    ("folders", "groups"),
    [
        (("protocol", "crdt", "persistence", "server"), ()),
        (("loadtests",), ("load",)),
        (("tests",), ("dev", "load")),
    ],
)
def test_every_imported_package_is_declared(
    folders: tuple[str, ...], groups: tuple[str, ...]
) -> None:
    declared = _declared(*groups)
    undeclared = {}
    for folder in folders:
        for module, where in _third_party_imports(folder).items():
            distributions = _distributions(module)
            if not distributions & declared:
                undeclared[module] = (where, sorted(distributions))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_walk_sees_third_party_imports() -> None:
    found = _third_party_imports("server")
    assert {"starlette", "pydantic", "prometheus_client", "jwt"} <= set(found)


def test_the_lock_file_pins_every_runtime_dependency_with_hashes() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", lock, re.M)}
    pins = re.findall(
        r"^([A-Za-z0-9_.-]+)==\S+ \\\n((?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+)", lock, re.M
    )
    assert len(pins) == len(pinned), "every pin carries its hashes"
    missing = _declared() - set(pinned)
    assert not missing, f"runtime dependencies missing from requirements.lock: {missing}"
    for dev_only in ("pytest", "hypothesis", "mypy", "ruff", "httpx2", "matplotlib"):
        assert dev_only not in pinned, f"{dev_only} is no runtime dependency"
