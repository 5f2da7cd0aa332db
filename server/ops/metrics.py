"""Prometheus metrics, read at scrape time from the counters the server already keeps.

A custom collector (:class:`CollabCollector`) asks each component for its ``stats()`` when
``/metrics`` is scraped and turns them into metric families with the prefix ``collab_``:
serving a frame, an edit or a request does no work for the metrics beyond the plain integer
increments of the code that handles it (the components count as they did before there were
metrics; the sockets' traffic in :data:`server.ops.counters.traffic`). The latencies are
fixed-bucket histograms (:mod:`persistence.latency`) that the timed code fills itself: one
clock read per update received and one per fan-out, two per journal commit and per call to
a service. Every family carries the label ``node``. docs/operations.md lists them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from persistence.latency import DEPENDENCIES, FANOUT, JOURNAL_COMMITS, Histogram
from server.ops import counters
from server.ops.health import Readiness

PREFIX: Final = "collab_"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

Stats = Callable[[], Mapping[str, Any]]

# The help text of the features' gauges (``Sources.extra``).
EXTRA_HELP: Final = {"section_locks_held": "section locks this node knows to be held"}


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the numbers come from: each a ``stats()`` of a component (None: not running
    on this node, e.g. the cluster follower in embedded mode)."""

    node: str
    registry: Stats
    snapshots: Stats
    audit: Stats
    connections: Callable[[], int]
    cluster: Stats | None = None
    store: Stats | None = None
    edits: Stats | None = None
    extra: Mapping[str, Callable[[], float]] = field(default_factory=dict)
    # Features' counters by one label: name -> (help, label, reading of label -> count).
    counted: Mapping[str, tuple[str, str, Callable[[], Mapping[str, int]]]] = field(
        default_factory=dict
    )
    readiness: Readiness | None = None


# (stats key, metric name without prefix, kind, help) for the registry's stats.
_REGISTRY: Final = (
    ("rooms", "rooms", "gauge", "rooms loaded on this node"),
    ("rooms_loaded_total", "rooms_loaded", "counter", "rooms loaded"),
    ("rooms_unloaded_total", "rooms_unloaded", "counter", "rooms unloaded"),
    ("updates_applied_total", "updates_applied", "counter", "CRDT updates applied to rooms"),
    ("updates_merged_total", "updates_merged", "counter", "updates merged into one journal entry"),
    ("frames_broadcast_total", "frames_out", "counter", "frames written to clients by rooms"),
    (
        "updates_refused_too_large_total",
        "updates_refused_too_large",
        "counter",
        "updates refused by the size caps",
    ),
)
_SNAPSHOTS: Final = (
    ("snapshots_written", "snapshot_writes", "counter", "derived-content snapshots written"),
    ("snapshot_failures", "snapshot_failures", "counter", "snapshot writes that failed"),
    ("documents_dirty", "snapshot_documents_dirty", "gauge", "documents waiting for a snapshot"),
    ("documents_failing", "snapshot_documents_failing", "gauge", "documents whose snapshot fails"),
)
_AUDIT: Final = (
    ("queued", "audit_queue_depth", "gauge", "audit and data-access rows waiting to be written"),
    ("written", "audit_rows_written", "counter", "audit rows written"),
    ("access_written", "audit_access_rows_written", "counter", "data-access rows written"),
    ("retries", "audit_retries", "counter", "audit batch retries"),
    ("dropped", "audit_rows_dropped", "counter", "audit rows dropped (queue full)"),
    ("rejected", "audit_rows_rejected", "counter", "audit rows the store refused"),
    ("outage_seconds", "audit_outage_seconds", "gauge", "seconds the audit store has been down"),
)
_CLUSTER: Final = (
    ("cluster_documents_followed", "cluster_documents_followed", "gauge", "documents followed"),
    ("cluster_updates_applied", "cluster_updates_applied", "counter", "updates from other nodes"),
    ("cluster_signals_received", "cluster_signals_received", "counter", "signals received"),
    ("cluster_signals_sent", "cluster_signals_sent", "counter", "signals sent"),
)
_STORE: Final = (
    ("spooled_now", "spool_depth", "gauge", "updates in the Redis-outage spool"),
    ("spooled_total", "spooled", "counter", "updates spooled during Redis outages"),
    ("drained_total", "spool_drained", "counter", "updates moved from the spool to Redis"),
)
_EDITS: Final = (
    ("tally_pending", "edit_tallies_pending", "gauge", "edit tallies not yet written"),
    ("tally_emitted", "edit_tallies", "counter", "edit tally rows emitted"),
)


