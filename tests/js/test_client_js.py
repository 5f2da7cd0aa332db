"""The client library's Node tests (``clients/js/test``) against a real server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from loadtests.bench_web import SERVER_ENV, add_users
from loadtests.harness import ServerProcess
from tests.js.conftest import ROOT, JsServer, RunNode, assert_all_passed

pytestmark = pytest.mark.interop

TESTS = ROOT / "clients" / "js" / "test"


def test_client_library(js_server: JsServer, run_node: RunNode) -> None:
    proc = run_node(TESTS / "client.test.mjs", js_server.env())
    assert_all_passed(proc)


def test_test_files_are_all_run() -> None:
    """Every Node test file is driven by a pytest test of this folder."""
    names = {p.name for p in TESTS.glob("*.test.mjs")}
    assert names == {"client.test.mjs", "durable.test.mjs"}


def test_no_edit_lost_across_sigkill_and_restart(
    tmp_path: Path, run_node: RunNode, js_node_modules: Path
) -> None:
    """The Node client kills the server (SIGKILL) with edits unacknowledged; this test
    restarts it on the same port as soon as it is gone; the client resends; none is lost."""
    tokens = add_users(tmp_path)
    server = ServerProcess(tmp_path, env=SERVER_ENV).start()
    port = server.port
    restarted: list[ServerProcess] = []
    stop = threading.Event()

    def restart_when_killed() -> None:
        assert server.process is not None
        while server.process.poll() is None:
            if stop.wait(0.05):
                return
        restarted.append(ServerProcess(tmp_path, env=SERVER_ENV, port=port).start())

    watcher = threading.Thread(target=restart_when_killed, daemon=True)
    watcher.start()
    env = JsServer(server, tokens).env() | {"COLLAB_SERVER_PID": str(server.pid)}
    try:
        proc = run_node(TESTS / "durable.test.mjs", env)
        assert_all_passed(proc)
        assert len(restarted) == 1
    finally:
        stop.set()
        watcher.join(60)
        for each in [server, *restarted]:
            each.stop()
