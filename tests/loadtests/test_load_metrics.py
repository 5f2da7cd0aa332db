"""Joining sends and deliveries that arrive from several workers, in any order."""

from __future__ import annotations

import math

import pytest

from loadtests.metrics import Collector, LatencySummary, percentile
from loadtests.plan import Batch, EditRecords


def batch(
    sends: list[tuple[int, int, int, float]], deliveries: list[tuple[int, int, int, float]]
) -> Batch:
    sent = EditRecords()
    for row in sends:
        sent.add(*row)
    received = EditRecords()
    for row in deliveries:
        received.add(*row)
    return Batch(worker=0, sent=0.0, connected=0, sends=sent, deliveries=received, frames=0)


def test_fanout_latency_is_measured_to_the_last_receiver_whatever_the_order() -> None:
    collector = Collector()
    collector.start(100.0, 10.0, {0: 3})
    # Two deliveries arrive (from other workers) before the writer's send is known.
    collector.add(batch([], [(0, 7, 0, 100.010), (0, 7, 0, 100.030)]))
    collector.add(batch([(0, 7, 0, 100.000)], [(0, 7, 0, 100.020)]))
    assert collector.fanout_latencies == [pytest.approx(0.030)]
    assert sorted(collector.delivery_latencies) == pytest.approx([0.010, 0.020, 0.030])
    assert collector.bins[0].edits == 1
    assert collector.bins[0].deliveries == 3
    assert collector.delivery_errors() == {}


def test_lost_duplicate_and_unmatched_deliveries_are_errors() -> None:
    collector = Collector()
    collector.start(0.0, 5.0, {0: 2, 1: 1})
    collector.add(
        batch(
            [(0, 1, 0, 0.5), (1, 2, 0, 0.5)],
            [(0, 1, 0, 0.6), (1, 2, 0, 0.6), (1, 2, 0, 0.7), (1, 9, 9, 0.8)],
        )
    )
    assert collector.delivery_errors() == {
        "lost_delivery": 1,
        "duplicate_delivery": 1,
        "unmatched_delivery": 1,
    }
    assert collector.expected_deliveries() == 3
    assert len(collector.fanout_latencies) == 1


def test_percentiles_interpolate_and_summaries_are_in_milliseconds() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))
    summary = LatencySummary.of([0.001 * value for value in range(1, 101)])
    assert summary.count == 100
    assert summary.p50 == pytest.approx(50.5)
    assert summary.max == pytest.approx(100.0)
    assert LatencySummary.of([]).to_json()["p99"] is None
