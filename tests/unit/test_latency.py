"""persistence/latency.py: fixed-bucket histograms and the dependency-call counts, and how
the metrics collector exposes them."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from persistence.errors import StorageClosed, StorageConflict, StorageUnavailable
from persistence.latency import LATENCY_BUCKETS, DependencyCalls, Histogram


def test_observations_land_in_the_first_bucket_that_holds_them() -> None:
    histogram = Histogram([0.1, 1.0, 10.0])
    for value in (0.05, 0.1, 0.5, 1.0, 20.0, 0.0):
        histogram.observe(value)
    # Prometheus' ``le``: a value equal to a bound is in that bound's bucket.
    assert histogram.counts == [3, 2, 0, 1]
    assert histogram.cumulative() == [(0.1, 3), (1.0, 5), (10.0, 5), (math.inf, 6)]
    assert histogram.count == 6
    assert histogram.sum == pytest.approx(21.65)


@given(st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False), max_size=50))
def test_cumulative_counts_never_decrease_and_end_with_every_observation(
    values: list[float],
) -> None:
    histogram = Histogram()
    for value in values:
        histogram.observe(value)
    running = [count for _, count in histogram.cumulative()]
    assert running == sorted(running)
    assert running[-1] == len(values) == histogram.count
    for bound, count in histogram.cumulative():
        assert count == sum(1 for value in values if value <= bound)


@pytest.mark.parametrize(
    "bounds", [[], [1.0, 1.0], [2.0, 1.0], [0.1, math.inf], [math.nan], [0.1, -math.inf]]
)
def test_bad_bounds_are_refused(bounds: list[float]) -> None:
    with pytest.raises(ValueError, match="bucket"):
        Histogram(bounds)


def test_the_default_buckets_span_a_millisecond_to_seconds() -> None:
    assert LATENCY_BUCKETS[0] <= 0.001
    assert LATENCY_BUCKETS[-1] >= 5.0
    assert len(Histogram().counts) == len(LATENCY_BUCKETS) + 1


def test_a_timed_call_counts_its_latency_and_storage_errors_only() -> None:
    calls = DependencyCalls()
    with calls.timed():
        pass
    with pytest.raises(StorageUnavailable), calls.timed():
        raise StorageUnavailable("down")
    # A caller's bad value, or a duplicate key, is not the service failing.
    with pytest.raises(ValueError, match="bad"), calls.timed():
        raise ValueError("bad")
    with pytest.raises(StorageConflict), calls.timed():
        raise StorageConflict("exists")
    with pytest.raises(StorageClosed), calls.timed():
        raise StorageClosed("closed by us")
    assert calls.latency.count == 5
    assert calls.errors == 1
    assert calls.latency.sum >= 0.0


def test_the_collector_exposes_the_histograms_in_the_text_format() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from persistence.latency import DEPENDENCIES, FANOUT, JOURNAL_COMMITS
    from server.ops.metrics import CollabCollector, Sources

    before_fanout = FANOUT.count
    FANOUT.observe(0.003)
    JOURNAL_COMMITS["sqlite"].observe(0.002)
    DEPENDENCIES["redis"].errors += 1
    sources = Sources(
        node="n",
        registry=dict,
        snapshots=dict,
        audit=dict,
        connections=lambda: 0,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CollabCollector(sources))
    families = {
        family.name: family
        for family in text_string_to_metric_families(generate_latest(registry).decode())
    }
    fanout = families["collab_fanout_seconds"]
    assert fanout.type == "histogram"
    samples = {(s.name, s.labels.get("le")): s.value for s in fanout.samples}
    assert samples[("collab_fanout_seconds_count", None)] == before_fanout + 1
    assert samples[("collab_fanout_seconds_bucket", "+Inf")] == before_fanout + 1
    assert samples[("collab_fanout_seconds_bucket", "0.005")] >= 1
    journal = {
        s.labels["journal"]
        for s in families["collab_journal_commit_seconds"].samples
        if s.name.endswith("_count")
    }
    assert journal == {"sqlite", "redis"}
    errors = {
        s.labels["dependency"]: s.value for s in families["collab_dependency_call_errors"].samples
    }
    assert set(errors) == {"redis", "postgres", "mongo"}
    assert errors["redis"] >= 1
    calls = families["collab_dependency_call_seconds"]
    assert {s.labels["dependency"] for s in calls.samples} == {"redis", "postgres", "mongo"}
