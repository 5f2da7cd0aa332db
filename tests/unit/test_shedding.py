"""The join gate: joins in flight up to the capacity, then refusals with a jittered wait
that grows with the overload; the count comes back down as joins end."""

from __future__ import annotations

import pytest

from server.realtime.sessions import Refusal
from server.realtime.shedding import MAX_RETRY_AFTER, MIN_RETRY_AFTER, JoinGate


def test_admits_up_to_the_capacity_then_refuses_until_one_leaves() -> None:
    gate = JoinGate(2)
    assert gate.enter() is None
    assert gate.enter() is None
    wait = gate.enter()
    assert wait is not None
    assert MIN_RETRY_AFTER <= wait <= MIN_RETRY_AFTER + MAX_RETRY_AFTER
    assert gate.stats() == {"joins_in_flight": 2, "joins_shed": 1}
    gate.leave()
    assert gate.enter() is None
    assert gate.in_flight == 2


class HighEnd:
    """A ``uniform`` that records each window and answers its upper end."""

    def __init__(self) -> None:
        self.highs: list[float] = []

    def __call__(self, low: float, high: float) -> float:
        self.highs.append(high)
        return high


def test_the_wait_window_grows_with_the_overload_and_is_capped() -> None:
    uniform = HighEnd()
    highs = uniform.highs
    gate = JoinGate(1, rate=10.0, uniform=uniform)
    assert gate.enter() is None
    for _ in range(1000):
        assert gate.enter() is not None
    assert highs[0] == MIN_RETRY_AFTER + MIN_RETRY_AFTER  # the first refusals: a short window
    assert highs[50] == pytest.approx(MIN_RETRY_AFTER + 5.1)
    assert highs[-1] == MIN_RETRY_AFTER + MAX_RETRY_AFTER
    assert highs == sorted(highs)


def test_the_window_starts_small_again_once_the_storm_is_over() -> None:
    uniform = HighEnd()
    highs = uniform.highs
    gate = JoinGate(1, rate=1.0, uniform=uniform)
    assert gate.enter() is None
    for _ in range(10):
        gate.enter()
    gate.leave()
    assert gate.enter() is None
    gate.enter()
    assert highs[-1] == MIN_RETRY_AFTER + MIN_RETRY_AFTER
    assert gate.stats()["joins_shed"] == 11


def test_capacity_zero_never_refuses_and_negative_is_an_error() -> None:
    gate = JoinGate(0)
    assert all(gate.enter() is None for _ in range(10_000))
    with pytest.raises(ValueError, match="capacity"):
        JoinGate(-1)


def test_a_shed_refusal_carries_retry_after() -> None:
    refusal = Refusal(503, "overloaded", "retry later", retry_after=2.2)
    assert refusal.headers() == {"Retry-After": "3"}
    assert refusal.body() == {
        "type": "about:blank",
        "title": "overloaded",
        "status": 503,
        "detail": "retry later",
        "retryAfter": 2.2,
    }
    assert Refusal(404, "not found").headers() == {}
    assert "retryAfter" not in Refusal(404, "not found").body()
