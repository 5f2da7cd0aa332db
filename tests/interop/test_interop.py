"""Interop tests: real Yjs clients (yjs + y-websocket's WebsocketProvider under Node) against a
y-websocket compatible server.

Every test runs one Node scenario script (``tests/interop/scenario-*.mjs``) as a subprocess,
against both

* ``collab``: the collab server under test (``collab_ws_url``, from ``tests/conftest.py``), and
* ``reference``: the reference ``@y/websocket-server`` (``reference_ws_url``, from
  ``tests/interop/conftest.py``), which proves the scenario scripts themselves are right.

Select one side with ``-k collab`` or ``-k reference``. Each script prints one JSON line and
exits 0 on success; on failure its stdout/stderr are shown.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from protocol.yupdate import validate_state_vector, validate_update

pytestmark = pytest.mark.interop

SCRIPT_TIMEOUT_S = 60

RunScenario = Callable[[str], dict[str, Any]]


@pytest.fixture(params=["collab", "reference"])
def ws_url(request: pytest.FixtureRequest, interop_node_modules: Path) -> str:
    """WebSocket base URL of the server under test: the collab server or the reference one."""
    url: str = request.getfixturevalue(f"{request.param}_ws_url")
    return url


@pytest.fixture
def run_scenario(ws_url: str, node_bin: str, interop_dir: Path) -> RunScenario:
    """Run a scenario script against the server under test; returns its JSON result."""

    def run(script: str) -> dict[str, Any]:
        return _run_scenario(node_bin, interop_dir, script, ws_url)

    return run


def _run_scenario(node_bin: str, interop_dir: Path, script: str, ws_url: str) -> dict[str, Any]:
    """Run one scenario script against ``ws_url`` with a fresh room prefix; return its result."""
    prefix = f"it-{uuid.uuid4().hex[:12]}-"
    cmd = [node_bin, str(interop_dir / script), ws_url, prefix]
    try:
        proc = subprocess.run(
            cmd,
            cwd=interop_dir,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{script} did not finish within {SCRIPT_TIMEOUT_S} s\ncommand: {' '.join(cmd)}\n"
            f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
        )
    report = (
        f"command: {' '.join(cmd)}\nexit code: {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    if proc.returncode != 0:
        pytest.fail(f"{script} failed against {ws_url}\n{report}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        pytest.fail(f"{script} printed no result line\n{report}")
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"{script} did not print a JSON result line\n{report}")
    if result.get("ok") is not True:
        pytest.fail(f"{script} reported failure\n{report}")
    print(f"{script}: {lines[-1]}")
    return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def test_concurrent_editors_converge(run_scenario: RunScenario) -> None:
    """a. Two editors, 200 interleaved concurrent edits on ``<prefix>doc/sec``, converge."""
    result = run_scenario("scenario-a-concurrent.mjs")
    assert result["edits"] == 200
    assert result["length"] >= 50


def test_late_joiner_receives_full_state(run_scenario: RunScenario) -> None:
    """b. A client joining after the editor left receives text and map from the server."""
    run_scenario("scenario-b-late-joiner.mjs")


def test_offline_edits_merge_on_reconnect(run_scenario: RunScenario) -> None:
    """c. Edits made while one client was disconnected merge after it reconnects."""
    result = run_scenario("scenario-c-offline.mjs")
    assert "[B wrote this offline]" in result["text"]
    assert "[A wrote this while B was offline]" in result["text"]


def test_awareness_propagates_and_is_removed(run_scenario: RunScenario) -> None:
    """d. Awareness states propagate, and are removed on graceful and abrupt disconnect."""
    run_scenario("scenario-d-awareness.mjs")


def test_rooms_are_isolated(run_scenario: RunScenario) -> None:
    """e. 20 rooms x 2 clients: each client ends with exactly its room's text."""
    result = run_scenario("scenario-e-isolation.mjs")
    assert result["rooms"] == 20


def test_every_frame_parses_as_y_websocket_message(run_scenario: RunScenario) -> None:
    """f. Every frame the server sends is a binary y-websocket message (types 0-3)."""
    result = run_scenario("scenario-f-frames.mjs")
    assert result["frames"] > 0


def test_split_surrogate_pairs_keep_server_state_identical(
    run_scenario: RunScenario, request: pytest.FixtureRequest
) -> None:
    """g. Edits that split emoji (UTF-16 surrogate pairs): the server's copy stays identical."""
    if request.node.callspec.params["ws_url"] == "collab":
        # Strict: this starts failing, and must be unmarked, once yrs/pycrdt handle it.
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="known yrs limitation (y-crdt/y-crdt#399): when a Yjs client splits a "
                "UTF-16 surrogate pair, yrs keeps the whole character in one half where Yjs "
                "writes U+FFFD in both, so the server's copy differs from the editors'",
            )
        )
    result = run_scenario("scenario-g-surrogates.mjs")
    assert result["edits"] == 100


def test_every_update_yjs_writes_passes_the_structural_validator(
    interop_node_modules: Path, node_bin: str, interop_dir: Path
) -> None:
    """Updates and state vectors written by real Yjs (text with formats and embeds, maps of
    nested values and bytes, arrays of shared types, a subdocument, XML, three clients merged
    and diffed) pass :mod:`protocol.yupdate`, which the server runs before pycrdt; pycrdt
    reads them too. (Yjs's XmlHook is left out: Yjs writes a name after it that yrs does not
    read, so no yrs-based server can take it.)"""
    done = subprocess.run(
        [node_bin, str(interop_dir / "yjs-updates.mjs")],
        cwd=interop_dir,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=True,
    )
    written = json.loads(done.stdout)
    assert len(written["updates"]) > 20
    for update in map(bytes.fromhex, written["updates"]):
        validate_update(update)
        pycrdt.Doc().apply_update(update)
    for state_vector in map(bytes.fromhex, written["stateVectors"]):
        validate_state_vector(state_vector)
