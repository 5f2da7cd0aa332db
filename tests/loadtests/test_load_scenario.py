"""Scenario files and targets are checked before anything connects anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.cli import main
from loadtests.scenario import (
    MAX_CLIENTS,
    SCENARIO_DIR,
    ScenarioError,
    TargetError,
    check_target,
    load_scenario,
    parse_overrides,
    parse_scenario,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    return path


def test_a_complete_file_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "duration = 5\nrooms = 3\nclients_per_room = 4\nwriters_per_room = 2\n"
        'listeners = "applying"\n',
    )
    scenario = load_scenario(path)
    assert scenario.duration == 5.0
    assert scenario.total_clients == 12
    assert scenario.total_writers == 6
    assert scenario.name == "scenario"


def test_missing_duration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="missing 'duration'"):
        load_scenario(write(tmp_path, "rooms = 2\n"))


def test_unknown_key_is_refused_and_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="unknown key 'clients'") as caught:
        load_scenario(write(tmp_path, "duration = 5\nclients = 10\n"))
    assert "clients_per_room" in str(caught.value), "the known keys are listed"


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({"duration": 5, "rooms": "two", "cursor": 1, "listeners": 3})
    message = str(caught.value)
    assert "'rooms' must be an integer" in message
    assert "'cursor' must be true or false" in message
    assert "'listeners' must be a string" in message


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"duration": 0}, "'duration' must be > 0"),
        ({"duration": 10_000}, "'duration' must be > 0 and <= 600"),
        ({"duration": True}, "'duration' must be a number"),
        ({"duration": 5, "rooms": MAX_CLIENTS, "clients_per_room": 2}, "exceeds the cap"),
        ({"duration": 5, "clients_per_room": 2, "writers_per_room": 3}, "'writers_per_room'"),
        ({"duration": 5, "edits_per_second": 0}, "'edits_per_second' must be > 0"),
        ({"duration": 5, "listeners": "lazy"}, "'listeners' must be 'passive' or 'applying'"),
        ({"duration": 5, "idle": True, "writers_per_room": 1}, "idle scenario makes no edits"),
        ({"duration": 5, "room_template": "load-{run}"}, "must contain {room}"),
        ({"duration": 5, "room_template": "x/{room}/{user}"}, "may only use"),
        ({"duration": 5, "room_template": "a b{room}"}, "characters"),
    ],
)
def test_bad_values_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(values)


def test_invalid_toml_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="invalid TOML"):
        load_scenario(write(tmp_path, "duration = \n"))


def test_idle_scenarios_have_no_writers() -> None:
    scenario = parse_scenario({"duration": 5, "idle": True, "clients_per_room": 3})
    assert scenario.total_writers == 0
    assert scenario.planned_edits_per_second == 0


@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_bundled_scenarios_are_valid(path: Path) -> None:
    assert load_scenario(path).name == path.stem


def test_bundled_scenario_by_name_and_overrides() -> None:
    scenario = load_scenario(Path("smoke"), parse_overrides(["duration=1.5", "listeners=passive"]))
    assert scenario.duration == 1.5
    assert scenario.listeners == "passive"
    with pytest.raises(ScenarioError, match="unknown key 'bogus'"):
        load_scenario(Path("smoke"), parse_overrides(["bogus=1"]))
    with pytest.raises(ScenarioError, match="not KEY=VALUE"):
        parse_overrides(["duration"])


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:8765/ws", "ws://localhost:1/ws", "wss://[::1]:9/ws", "ws://127.3.2.1/"]
)
def test_loopback_targets_are_accepted(url: str) -> None:
    assert check_target(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["ws://10.0.0.5:8765/ws", "ws://example.com/ws", "wss://[2001:db8::1]/ws"]
)
def test_non_loopback_targets_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(TargetError, match="--allow-remote"):
        check_target(url)
    assert check_target(url, allow_remote=True) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1/ws", "ws:// or wss://"),
        ("ws:///ws", "no host"),
        ("ws://127.0.0.1/ws?token=x", "'query' key"),
    ],
)
def test_malformed_targets_are_refused(url: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        check_target(url)


def test_cli_refuses_a_remote_target_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke", "--url", "ws://192.0.2.7:8765/ws", "--quiet"]) == 2
    assert "refusing to send load to '192.0.2.7'" in capsys.readouterr().err


def test_cli_refuses_a_scenario_without_duration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "rooms = 1\n")
    assert main([str(path), "--url", "ws://127.0.0.1:1/ws", "--quiet"]) == 2
    assert "missing 'duration'" in capsys.readouterr().err


def test_cli_refuses_an_unknown_server_pid(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["smoke", "--url", "ws://127.0.0.1:1/ws", "--server-pid", "999999999", "--quiet"]
    assert main(argv) == 2
    assert "no such process" in capsys.readouterr().err
