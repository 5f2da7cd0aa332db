"""What the app hands to the metrics and the readiness checks: the components that keep
counters (read as their ``stats()``) and the services a node needs to be ready.

Typed as protocols of their own (what is read, nothing more), so this folder imports no
layer above the vocabulary; ``server.app.Collab`` satisfies :class:`Observed`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

from server.ops.health import Readiness
from server.ops.metrics import Metrics, Sources
from server.settings import Settings

PROBE_DOCUMENT = "readyz-probe"


class HasStats(Protocol):
    def stats(self) -> Mapping[str, Any]: ...


class HasConnections(Protocol):
    @property
    def connections(self) -> Collection[object]: ...


class Observed(Protocol):
    @property
    def node_id(self) -> str: ...
    @property
    def registry(self) -> HasStats: ...
    @property
    def snapshots(self) -> HasStats: ...
    @property
    def audit(self) -> HasStats: ...
    @property
    def edits(self) -> HasStats | None: ...
    @property
    def cluster(self) -> HasStats | None: ...
    @property
    def hub(self) -> HasConnections: ...
    @property
    def store(self) -> object: ...


Counted = tuple[str, str, Callable[[], Mapping[str, int]]]


def metrics_of(
    collab: Observed,
    extra: Mapping[str, Callable[[], float]] | None = None,
    counted: Mapping[str, Counted] | None = None,
    readiness: Readiness | None = None,
) -> Metrics:
    """The metrics of one app, read from its components at scrape time; ``extra``: gauges
    of features (name without the prefix -> a reading), ``counted``: their counters by one
    label (name -> help, label, reading)."""
    store = collab.store
    store_stats: Callable[[], Mapping[str, Any]] | None = getattr(store, "stats", None)
    hub = collab.hub
    return Metrics(
        Sources(
            node=collab.node_id,
            registry=collab.registry.stats,
            snapshots=collab.snapshots.stats,
            audit=collab.audit.stats,
            connections=lambda: len(hub.connections),
            cluster=collab.cluster.stats if collab.cluster is not None else None,
            store=store_stats,
            edits=collab.edits.stats if collab.edits is not None else None,
            extra=dict(extra or {}),
            counted=dict(counted or {}),
            readiness=readiness,
        )
    )


def check_dependencies(
    readiness: Readiness,
    settings: Settings,
    *,
    redis: Callable[[], Awaitable[object]],
    postgres: Callable[[], Awaitable[object]],
    mongo: Callable[[], Awaitable[object]],
) -> None:
    """Make the configured services (those whose URL is set) part of readiness: each probe
    is one cheap call that raises when its service is down."""
    readiness.clear_checks()
    if settings.redis_url:
        readiness.add_check("redis", redis)
    if settings.postgres_url:
        readiness.add_check("postgres", postgres)
    if settings.mongo_url:
        readiness.add_check("mongo", mongo)
