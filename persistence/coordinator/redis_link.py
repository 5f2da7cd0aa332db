"""What every family module of the Redis coordinator adapter shares: :class:`RedisLink` (the
client, the key prefix, the Lua scripts, the clock) and the translation of redis-py's errors
into :mod:`persistence.errors` at the edge.

The family modules (:mod:`~persistence.coordinator.redis_collab`,
:mod:`~persistence.coordinator.redis_journal`, :mod:`~persistence.coordinator.redis_kv`)
import this module; :mod:`persistence.coordinator.redis` imports them and builds the link.
Nothing here imports a family, so the adapter has no import circle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from persistence.coordinator import redis_cluster_lua, redis_lua
from persistence.coordinator.redis_replies import text
from persistence.coordinator.values import FIRST_ENTRY_ID
from persistence.errors import StorageClosed, StorageCorrupted, StorageError, StorageUnavailable
from persistence.latency import DEPENDENCIES

Clock = Callable[[], float]
REPLICA_RECHECK: Final = 1.0  # seconds between two ROLE questions to one master
Client = Redis | RedisCluster
# Replies that mean "the server cannot serve this now": retrying later may succeed.
_TRANSIENT_REPLIES: Final = (
    "LOADING", "BUSY", "MISCONF", "OOM", "READONLY", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS",
)  # fmt: skip
_CORRUPT_REPLIES: Final = ("WRONGTYPE", "CORRUPT")
_SCRIPTS: Final = (
    "PRESENCE_JOIN",
    "PRESENCE_LEAVE",
    "PRESENCE_HEARTBEAT",
    "PRESENCE_DROP_NODE",
    "PRESENCE_READ",
    "CURSOR_SET",
    "LOCK_ACQUIRE",
    "LOCK_RENEW",
    "LOCK_RELEASE",
    "LOCK_GET",
    "LOCK_HELD",
    "RATE_HIT",
    "STATS_INCR",
    "NOTIFY_PUSH",
    "JOURNAL_APPEND",
)
_CALLS: Final = DEPENDENCIES["redis"]
_CLUSTER_SCRIPTS: Final = (
    "DOC_JOIN", "DOC_LEAVE", "DOC_REFRESH", "DOC_DROP", "DOC_READ", "DOC_CURSOR_SET",
    "NODE_ALIVE", "NODE_DROP",
)  # fmt: skip


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Translate redis-py's exceptions raised inside the block into persistence.errors:
    connection errors and timeouts, and the replies that mean "not now" (``LOADING``,
    ``BUSY``, ``READONLY``...), are StorageUnavailable; ``WRONGTYPE`` and corruption replies
    StorageCorrupted; any other Redis error StorageError. Each is chained to its cause."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise StorageUnavailable(f"redis {what}: {exc}") from exc
    except (
        redis_errors.ClusterError,
        redis_errors.TryAgainError,
        redis_errors.SlotNotCoveredError,
    ) as exc:
        # A failover or a resharding in progress: the slot has no reachable master yet, or
        # the redirections (MOVED, ASK) did not settle within the client's tries.
        raise StorageUnavailable(f"redis cluster {what}: {exc}") from exc
    except redis_errors.RedisClusterException as exc:
        raise StorageError(f"redis cluster {what}: {exc}") from exc
    except redis_errors.ResponseError as exc:
        message = str(exc)
        if message.startswith(_TRANSIENT_REPLIES):
            raise StorageUnavailable(f"redis {what}: {message}") from exc
        if message.startswith(_CORRUPT_REPLIES) or "CORRUPT" in message:
            raise StorageCorrupted(f"redis {what}: {message}") from exc
        raise StorageError(f"redis {what}: {message}") from exc
    except redis_errors.RedisError as exc:
        raise StorageError(f"redis {what}: {exc}") from exc


class RedisLink:
    """What every sub-adapter shares: the client, the key prefix, the scripts, the clock.

    ``block_cap`` is the longest a blocking read may wait in one command (below the socket
    timeout). ``closing`` is set when the coordinator closes, so blocked reads return.

    ``cluster``: the client is a :class:`~redis.asyncio.cluster.RedisCluster`. Keys of one
    document (or one node) then carry it as a hash tag (:meth:`tagged`), so every script and
    multi-key command of the adapter stays in one slot; and the writes that must survive a
    failover (:meth:`replicated`) wait until ``wait_replicas`` replicas have them.
    """

    def __init__(
        self,
        client: Client,
        prefix: str,
        clock: Clock,
        block_cap: float,
        *,
        cluster: bool = False,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock
        self.block_cap = block_cap
        self.cluster = cluster
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._replica_counts: dict[str, tuple[int, float]] = {}
        self.closed = False
        self.closing = asyncio.Event()
        self.scripts = {name: client.register_script(getattr(redis_lua, name)) for name in _SCRIPTS}
        if cluster:
            for name in _CLUSTER_SCRIPTS:
                self.scripts[name] = client.register_script(getattr(redis_cluster_lua, name))

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def tagged(self, family: str, tag: str, *rest: str) -> str:
        """``family:tag:rest...``; on a cluster ``family:{tag}:rest...``: the braces are a
        Redis Cluster hash tag, so every key of one ``tag`` (a document, a node) maps to the
        same slot."""
        if self.cluster:
            return self.prefix + ":".join((family, "{" + tag + "}", *rest))
        return self.key(family, tag, *rest)

    def slot(self, key: str) -> int:
        """The cluster slot of ``key`` (0 on a single server: everything is together)."""
        if isinstance(self.client, RedisCluster):
            return int(self.client.keyslot(key))
        return 0

    async def on_slot_of(self, key: str, command: Sequence[Any]) -> Any:
        """Run ``command`` (its keys all in ``key``'s slot). On a cluster it is sent to the
        node serving that slot without the client first asking the server where the keys
        of a command like XREAD are (``COMMAND GETKEYS``, a round trip per command); a
        redirection during a resharding is still followed."""
        if not isinstance(self.client, RedisCluster):
            return await self.client.execute_command(*command)  # type: ignore[no-untyped-call]
        _ = await self.client.initialize()  # no-op once done
        node = self.client.get_node_from_key(key)
        return await self.client.execute_command(*command, target_nodes=node)

    async def replicated(self, what: str, key: str, command: Sequence[Any]) -> Any:
        """Run ``command`` (a raw command whose keys are all in ``key``'s slot); on a cluster
        with ``wait_replicas``, send ``WAIT`` after it on the same connection and raise
        StorageUnavailable unless enough replicas acknowledged it within ``wait_timeout``.
        So a write that returned survives its master being killed and a replica promoted
        (AOF ``always`` covers a master restarting). A write that raised may still have been
        applied: the callers' writes are harmless to repeat.

        "Enough" is ``wait_replicas``, or fewer when the master has fewer replicas connected
        (``ROLE``, asked again every ``REPLICA_RECHECK`` seconds): a master whose replica
        died (or a replica just promoted) keeps taking writes, durable in its AOF, as a
        single Redis does; there is then no replica to promote that could lack them."""
        if not isinstance(self.client, RedisCluster) or self.wait_replicas <= 0:
            with self.edge(what):
                return await self.client.execute_command(*command)
        with self.edge(what):
            _ = await self.client.initialize()  # no-op once done: the slot map names the node
            node = self.client.get_node_from_key(key)
            if node is None:
                raise StorageUnavailable(f"redis cluster {what}: no master serves {key!r}")
            wanted = await self._replicas_of(node)
            if wanted == 0:
                return await self.client.execute_command(*command)
            pipe = self.client.pipeline(transaction=False)
            _ = pipe.execute_command(*command)
            _ = pipe.execute_command(
                "WAIT", wanted, int(self.wait_timeout * 1000), target_nodes=node
            )
            result, acknowledged = await pipe.execute()
        if int(acknowledged) < wanted:
            self._replica_counts.pop(node.name, None)
            raise StorageUnavailable(
                f"redis cluster {what}: {acknowledged} of {wanted} replicas "
                f"acknowledged within {self.wait_timeout:g}s"
            )
        return result

    async def _replicas_of(self, node: ClusterNode) -> int:
        """How many replicas a write to ``node`` waits for: ``wait_replicas``, at most the
        replicas connected to it (cached for ``REPLICA_RECHECK`` seconds)."""
        assert isinstance(self.client, RedisCluster)
        now = asyncio.get_running_loop().time()
        cached = self._replica_counts.get(node.name)
        if cached is None or cached[1] <= now:
            role = await self.client.execute_command("ROLE", target_nodes=node)
            connected = len(role[2]) if role and role[0] in (b"master", "master") else 0
            cached = (connected, now + REPLICA_RECHECK)
            self._replica_counts[node.name] = cached
        return min(self.wait_replicas, cached[0])

    @contextmanager
    def edge(self, what: str, *, blocking: bool = False) -> Iterator[None]:
        """:func:`translate_errors` for one operation; StorageClosed once the link is closed.

        Every operation of the adapter passes here once: it is timed as one Redis call
        (``collab_dependency_call_seconds``), and counted as an error if it raises. A
        ``blocking`` read (``XREAD BLOCK``) waits for data, not for Redis: only its errors
        are counted."""
        if self.closed:
            raise StorageClosed("the coordinator is closed")
        if not blocking:
            with _CALLS.timed(), translate_errors(what):
                yield
            return
        try:
            with translate_errors(what):
                yield
        except StorageError:
            _CALLS.errors += 1
            raise

    async def last_entry_id(self, key: str, what: str, label: str) -> str:
        """The id of the last entry of stream ``key`` (``FIRST_ENTRY_ID`` when it is empty
        or missing); ``label`` names it in the error of a reply that is not an id."""
        with self.edge(what):
            rows: Any = await self.client.xrevrange(key, count=1)
        return text(rows[0][0], label) if rows else FIRST_ENTRY_ID

    def block_ms(self, deadline: float) -> int | None:
        """How long the next blocking read may wait, in milliseconds: until ``deadline``
        (loop time), at most ``block_cap``, at least 1; None once the deadline has passed
        (read without blocking)."""
        remaining = deadline - asyncio.get_running_loop().time()
        return None if remaining <= 0 else max(1, int(min(remaining, self.block_cap) * 1000))

    async def run(self, script: str, what: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one of the registered Lua scripts inside :meth:`edge`."""
        with self.edge(what):
            return await self.scripts[script](keys=list(keys), args=list(args))

    async def mget(self, what: str, keys: Sequence[str]) -> list[Any]:
        """The values of ``keys``, in order: one MGET, or on a cluster one per slot (the keys
        of independent values, read together without atomicity)."""
        with self.edge(what):
            if isinstance(self.client, RedisCluster):
                return list(await self.client.mget_nonatomic(list(keys)))
            return list(await self.client.mget(list(keys)))

    async def run_replicated(
        self, script: str, what: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """:meth:`run` through :meth:`replicated` (on a cluster: acknowledged by replicas)."""
        if not self.cluster:
            return await self.run(script, what, keys, args)
        body = getattr(redis_lua, script)
        return await self.replicated(what, keys[0], ("EVAL", body, len(keys), *keys, *args))

    async def aclose(self) -> None:
        """Mark the link closed, wake blocked reads, close the client's pool. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.closing.set()
        with translate_errors("close"):
            await self.client.aclose()


__all__ = ["Client", "Clock", "RedisLink", "translate_errors"]
