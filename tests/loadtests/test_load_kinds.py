"""The scenario kinds beyond one editing window: validation, and tiny runs against collab."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loadtests.coldload import ColdLoadResult
from loadtests.harness import ServerProcess
from loadtests.kinds import SaturationResult, run_scenario
from loadtests.report import format_result
from loadtests.runner import RunOptions, RunResult
from loadtests.scenario import ScenarioError, parse_scenario
from server.hooks import Hooks, Joining
from server.realtime.hub import Hub
from tests.conftest import StartServer


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kind": "storm"}, "'kind' must be one of"),
        ({"history_edits": 10}, "'history_edits' only applies to kind 'cold_load'"),
        ({"kind": "herd", "stage_rates": [1]}, "'stage_rates' only applies to kind 'saturation'"),
        ({"kind": "herd", "ramp_up": 1.0}, "a herd joins at one instant"),
        ({"kind": "saturation"}, "'stage_rates' must list 1 to"),
        ({"kind": "saturation", "stage_rates": [10, 5]}, "'stage_rates' must increase"),
        ({"kind": "saturation", "stage_rates": [500]}, "must be > 0 and <= 100"),
        ({"kind": "saturation", "stage_rates": "fast"}, "must be a list of numbers"),
        ({"kind": "reconnect", "reconnect_at": 9.0}, "'reconnect_at' must be >= 0"),
        ({"kind": "reconnect", "reconnect_fraction": 0}, "'reconnect_fraction'"),
        ({"kind": "cold_load", "history_edits": 0}, "'history_edits' must be between"),
        ({"kind": "presence", "idle": True}, "'idle' only applies to kind 'editing'"),
    ],
)
def test_kind_specific_keys_are_checked(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario({"duration": 5, "clients_per_room": 3, **values})


def test_a_saturation_stage_is_an_editing_scenario_at_that_rate() -> None:
    scenario = parse_scenario(
        {"duration": 2, "kind": "saturation", "stage_rates": [5, 10.5], "writers_per_room": 1}
    )
    assert scenario.stage_rates == (5.0, 10.5)
    stage = scenario.stage(10.5)
    assert (stage.kind, stage.edits_per_second, stage.duration) == ("editing", 10.5, 2.0)
    assert scenario.to_dict()["stage_rates"] == [5.0, 10.5]


def run(scenario: dict[str, Any], url: str, **options: Any) -> Any:
    return run_scenario(parse_scenario(scenario), url, RunOptions(workers=1, seed=3, **options))


def test_cold_load_ingests_the_history_and_times_the_joiners(
    collab_server: ServerProcess,
) -> None:
    scenario = {"kind": "cold_load", "duration": 20, "history_edits": 400, "late_joiners": 2}
    result = run(scenario, collab_server.ws_url, server_pid=collab_server.pid)

    assert isinstance(result, ColdLoadResult)
    assert result.errors == {}
    assert result.converged, [room.why for room in result.rooms]
    (room,) = result.rooms
    assert room.edits == 400
    assert room.ingest_edits_per_second is not None
    assert room.ingest_edits_per_second > 0
    assert len(room.join_seconds) == 2
    assert result.join.count == 2
    assert result.server is not None
    assert result.server["cpu_us_per_edit"] > 0
    assert "ingest" in format_result(result)


def test_a_herd_joins_at_one_instant_and_syncs(collab_ws_url: str) -> None:
    scenario = {"kind": "herd", "duration": 0.5, "rooms": 2, "clients_per_room": 4}
    result = run(scenario, collab_ws_url)

    assert isinstance(result, RunResult)
    assert result.clients["connected"] == 8
    assert result.clients["handshake_ms"]["count"] == result.clients["sync_ms"]["count"] == 8
    assert result.converged
    assert "sync p50 / p99 / max" in format_result(result)


def test_a_reconnect_storm_loses_nothing_and_converges(collab_ws_url: str) -> None:
    scenario = {
        "kind": "reconnect",
        "duration": 1.6,
        "rooms": 2,
        "clients_per_room": 4,
        "writers_per_room": 1,
        "edits_per_second": 20,
        "reconnect_at": 0.4,
        "reconnect_fraction": 0.5,
        "reconnect_delay": 0.3,
    }
    result = run(scenario, collab_ws_url)

    assert isinstance(result, RunResult)
    storm = result.extra["reconnect"]
    assert storm["dropped"] == storm["returned"] >= 2
    assert storm["resync_ms"]["count"] == storm["returned"]
    assert result.errors == {}, "no lost, duplicate or unmatched delivery across the storm"
    assert result.edits["deliveries"] == result.edits["expected_deliveries"] > 0
    assert result.converged


def test_a_presence_storm_times_awareness_and_converges(collab_ws_url: str) -> None:
    scenario = {
        "kind": "presence",
        "duration": 1.0,
        "rooms": 1,
        "clients_per_room": 4,
        "writers_per_room": 2,
        "edits_per_second": 10,
    }
    result = run(scenario, collab_ws_url)

    assert isinstance(result, RunResult)
    assert result.errors == {}
    sent = result.edits["sent"]
    assert sent >= 15, "2 publishers at 10 awareness updates/s for 1 s"
    assert result.fanout.count == sent, "every awareness update reached the 3 others"
    assert result.converged, result.convergence


def test_saturation_steps_until_a_stage_fails_or_the_list_ends(collab_ws_url: str) -> None:
    scenario = {
        "kind": "saturation",
        "duration": 0.6,
        "clients_per_room": 5,
        "writers_per_room": 2,
        "writers_apply": False,
        "stage_rates": [5, 10],
        "p99_limit_ms": 2000,
    }
    result = run(scenario, collab_ws_url)

    assert isinstance(result, SaturationResult)
    assert [stage.rate for stage in result.stages] == [5.0, 10.0]
    assert all(stage.good for stage in result.stages)
    assert not result.saturated
    last = result.last_good
    assert last is not None
    assert last.result.edits["planned_per_second"] == 20
    assert "saturation point" in format_result(result)
    assert result.to_json()["last_good"]["rate_per_writer"] == 10.0


class SlowJoins:
    """An extension making every join take 50 ms (a slow rights lookup, say), so that a
    storm piles joins up past the server's capacity."""

    def install(self, hooks: Hooks, hub: Hub) -> None:
        hooks.on_connect.subscribe(self.slow)

    async def slow(self, joining: Joining) -> None:
        await asyncio.sleep(0.05)  # the cost of a join, not a synchronisation


