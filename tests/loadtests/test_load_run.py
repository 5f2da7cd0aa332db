"""The load tool end to end against a real ``collab serve`` (the session's child process)."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest

from loadtests.cli import main
from loadtests.harness import ServerProcess
from loadtests.runner import RunOptions, run_load
from loadtests.scenario import parse_scenario


def test_short_run_delivers_measures_and_converges(collab_server: ServerProcess) -> None:
    scenario = parse_scenario(
        {
            "name": "e2e",
            "duration": 2,
            "ramp_up": 0.3,
            "rooms": 2,
            "clients_per_room": 3,
            "writers_per_room": 1,
            "edits_per_second": 10,
            "listeners": "applying",
            "cursor": True,
        }
    )
    options = RunOptions(workers=2, server_pid=collab_server.pid, seed=7)
    result = run_load(scenario, collab_server.ws_url, options)

    assert result.clients["connected"] == 6
    sent = result.edits["sent"]
    assert sent >= 30, "2 writers at 10 edits/s for 2 s"
    # Every edit reached the 2 other clients of its room, and each was timed.
    assert result.edits["deliveries"] == result.edits["expected_deliveries"] == 2 * sent
    assert result.delivery.count == 2 * sent
    assert result.fanout.count == sent
    assert 0 < result.fanout.p50 <= result.fanout.p99 <= result.fanout.max < 5000
    assert result.errors == {}
    assert result.converged
    assert result.convergence == {"rooms": 2, "converged": 2, "all": True, "failed": []}
    assert result.server is not None
    assert result.server["cpu_seconds"] > 0
    assert result.server["rss_bytes_end"] > 10_000_000
    # Each edit is an update and a cursor to 2 clients; the last ones land after the window.
    assert result.server["frames_in_window"] >= 4 * sent - 8
    assert sum(row["edits"] for row in result.timeseries) == sent
    json.dumps(result.to_json(), allow_nan=False)


def test_cli_writes_the_table_and_the_json(
    collab_ws_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.json"
    picture = tmp_path / "run.png"
    argv = ["smoke", "--url", collab_ws_url, "--workers", "2", "--quiet", "--out", str(out)]
    argv += ["--set", "duration=1.5", "--set", "listeners=passive", "--set", "writers_per_room=2"]
    argv += ["--plot", str(picture)]
    pytest.importorskip("matplotlib", reason="--plot needs the optional 'load' dependencies")
    code = main(argv)

    printed = capsys.readouterr()
    assert "fan-out latency p50 / p95 / p99 / max" in printed.out
    assert "converged rooms | 2 / 2 (yes)" in printed.out
    result = json.loads(out.read_text())
    assert result["scenario"]["listeners"] == "passive"
    assert result["edits"]["deliveries"] == result["edits"]["expected_deliveries"] > 0
    assert not math.isnan(result["latency_ms"]["fanout"]["p99"])
    assert result["convergence"]["all"] is True
    assert result["server"] is None, "no --server-pid: no server metrics"
    assert code == 0
    assert picture.read_bytes().startswith(b"\x89PNG")


def test_unreachable_server_is_reported_not_hung(unused_port: int) -> None:
    scenario = parse_scenario(
        {"duration": 0.5, "rooms": 1, "clients_per_room": 2, "connect_timeout": 2}
    )
    result = run_load(scenario, f"ws://127.0.0.1:{unused_port}/ws", RunOptions(workers=1))
    assert result.clients["connected"] == 0
    assert result.errors == {
        "connect_ConnectionRefusedError": 2,
        "fresh_join_ConnectionRefusedError": 1,
    }
    assert not result.converged
    assert result.convergence["failed"][0]["why"] == "only 0 of 2 clients were connected"


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released, by the test itself)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
