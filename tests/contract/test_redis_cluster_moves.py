"""The Redis coordinator on a Redis Cluster while it moves: a slot resharded key by key
(``ASK`` then ``MOVED`` redirections) and a master killed with its replica promoted. What
an append, a lock or a join returned is still there afterwards; what failed meanwhile
failed as StorageUnavailable (a caller retries it, as the room store's spool does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from loadtests.redis_cluster import ThrowawayRedisCluster
from persistence.coordinator.redis import RedisCoordinator
from persistence.errors import StorageUnavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

StartCluster = Callable[[], ThrowawayRedisCluster]
DOC = "moving-doc"
STREAM = "collab:{moving-doc}:changes"


async def append_until(
    coordinator: RedisCoordinator, stop: asyncio.Event, acknowledged: list[bytes]
) -> int:
    """Append numbered updates until ``stop``; keep those whose append returned. How many
    attempts failed (retried with the next number, as a spool would)."""
    failed = 0
    number = 0
    while not stop.is_set():
        number += 1
        update = number.to_bytes(4, "big")
        try:
            await coordinator.journal.append(DOC, "s", update, origin="node-a")
        except StorageUnavailable:
            failed += 1
            await asyncio.sleep(0.02)  # pacing a retry, as the spool's drainer does
            continue
        acknowledged.append(update)
        await asyncio.sleep(0)
    return failed


async def stored_updates(coordinator: RedisCoordinator) -> set[bytes]:
    updates: set[bytes] = set()
    after: str | None = None
    while entries := await coordinator.journal.read(DOC, after, 1000):
        updates.update(entry.update for entry in entries)
        after = entries[-1].id
    return updates


async def test_a_resharding_and_a_failover_lose_nothing_acknowledged(
    redis_clusters: StartCluster,
) -> None:
    cluster = redis_clusters()
    async with RedisCoordinator.cluster_from_url(cluster.url) as coordinator:
        lock = await coordinator.locks.acquire(DOC, "s", "alice", 60)
        assert lock is not None
        await coordinator.presence.join(DOC, "s", "alice", "node-a", "c1", 60)
        acknowledged: list[bytes] = []
        stop = asyncio.Event()
        appending = asyncio.create_task(append_until(coordinator, stop, acknowledged))

        old = cluster.master_of(STREAM)
        new = await asyncio.to_thread(cluster.move_slot, STREAM, pause=0.2)
        assert cluster.master_of(STREAM) is new
        assert new is not old
        during_move = len(acknowledged)

        killed = cluster.kill_master(STREAM)
        await asyncio.to_thread(cluster.wait_healthy)
        assert cluster.master_of(STREAM) is not killed
        count = len(acknowledged)
        async with asyncio.timeout(30):
            while len(acknowledged) < count + 50:  # appends go on on the promoted replica
                assert not appending.done(), appending
                await asyncio.sleep(0.02)
        stop.set()
        await appending
        assert during_move > 0

        stored = await stored_updates(coordinator)
        assert set(acknowledged) <= stored
        holder = await coordinator.locks.holder(DOC, "s")
        assert holder is not None
        assert (holder.owner, holder.token) == ("alice", lock.token)
        assert [m.user_id for m in await coordinator.presence.members(DOC)] == ["alice"]