def _family(kind: str, name: str, doc: str) -> GaugeMetricFamily | CounterMetricFamily:
    if kind == "counter":
        return CounterMetricFamily(PREFIX + name, doc, labels=["node"])
    return GaugeMetricFamily(PREFIX + name, doc, labels=["node"])


def _table(
    node: str, stats: Mapping[str, Any], table: tuple[tuple[str, str, str, str], ...]
) -> Iterator[Metric]:
    for key, name, kind, doc in table:
        value = stats.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            family = _family(kind, name, doc)
            family.add_metric([node], float(value))
            yield family


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


def _histogram(
    name: str, doc: str, node: str, rows: Iterable[tuple[tuple[str, ...], Histogram]], *labels: str
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, doc, labels=["node", *labels])
    for values, histogram in rows:
        buckets = [(_le(bound), float(n)) for bound, n in histogram.cumulative()]
        family.add_metric([node, *values], buckets, histogram.sum)
    return family


def _latencies(node: str) -> Iterator[Metric]:
    """The process's latency histograms (:mod:`persistence.latency`) and the errors of the
    calls to each service."""
    yield _histogram(
        "journal_commit_seconds",
        "durable journal writes: SQLite group commits, Redis stream appends",
        node,
        (((journal,), histogram) for journal, histogram in sorted(JOURNAL_COMMITS.items())),
        "journal",
    )
    yield _histogram(
        "fanout_seconds",
        "from a client's update received to the last write of its fan-out",
        node,
        [((), FANOUT)],
    )
    yield _histogram(
        "dependency_call_seconds",
        "calls to Redis, PostgreSQL and MongoDB",
        node,
        (((name,), calls.latency) for name, calls in sorted(DEPENDENCIES.items())),
        "dependency",
    )
    errors = CounterMetricFamily(
        PREFIX + "dependency_call_errors",
        "calls to Redis, PostgreSQL and MongoDB that failed",
        labels=["node", "dependency"],
    )
    for name, calls in sorted(DEPENDENCIES.items()):
        errors.add_metric([node, name], float(calls.errors))
    yield errors


def _dependencies(node: str, readiness: Readiness) -> Iterator[Metric]:
    """The configured services as the last readiness check saw them (``/readyz``, which
    probes ask every few seconds; nothing is checked for the scrape)."""
    up = GaugeMetricFamily(
        PREFIX + "dependency_up",
        "1 when the last readiness check reached the service",
        labels=["node", "dependency"],
    )
    seconds = GaugeMetricFamily(
        PREFIX + "dependency_check_seconds",
        "how long the last readiness check of the service took",
        labels=["node", "dependency"],
    )
    failures = CounterMetricFamily(
        PREFIX + "dependency_check_failures",
        "readiness checks of the service that failed",
        labels=["node", "dependency"],
    )
    for name, result in sorted(readiness.last.items()):
        up.add_metric([node, name], 1.0 if result.ok else 0.0)
        seconds.add_metric([node, name], result.seconds)
        failures.add_metric([node, name], float(readiness.failures[name]))
    yield up
    yield seconds
    yield failures


