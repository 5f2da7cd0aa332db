"""Fixtures for the JavaScript suites: the client library's Node tests (``clients/js/test``)
and the web editor's browser tests (``web/test``), each run by Node against a real server.

* ``js_node_modules`` (session): the npm workspace at the repository's root (``npm ci`` once
  when ``node_modules`` is missing or older than ``package-lock.json``).
* ``js_server`` (module): a ``collab serve`` child process with three users (Ada an admin,
  Bo a manager, Cy a viewer: :data:`loadtests.bench_web.USERS`) and their tokens.
* ``run_node``: runs a Node test file with the server's URLs and tokens in its environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtests.bench_web import SERVER_ENV, add_users
from loadtests.harness import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "node_modules"
STAMP = NODE_MODULES / ".installed"
NPM_CI_TIMEOUT_S = 300
NODE_TIMEOUT_S = 240


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` (Node.js >= 20) is not on PATH; the JavaScript tests need it")
    return node


@pytest.fixture(scope="session")
def js_node_modules() -> Path:
    """``npm ci`` at the repository's root unless its node_modules is up to date."""
    node_executable()
    lock = ROOT / "package-lock.json"
    if not STAMP.is_file() or STAMP.stat().st_mtime < lock.stat().st_mtime:
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is not on PATH and node_modules is not installed")
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"`npm ci` failed:\n{proc.stdout}\n{proc.stderr}")
        STAMP.touch()
    return NODE_MODULES


@dataclass
class JsServer:
    """A server child process and the tokens of its users, by short name."""

    server: ServerProcess
    tokens: dict[str, str]

    def env(self) -> dict[str, str]:
        return {
            "COLLAB_WS_URL": self.server.ws_url,
            "COLLAB_HTTP_URL": self.server.http_url,
            "COLLAB_TOKENS": json.dumps(self.tokens),
        }


@pytest.fixture(scope="module")
def js_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsServer]:
    data_dir = tmp_path_factory.mktemp("js-server")
    tokens = add_users(data_dir)
    with ServerProcess(data_dir, env=SERVER_ENV) as server:
        yield JsServer(server, tokens)


RunNode = Callable[..., subprocess.CompletedProcess[str]]


def run_node_file(
    path: Path, env: Mapping[str, str], timeout: float = NODE_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run one ``node --test`` file; fails the test with its output unless it passes."""
    command = [node_executable(), "--test", "--test-reporter=spec", str(path)]
    try:
        proc = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **env},
        )
    except subprocess.TimeoutExpired as exc:
        output = f"{exc.stdout!r}\n{exc.stderr!r}"
        pytest.fail(f"{path.name} did not finish within {timeout} s\n{output}")
    if proc.returncode != 0:
        pytest.fail(f"{path.name} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def run_node(js_node_modules: Path) -> RunNode:
    return run_node_file


def assert_all_passed(proc: subprocess.CompletedProcess[str]) -> None:
    """The spec reporter's summary says tests ran and none failed or was cancelled."""
    counts = dict(re.findall(r"^\u2139 (\w+) (\d+)$", proc.stdout, re.MULTILINE))
    assert int(counts.get("pass", "0")) > 0, proc.stdout
    assert counts.get("fail") == "0", proc.stdout
    assert counts.get("cancelled") == "0", proc.stdout
