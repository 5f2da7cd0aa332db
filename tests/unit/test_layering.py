"""Dependencies point one way: protocol <- crdt <- persistence <- server (DESIGN.md)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from server.api.ports import ApiCollab
from server.app import Collab
from tests.unit.sources import python_sources

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
    files = python_sources(package)
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


# server/: HTTP lives in api/ and at the edge (the wiring and the socket transport); the
# rest raises the domain errors of server/errors.py, mapped once by its table.
SERVER_EDGE = {
    "server/app.py",
    "server/cli.py",
    "server/realtime/transport.py",
    "server/realtime/direct.py",
    "server/realtime/http_head.py",
    "server/realtime/sessions.py",
    "server/realtime/connection.py",
}


def _modules_and_names(path: Path) -> tuple[set[str], set[str]]:
    """The full names of the modules ``path`` imports, and every name it uses."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules: set[str] = set()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
    return modules, names


def _domain_sources() -> list[Path]:
    server = ROOT / "server"
    return [
        path
        for path in sorted(server.rglob("*.py"))
        if not path.is_relative_to(server / "api")
        and path.relative_to(ROOT).as_posix() not in SERVER_EDGE
    ]


def test_domain_code_raises_no_http_errors() -> None:
    sources = _domain_sources()
    assert len(sources) > 20, "the walk must see the server's domain modules"
    for path in sources:
        modules, names = _modules_and_names(path)
        http = {m for m in modules if m.split(".")[0] == "starlette" or m.startswith("server.api")}
        assert not http, f"{path.relative_to(ROOT)} imports {sorted(http)}"
        assert "ApiError" not in names, f"{path.relative_to(ROOT)} uses ApiError"


def test_the_layering_walk_sees_an_http_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from server.api.common import ApiError\nraise ApiError(404, 'x')\n")
    modules, names = _modules_and_names(bad)
    assert "server.api.common" in modules
    assert "ApiError" in names


# -- no import circle inside persistence/ -----------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _local_imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` imports, wherever the import statement is
    (``if TYPE_CHECKING:`` blocks and function bodies count: a circle is a circle, even when
    it happens not to bite at run time). ``from package import name`` is an import of the
    module ``package.name`` when there is one, else of the package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found & modules


def _find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as the list of its modules, first repeated last), or
    None. Depth-first search; a module on the current path reached again closes a circle."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(module: str) -> list[str] | None:
        path.append(module)
        on_path.add(module)
        for imported in sorted(graph[module]):
            if imported in on_path:
                return [*path[path.index(imported) :], imported]
            if imported not in done:
                circle = visit(imported)
                if circle is not None:
                    return circle
        path.pop()
        on_path.discard(module)
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            circle = visit(module)
            if circle is not None:
                return circle
    return None