class CollabCollector(Collector):
    """Reads :class:`Sources` when scraped; holds no state of its own."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources
        self._process = psutil.Process(os.getpid())
        self._started = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        sources = self._sources
        node = sources.node
        yield from _table(node, sources.registry(), _REGISTRY)
        connections = GaugeMetricFamily(
            PREFIX + "connections", "open WebSocket connections", labels=["node"]
        )
        connections.add_metric([node], float(sources.connections()))
        yield connections
        yield from _table(node, sources.snapshots(), _SNAPSHOTS)
        yield from _table(node, sources.audit(), _AUDIT)
        for stats, table in (
            (sources.cluster, _CLUSTER),
            (sources.store, _STORE),
            (sources.edits, _EDITS),
        ):
            if stats is not None:
                yield from _table(node, stats(), table)
        yield from self._counters(node)
        for name, read in sources.extra.items():
            doc = EXTRA_HELP.get(name, name.replace("_", " "))
            gauge = GaugeMetricFamily(PREFIX + name, doc, labels=["node"])
            gauge.add_metric([node], float(read()))
            yield gauge
        for name, (help_text, label, reading) in sources.counted.items():
            counter = CounterMetricFamily(PREFIX + name, help_text, labels=["node", label])
            for value, count in sorted(reading().items()):
                counter.add_metric([node, value], float(count))
            yield counter
        if sources.readiness is not None:
            yield from _dependencies(node, sources.readiness)
        yield from _latencies(node)
        yield from self._process_metrics(node)

    def _counters(self, node: str) -> Iterator[Metric]:
        closes = CounterMetricFamily(
            PREFIX + "closes",
            "WebSockets the server closed, by close code",
            labels=["node", "code"],
        )
        for code, count in sorted(counters.closes.items()):
            closes.add_metric([node, str(code)], float(count))
        yield closes
        client_closes = CounterMetricFamily(
            PREFIX + "client_closes",
            "WebSockets the client closed, by the code of its close frame (1006: lost)",
            labels=["node", "code"],
        )
        for code, count in sorted(counters.client_closes.items()):
            client_closes.add_metric([node, str(code)], float(count))
        yield client_closes
        traffic = counters.traffic
        for name, value, doc in (
            ("frames_in", traffic.frames_in, "WebSocket messages received"),
            ("bytes_in", traffic.bytes_in, "payload bytes received on WebSockets"),
            ("bytes_out", traffic.bytes_out, "payload bytes sent on WebSockets, per recipient"),
        ):
            counter = CounterMetricFamily(PREFIX + name, doc, labels=["node"])
            counter.add_metric([node], float(value))
            yield counter
        refusals = CounterMetricFamily(
            PREFIX + "refusals",
            "requests and sockets refused, by HTTP status and title",
            labels=["node", "status", "title"],
        )
        auth = CounterMetricFamily(
            PREFIX + "auth_failures",
            "authentication and authorization failures, by reason",
            labels=["node", "reason"],
        )
        limited = CounterMetricFamily(
            PREFIX + "rate_limited", "actions refused by a rate limit", labels=["node"]
        )
        limited_count = 0
        for (status, title), count in sorted(counters.refusals.items()):
            refusals.add_metric([node, str(status), title], float(count))
            if status == 429:
                limited_count += count
        for reason, count in sorted(counters.auth_failures.items()):
            auth.add_metric([node, reason], float(count))
        limited.add_metric([node], float(limited_count))
        yield refusals
        yield auth
        yield limited

    def _process_metrics(self, node: str) -> Iterator[Metric]:
        with self._process.oneshot():
            cpu = self._process.cpu_times()
            rss = self._process.memory_info().rss
        seconds = CounterMetricFamily(
            PREFIX + "process_cpu_seconds", "CPU time of this process", labels=["node"]
        )
        seconds.add_metric([node], cpu.user + cpu.system)
        yield seconds
        memory = GaugeMetricFamily(
            PREFIX + "process_resident_bytes", "resident memory of this process", labels=["node"]
        )
        memory.add_metric([node], float(rss))
        yield memory
        uptime = GaugeMetricFamily(
            PREFIX + "uptime_seconds", "seconds since the app started", labels=["node"]
        )
        uptime.add_metric([node], time.monotonic() - self._started)
        yield uptime


class Metrics:
    """The app's metrics: a registry of its own holding the collector (several apps in one
    process, as in the tests, do not mix), rendered in the text exposition format."""

    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CollabCollector(sources))

    def render(self) -> bytes:
        return generate_latest(self.registry)
