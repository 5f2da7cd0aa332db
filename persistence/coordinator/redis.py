"""Redis adapter of :class:`persistence.coordinator.ports.Coordinator` on redis-py's asyncio client.

One :class:`RedisCoordinator` owns a blocking connection pool (bounded; a caller waits up to
``pool_timeout`` for a free connection), socket and connect timeouts, and redis-py's
``Retry`` with exponential backoff and jitter: a command that fails on a connection error or
a timeout is sent again on a fresh connection a bounded number of times, which is also how
the adapter reconnects after a Redis restart. Every operation of the port is idempotent or
harmless when re-sent (a re-sent journal append may store the update twice; CRDT replay is
idempotent). What still fails is translated at the edge, into :mod:`persistence.errors`
(:func:`persistence.coordinator.redis_link.translate_errors`). The atomic operations are Lua scripts
(:mod:`persistence.coordinator.redis_lua`);
the key layout is documented in ``docs/redis.md``.

The key families live in their own modules (:mod:`~persistence.coordinator.redis_collab`,
:mod:`~persistence.coordinator.redis_journal`, :mod:`~persistence.coordinator.redis_kv`), which
share a :class:`~persistence.coordinator.redis_link.RedisLink`; this module imports them and
owns the client.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from persistence.coordinator.redis_cluster_presence import (
    RedisClusterCursors,
    RedisClusterPresence,
)
from persistence.coordinator.redis_collab import RedisCursors, RedisLocks, RedisPresence
from persistence.coordinator.redis_journal import RedisJournal
from persistence.coordinator.redis_kv import (
    RedisCache,
    RedisFlags,
    RedisNotifications,
    RedisRateLimits,
    RedisSessions,
    RedisStats,
)
from persistence.coordinator.redis_link import Client, Clock, RedisLink
from persistence.coordinator.redis_replies import text
from persistence.coordinator.values import DurabilityReport, echo
from persistence.errors import StorageClosed, StorageError, StorageUnavailable

# -- the coordinator -------------------------------------------------------------------------


def _check_prefix(prefix: object) -> str:
    if (
        not isinstance(prefix, str)
        or len(prefix) > 64
        or not all(c.isascii() and (c.isalnum() or c in "_.:-") for c in prefix)
    ):
        raise ValueError(
            f"key prefix must be up to 64 characters of [A-Za-z0-9_.:-]: {echo(prefix)}"
        )
    return prefix


SIGNALS_MAX_LEN = 10_000


class RedisCoordinator:
    """The coordinator on a Redis server (standalone, or a primary with replicas) or on a
    Redis Cluster.

    Open it with :meth:`from_url`; it owns its connection pool and closes it in ``aclose``.
    ``prefix`` is put before every key (empty in production: the keys are then exactly those
    of ``docs/redis.md``; the tests use one per run). With a
    :class:`~redis.asyncio.cluster.RedisCluster` client, the keys carry their document (or
    node) as a hash tag and presence runs on per-slot scripts (``docs/redis.md``, "Redis
    Cluster"); journal appends, freezes and lock changes then return only once
    ``wait_replicas`` replicas have them.
    """

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "",
        clock: Clock = time.time,
        block_cap: float = 2.5,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        cluster = isinstance(client, RedisCluster)
        self.cluster = cluster
        self._link = RedisLink(
            client,
            _check_prefix(prefix),
            clock,
            block_cap,
            cluster=cluster,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
        )
        self.presence: RedisPresence | RedisClusterPresence
        self.cursors: RedisCursors | RedisClusterCursors
        if cluster:
            self.presence = RedisClusterPresence(self._link)
            self.cursors = RedisClusterCursors(self._link)
        else:
            self.presence = RedisPresence(self._link)
            self.cursors = RedisCursors(self._link)
        self.locks = RedisLocks(self._link)
        self.journal = RedisJournal(self._link, guarded=True)
        self.signals = RedisJournal(self._link, stream="signals", max_len=SIGNALS_MAX_LEN)
        self.cache = RedisCache(self._link)
        self.sessions = RedisSessions(self._link)
        self.flags = RedisFlags(self._link)
        self.rate_limits = RedisRateLimits(self._link)
        self.stats = RedisStats(self._link)
        self.notifications = RedisNotifications(self._link)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "",
        max_connections: int = 64,
        pool_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        retries: int = 3,
        clock: Clock = time.time,
    ) -> RedisCoordinator:
        """A coordinator on ``redis://`` / ``rediss://`` / ``unix://`` ``url``. No I/O yet:
        connections open on first use (``durability()`` is a good first call).

        A command failing on a connection error or a timeout is retried ``retries`` times
        with exponential backoff (10 ms doubling, capped at 500 ms, with jitter), so an
        outage surfaces as StorageUnavailable after about a second.
        """
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), retries),
            health_check_interval=30,
            protocol=2,
        )
        client = Redis.from_pool(pool)
        return cls(client, prefix=prefix, clock=clock, block_cap=socket_timeout / 2)

    @classmethod
    def cluster_from_url(
        cls,
        url: str,
        *,
        prefix: str = "",
        max_connections: int = 512,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        retries: int = 3,
        wait_replicas: int = 1,
        wait_timeout: float = 1.0,
        clock: Clock = time.time,
    ) -> RedisCoordinator:
        """A coordinator on the Redis Cluster one of whose nodes ``url`` names (the client
        discovers the others, and follows MOVED / ASK redirections and failovers). No I/O
        yet. ``max_connections`` is per cluster node: the follower of the change and signal
        streams holds at most one blocked connection per wake group it has documents in
        (:data:`~persistence.coordinator.redis_wakes.WAKE_GROUPS` per stream kind, spread
        over the masters), whatever the number of documents. A command failing on a
        connection error, a timeout or ``CLUSTERDOWN`` / ``TRYAGAIN`` is retried after the
        client refreshed its view of the slots, with exponential backoff (10 ms doubling,
        capped at 500 ms, with jitter); a failover (about the cluster's node timeout plus an
        election) outlasting that surfaces as StorageUnavailable.

        ``wait_replicas``: how many replicas must acknowledge a journal append, a freeze or a
        lock change (``WAIT``) before it returns, so that a master killed right after loses
        nothing a client was told; 0 for a cluster without replicas.
        """
        client = RedisCluster.from_url(
            url,
            max_connections=max_connections,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), retries),
            protocol=2,
        )
        return cls(
            client,
            prefix=prefix,
            clock=clock,
            block_cap=socket_timeout / 2,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
        )

    async def durability(self) -> DurabilityReport:
        """AOF settings from ``CONFIG GET``; from ``INFO persistence`` where CONFIG is
        disabled (managed Redis), which does not tell the fsync policy."""
        client = self._link.client
        if isinstance(client, RedisCluster):
            return await self._cluster_durability(client)
        try:
            with self._link.edge("config get"):
                config = await client.config_get("append*")
        except StorageError as exc:
            if isinstance(exc, StorageUnavailable | StorageClosed):
                raise
            with self._link.edge("info persistence"):
                info = await client.info("persistence")
            enabled = bool(int(info.get("aof_enabled", 0)))
            return DurabilityReport("redis", enabled, None, "CONFIG GET refused; INFO persistence")
        values = {text(k, "config"): text(v, "config") for k, v in config.items()}
        enabled = values.get("appendonly") == "yes"
        fsync = values.get("appendfsync")
        return DurabilityReport(
            "redis", enabled, fsync, f"appendonly={values.get('appendonly')} appendfsync={fsync}"
        )

    async def _cluster_durability(self, client: RedisCluster) -> DurabilityReport:
        """Durable if every master runs AOF with ``appendfsync always``."""
        with self._link.edge("config get"):
            replies: Any = await client.config_get("append*", target_nodes=RedisCluster.PRIMARIES)
        if not isinstance(replies, dict) or not replies:
            raise StorageError("redis cluster config get: no reply")
        # One reply per master when there are several; the reply itself when one.
        per_node: list[Any] = (
            list(replies.values())
            if all(isinstance(v, dict) for v in replies.values())
            else [replies]
        )
        settings = [{text(k, "config"): text(v, "config") for k, v in c.items()} for c in per_node]
        enabled = all(values.get("appendonly") == "yes" for values in settings)
        fsyncs = {values.get("appendfsync") for values in settings}
        fsync = fsyncs.pop() if len(fsyncs) == 1 else None
        detail = f"cluster of {len(settings)} masters: appendonly={enabled} appendfsync={fsync}"
        return DurabilityReport("redis", enabled, fsync, detail)

    async def aclose(self) -> None:
        """Close the pool (connections in use are closed too). Idempotent."""
        await self.journal.aclose()
        await self.signals.aclose()
        await self._link.aclose()

    async def __aenter__(self) -> RedisCoordinator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