def test_find_circle_finds_one() -> None:
    assert _find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def _import_graph(packages: list[str]) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports (itself left out)."""
    files = [path for package in packages for path in python_sources(package)]
    modules = {_module_name(path) for path in files}
    return {
        _module_name(path): _local_imports(path, modules) - {_module_name(path)} for path in files
    }


def test_no_import_circle_inside_persistence() -> None:
    graph = _import_graph(["persistence"])
    assert graph["persistence.coordinator.redis"], "the import walk found nothing"
    circle = _find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


# -- no import circle anywhere in the project ---------------------------------------------------

PROJECT = ["protocol", "crdt", "persistence", "server", "loadtests"]


def test_no_import_circle_in_the_project() -> None:
    graph = _import_graph(PROJECT)
    assert graph["server.app"], "the import walk found nothing"
    circle = _find_circle(graph)
    assert circle is None, "import circle: " + " -> ".join(circle or [])


# -- server/: layers, lowest first; a module imports only its own layer and those below ------

# errors, settings and shutdown are vocabulary, flights a way of sharing work; identity says
# who someone is and what they may do; hooks is the extension API the rooms fire into;
# realtime holds connections and rooms; documents holds what the review features build on
# (revisions, the workflow); presence and review are features over the rooms; api is HTTP
# over the features; the top wires everything (docs/architecture.md, "Layers").
SERVER_LAYERS: list[set[str]] = [
    {"server", "errors", "settings", "shutdown", "flights", "ops"},
    {"identity"},
    {"hooks"},
    {"realtime"},
    {"documents"},
    {"presence", "review", "search", "cms", "admin"},
    {"api"},
    {"app", "assembly", "services", "stores", "cli", "__main__"},
]


def _server_layer(module: str) -> int:
    """The layer of a module of server/: that of its folder, or of its own name at the top."""
    parts = module.split(".")
    unit = parts[1] if len(parts) > 1 else parts[0]
    for rank, layer in enumerate(SERVER_LAYERS):
        if unit in layer:
            return rank
    raise AssertionError(f"{module}: give server/{unit} a layer in SERVER_LAYERS")


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{importer} (layer {_server_layer(importer)}) imports {imported} "
        f"(layer {_server_layer(imported)})"
        for importer in sorted(graph)
        for imported in sorted(graph[importer])
        if imported.split(".")[0] == "server" and _server_layer(imported) > _server_layer(importer)
    ]


def test_server_imports_only_its_own_or_lower_layers() -> None:
    graph = _import_graph(["server"])
    assert len(graph) > 50, "the walk must see the server's modules"
    upward = _upward_imports(graph)
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import() -> None:
    graph = {"server.documents.workflow": {"server.app", "server.errors"}, "server.app": set()}
    assert _upward_imports(graph) == [
        "server.documents.workflow (layer 4) imports server.app (layer 7)"
    ]


# -- persistence/ stays in small modules, grouped in its port folders --------------------------

MAX_MODULE_LINES = 600
MAX_TOP_LEVEL_FILES = 6


def test_persistence_modules_stay_under_600_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in python_sources("persistence")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split by responsibility past {MAX_MODULE_LINES} lines: {long}"


def test_persistence_top_level_holds_few_files() -> None:
    top = sorted(p.name for p in (ROOT / "persistence").iterdir() if p.is_file())
    assert 0 < len(top) <= MAX_TOP_LEVEL_FILES, f"a module belongs in a port folder: {top}"


def _app_as_its_port(collab: Collab) -> ApiCollab:
    """Never called: mypy checks here that the app satisfies the port of the REST handlers,
    which name what they need of it instead of importing it."""
    return collab


@pytest.mark.parametrize("port", [ApiCollab])
def test_the_app_provides_every_member_of_the_ports(port: type) -> None:
    source = inspect.getsource(Collab)
    members = {
        name
        for klass in port.__mro__
        if klass.__module__.startswith("server.")
        for name in vars(klass)
        if not name.startswith("_")
    }
    assert members, f"{port.__name__} names nothing"
    missing = {m for m in members if f"self.{m} =" not in source and f"def {m}(" not in source}
    assert not missing, f"Collab lacks {sorted(missing)} of {port.__name__}"


FEATURES = ("server/documents", "server/review", "server/presence", "server/realtime")


def test_features_are_handed_their_collaborators_not_the_app() -> None:
    """No feature names the app or the REST port: each gets its own ports from the wiring."""
    offenders = {
        str(path.relative_to(ROOT))
        for folder in FEATURES
        for path in python_sources(folder)
        if any(name in path.read_text() for name in ("ApiCollab", "server.app", "Collab)"))
    }
    assert not offenders, f"features that reach for the app: {sorted(offenders)}"


def test_features_keep_no_registry_of_apps() -> None:
    """Services are held by the app that made them, not looked up in module-level tables."""
    offenders = {
        str(path.relative_to(ROOT))
        for path in python_sources("server")
        if "WeakKeyDictionary" in path.read_text()
    }
    assert not offenders, f"module-level service registries: {sorted(offenders)}"
