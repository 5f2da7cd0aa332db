"""Latency histograms with fixed buckets, and the process's own.

A :class:`Histogram` is a list of counts, one per bucket, and a sum: :meth:`Histogram.observe`
is one ``bisect`` and two additions, no allocation of its own, so the code that does the work
(a group commit, a fan-out, a call to Redis) records its duration itself and the metrics
collector (``server/ops/metrics.py``) reads the counts when it is scraped. It lives in
``persistence/``, the lowest package whose code is timed, so that the adapters and the
server share it.

The histograms below are process-wide, like the process's CPU time: every app of the
process adds to them (the tests run several). They are updated on the event loop's thread
only (the SQLite writer observes its commits when their results reach the loop), so no
increment is lost to a race.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import pairwise
from time import perf_counter
from typing import Final

from persistence.errors import StorageClosed, StorageConflict, StorageError

# Seconds: from half a millisecond (a Redis call on loopback, a fan-out to a few clients)
# to ten seconds (a stalled fsync, a dependency timing out).
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Histogram:
    """Counts of observations per bucket (``value <= bound``, Prometheus' ``le``), plus
    one for everything above the last bound, and the sum of the observed values."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        """Raises ValueError unless ``bounds`` are finite and strictly increasing."""
        bounds = tuple(float(bound) for bound in bounds)
        if not bounds:
            raise ValueError("a histogram needs at least one bucket bound")
        if not all(math.isfinite(bound) for bound in bounds):
            raise ValueError("bucket bounds must be finite (+Inf is always the last bucket)")
        if any(low >= high for low, high in pairwise(bounds)):
            raise ValueError("bucket bounds must be strictly increasing")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (seconds, for latencies)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at or below it)`` per bucket, ending with ``+inf``
        (the count of every observation): the shape Prometheus exposes."""
        found: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            found.append((bound, running))
        return found


class DependencyCalls:
    """The calls made to one service: their latencies and how many raised."""

    __slots__ = ("errors", "latency")

    def __init__(self) -> None:
        self.latency = Histogram()
        self.errors = 0

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Time the block as one call: its latency whatever happens, and an error if it
        raises a :class:`~persistence.errors.StorageError` (the adapters' translation of the
        driver's errors) other than a :class:`~persistence.errors.StorageConflict` (a
        duplicate key is an answer, often expected) or a
        :class:`~persistence.errors.StorageClosed` (a call after our own close). A ValueError
        for a caller's bad value, or a cancellation, is not the service's failure either."""
        start = perf_counter()
        try:
            yield
        except (StorageConflict, StorageClosed):
            raise
        except StorageError:
            self.errors += 1
            raise
        finally:
            self.latency.observe(perf_counter() - start)


# The services the adapters call, by the name the readiness checks use.
DEPENDENCIES: Final = {name: DependencyCalls() for name in ("redis", "postgres", "mongo")}
# Durable journal writes: the SQLite writer's group commits (embedded), the appends to the
# Redis stream (service mode).
JOURNAL_COMMITS: Final = {name: Histogram() for name in ("sqlite", "redis")}
# From an update frame received to the last write of its fan-out (server/realtime/rooms.py).
FANOUT: Final = Histogram()
