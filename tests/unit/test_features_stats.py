"""Feature flags (``server/admin/features.py``) and activity counters
(``server/admin/stats.py``) over the in-process coordinator."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persistence.coordinator.memory import MemoryCoordinator
from persistence.coordinator.values import FlagRule
from persistence.errors import StorageUnavailable
from server.admin.features import Features, in_rollout
from server.admin.stats import ActivityStats, period_key, periods_back
from server.identity.audit import AuditContext

ACTOR = AuditContext(uuid.UUID(int=1))


class Trail:
    def __init__(self) -> None:
        self.entries: list[Any] = []

    def record(self, entry: Any) -> None:
        self.entries.append(entry)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@given(st.text(min_size=1, max_size=30), st.integers(0, 100), st.integers(0, 100))
def test_a_rollout_only_grows_with_its_percentage(user: str, low: int, high: int) -> None:
    low, high = min(low, high), max(low, high)
    if in_rollout("beta", user, low):
        assert in_rollout("beta", user, high)


def test_a_rollout_picks_about_its_percentage_of_users() -> None:
    users = [str(uuid.UUID(int=i)) for i in range(4000)]
    inside = sum(in_rollout("beta", user, 25) for user in users)
    assert 800 < inside < 1200
    assert in_rollout("beta", None, 100)
    assert not in_rollout("beta", None, 99)
    assert not any(in_rollout("beta", user, 0) for user in users[:100])


async def test_flags_are_cached_and_a_change_here_is_seen_at_once() -> None:
    coordinator, clock, trail = MemoryCoordinator(), Clock(), Trail()
    features = Features(coordinator.flags, trail, ttl=2.0, clock=clock)  # type: ignore[arg-type]
    assert await features.enabled("search") is True  # its default
    assert await features.enabled("other") is False
    await coordinator.flags.set("search", False)  # as another node would
    assert await features.enabled("search") is True  # cached
    clock.now = 2.0
    assert await features.enabled("search") is False
    await features.set(ACTOR, "search", True, 50)
    user_in = next(str(i) for i in range(100) if in_rollout("search", str(i), 50))
    user_out = next(str(i) for i in range(100) if not in_rollout("search", str(i), 50))
    assert await features.enabled("search", user_in) is True
    assert await features.enabled("search", user_out) is False
    assert await features.delete(ACTOR, "search") is True
    assert await features.enabled("search", user_out) is True
    assert [(e.action, e.resource_id) for e in trail.entries] == [
        ("update", "search"),
        ("delete", "search"),
    ]


async def test_a_flag_store_outage_keeps_the_last_value() -> None:
    coordinator, clock = MemoryCoordinator(), Clock()
    features = Features(coordinator.flags, Trail(), ttl=1.0, clock=clock)  # type: ignore[arg-type]
    await coordinator.flags.set("beta", True)
    assert await features.enabled("beta") is True
    await coordinator.aclose()  # every call now fails
    clock.now = 5.0
    assert await features.enabled("beta") is True


class CountingStats:
    """A StatsCounters that counts its calls and can fail."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.store: dict[tuple[str, str], dict[str, int]] = {}

    async def incr(
        self, kind: str, period: str, metric: str, amount: int = 1, ttl: float = 0
    ) -> int:
        self.calls += 1
        if self.fail:
            raise StorageUnavailable("down")
        metrics = self.store.setdefault((kind, period), {})
        metrics[metric] = metrics.get(metric, 0) + amount
        return metrics[metric]

    async def get(self, kind: str, period: str) -> dict[str, int]:
        return dict(self.store.get((kind, period), {}))


NOW = datetime(2026, 12, 7, 4, 30, tzinfo=UTC)


async def test_counting_does_no_io_and_a_flush_writes_one_incr_per_type_and_period() -> None:
    counters = CountingStats()
    stats = ActivityStats(counters, "node:1", clock=NOW.timestamp)
    for _ in range(10_000):
        stats.count("edits")
    stats.count("views", 3)
    assert counters.calls == 0
    await stats.flush()
    assert counters.calls == 4  # (edits, views) x (hour, day)
    assert counters.store[("edits", "hour.2026-12-07T04")] == {"n.node_1": 10_000}
    assert counters.store[("views", "day.2026-12-07")] == {"n.node_1": 3}


async def test_a_failed_flush_keeps_the_counts_for_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counters = CountingStats()
    stats = ActivityStats(counters, "n", clock=NOW.timestamp)
    stats.count("signins")
    counters.fail = True
    await stats.flush()
    assert stats.failures == 2
    counters.fail = False
    stats.count("signins")
    await stats.flush()
    assert counters.store[("signins", "hour.2026-12-07T04")] == {"n.n": 2}


async def test_reading_sums_the_nodes_over_the_last_periods() -> None:
    counters = CountingStats()
    earlier = ActivityStats(counters, "a", clock=lambda: (NOW - timedelta(hours=1)).timestamp())
    here = ActivityStats(counters, "a", clock=NOW.timestamp)
    other = ActivityStats(counters, "b", clock=NOW.timestamp)
    earlier.count("edits", 5)
    here.count("edits", 2)
    other.count("edits", 3)
    await earlier.flush()
    await other.flush()
    read = await here.read(period="hour", last=3, types=("edits",))
    assert [count for _, count in read["edits"]] == [0, 5, 5]
    assert read["edits"][-1][0] == datetime(2026, 12, 7, 4, tzinfo=UTC)


def test_period_keys() -> None:
    assert period_key("hour", NOW) == "hour.2026-12-07T04"
    assert period_key("day", NOW) == "day.2026-12-07"
    assert [key for key, _ in periods_back("day", 2, NOW)] == ["day.2026-12-06", "day.2026-12-07"]


@given(st.booleans(), st.none() | st.integers(0, 100))
def test_flag_rules_round_trip(enabled: bool, rollout: int | None) -> None:
    rule = FlagRule(enabled, rollout)
    assert FlagRule.decode(rule.encode()) == rule


@given(st.binary(max_size=12))
def test_any_stored_bytes_decode_to_a_rule_or_a_value_error(raw: bytes) -> None:
    try:
        rule = FlagRule.decode(raw)
    except ValueError:
        return
    assert FlagRule.decode(rule.encode()) == rule
    assert rule.rollout is None or 0 <= rule.rollout <= 100
