"""Dependencies point one way: protocol <- crdt <- persistence <- server (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What each package may import from this repository and from third parties.
ALLOWED_LOCAL = {
    "protocol": {"protocol"},
    "crdt": {"protocol", "crdt"},
    "persistence": {"protocol", "crdt", "persistence"},
    "server": {"protocol", "crdt", "persistence", "server"},
    "loadtests": {"protocol", "crdt", "loadtests"},
}
# Benchmarks that run server code in their own process (audit pipeline, awareness) live in
# loadtests/inprocess/: the only place outside tests/ that imports the server.
INPROCESS = ROOT / "loadtests" / "inprocess"
LOCAL = set(ALLOWED_LOCAL)
FORBIDDEN_THIRD_PARTY = {
    "protocol": {"pycrdt", "asyncio", "websockets", "starlette", "uvicorn", "sqlite3", "socket"},
    "crdt": {"asyncio", "websockets", "starlette", "uvicorn", "sqlite3", "socket"},
    "persistence": {"starlette", "uvicorn", "websockets"},
    "loadtests": {"starlette"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED_LOCAL))
def test_package_imports_point_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources found for {package}"
    for path in files:
        imported = _imports(path)
        local = imported & LOCAL
        allowed = ALLOWED_LOCAL[package]
        if path.is_relative_to(INPROCESS):
            allowed = allowed | {"server", "persistence"}
        assert local <= allowed, f"{path.relative_to(ROOT)} imports {local}"
        banned = imported & FORBIDDEN_THIRD_PARTY.get(package, set())
        assert not banned, f"{path.relative_to(ROOT)} imports {banned}"
