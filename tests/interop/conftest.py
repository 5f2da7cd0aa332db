"""Fixtures for the Node-based interop tests.

* ``interop_node_modules`` (session): makes sure ``tests/interop/node_modules`` matches the
  pinned versions in ``package.json``, running ``npm ci`` once per session if it does not.
* ``reference_ws_url`` (session): starts the reference y-websocket server from
  ``@y/websocket-server`` on a free 127.0.0.1 port and yields its ``ws://127.0.0.1:PORT/ws``
  base URL. Running every scenario against it proves the scenario scripts themselves are right.

``collab_ws_url`` (the collab server under test) is provided by ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

INTEROP_DIR = Path(__file__).resolve().parent
NODE_MODULES = INTEROP_DIR / "node_modules"
NPM_CI_TIMEOUT_S = 100
SERVER_START_TIMEOUT_S = 15.0


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` (Node.js >= 20) is not on PATH; the interop tests need it")
    return node


@pytest.fixture(scope="session")
def node_bin() -> str:
    """Path of the ``node`` executable (fails the test if there is none)."""
    return node_executable()


@pytest.fixture(scope="session")
def interop_dir() -> Path:
    """``tests/interop``: where package.json and the scenario scripts live."""
    return INTEROP_DIR


def _pinned_dependencies() -> dict[str, str]:
    package = json.loads((INTEROP_DIR / "package.json").read_text(encoding="utf-8"))
    deps: dict[str, str] = package["dependencies"]
    return deps


def _node_modules_mismatches() -> list[str]:
    """Pinned packages that are missing from node_modules or installed at another version."""
    problems = []
    for name, version in _pinned_dependencies().items():
        manifest = NODE_MODULES / name / "package.json"
        if not manifest.is_file():
            problems.append(f"{name} missing")
            continue
        installed = json.loads(manifest.read_text(encoding="utf-8")).get("version")
        if installed != version:
            problems.append(f"{name} is {installed}, package.json pins {version}")
    return problems


@pytest.fixture(scope="session")
def interop_node_modules() -> Path:
    """Install the pinned npm packages (``npm ci``) unless they are already installed."""
    node_executable()
    problems = _node_modules_mismatches()
    if problems:
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(
                f"npm is not on PATH and tests/interop/node_modules is unusable: {problems}"
            )
        try:
            proc = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=INTEROP_DIR,
                capture_output=True,
                text=True,
                timeout=NPM_CI_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"`npm ci` in {INTEROP_DIR} timed out after {exc.timeout} s")
        if proc.returncode != 0:
            pytest.fail(
                f"`npm ci` in {INTEROP_DIR} failed with exit code {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        problems = _node_modules_mismatches()
        if problems:
            pytest.fail(f"node_modules still unusable after `npm ci`: {problems}")
    return NODE_MODULES


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _reference_server_script(node_modules: Path) -> Path:
    package_dir = node_modules / "@y" / "websocket-server"
    package = json.loads((package_dir / "package.json").read_text(encoding="utf-8"))
    relative: str = package["bin"]["y-websocket-server"]
    return package_dir / relative


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    """Poll until the server accepts TCP connections; False if it exited first."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(
        f"reference server did not listen on 127.0.0.1:{port} within "
        f"{SERVER_START_TIMEOUT_S} s; log:\n{log.read_text(errors='replace')}"
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def reference_ws_url(
    interop_node_modules: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL of a running reference ``@y/websocket-server`` (``ws://127.0.0.1:PORT/ws``)."""
    script = _reference_server_script(interop_node_modules)
    log = tmp_path_factory.mktemp("reference-server") / "server.log"
    for _attempt in range(3):  # the free port can be taken between probing and listening
        port = _free_port()
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
        env.pop("YPERSISTENCE", None)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [node_executable(), str(script)],
                cwd=INTEROP_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            if _wait_listening(proc, port, log):
                yield f"ws://127.0.0.1:{port}/ws"
                return
        finally:
            _stop(proc)
    pytest.fail(f"reference server failed to start; last log:\n{log.read_text(errors='replace')}")