async def test_a_storm_past_the_servers_capacity_is_shed_and_retried(
    start_server: StartServer,
) -> None:
    """A node that sheds upgrades past 2 joins in flight: every client of the storm comes
    back anyway, retrying after the server's Retry-After (with jitter)."""
    server = await start_server(max_joining=2, extensions=[SlowJoins().install])
    scenario = {
        "kind": "reconnect",
        "duration": 3.0,
        "ramp_up": 1.0,
        "rooms": 4,
        "clients_per_room": 6,
        "writers_per_room": 1,
        "edits_per_second": 5,
        "reconnect_at": 0.3,
        "reconnect_fraction": 1.0,
        "reconnect_delay": 0.0,
        "connect_timeout": 30.0,
    }
    result = await asyncio.to_thread(run, scenario, server.ws_url)

    assert isinstance(result, RunResult)
    storm = result.extra["reconnect"]
    assert storm["shed"] > 0, "the server shed none of the storm"
    assert storm["dropped"] == storm["returned"] == 24
    assert result.errors == {}
    assert result.converged


async def test_a_storm_of_many_users_comes_back_with_their_own_tokens(
    start_server: StartServer,
) -> None:
    """Every client presents the token of one of 8 users (no insecure-dev user): the storm
    comes back whole with the per-user socket cap and connect rate in force."""
    server = await start_server(insecure_dev=False, max_sockets_per_user=5)
    # 4 sockets per user: within the cap of 5, which one shared token would exceed (4430).
    users = [await server.add_user(f"storm{i}@example.com", "manager") for i in range(8)]
    tokens = tuple(server.token(user) for user in users)
    scenario = {
        "kind": "reconnect",
        "duration": 2.0,
        "ramp_up": 0.5,
        "rooms": 4,
        "clients_per_room": 8,
        "writers_per_room": 1,
        "edits_per_second": 5,
        "reconnect_at": 0.3,
        "reconnect_fraction": 1.0,
        "reconnect_delay": 0.0,
        "connect_timeout": 20.0,
    }
    result = await asyncio.to_thread(run, scenario, server.ws_url, tokens=tokens)

    assert isinstance(result, RunResult)
    storm = result.extra["reconnect"]
    assert storm["dropped"] == storm["returned"] == 32
    assert result.errors == {}
    assert result.converged
