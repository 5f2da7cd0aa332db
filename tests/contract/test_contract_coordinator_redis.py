"""What only the Redis coordinator can show: its key layout (``docs/redis.md``), corrupted
values, AOF reporting, unreachable servers and a Redis crash while appending.

The key-layout and corruption tests run on the session's Redis under a key prefix of their
own; the restart and AOF tests start dedicated ``redis-server`` processes (see
``tests/services/redis.py``), because they kill or reconfigure the server.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from persistence.coordinator.redis import RedisCoordinator
from persistence.errors import StorageCorrupted, StorageUnavailable

if TYPE_CHECKING:
    from tests.services.redis import StartRedis

pytestmark = pytest.mark.timeout(30)

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def coordinator(redis_url: str, redis_key_prefix: str) -> AsyncIterator[RedisCoordinator]:
    async with RedisCoordinator.from_url(redis_url, prefix=redis_key_prefix) as opened:
        yield opened


async def keys_under(raw: Any, prefix: str) -> dict[str, str]:
    """Every key under ``prefix`` (without it) and its Redis type."""
    found: dict[str, str] = {}
    async for key in raw.scan_iter(match=f"{prefix}*", count=500):
        found[key.decode()[len(prefix) :]] = (await raw.type(key)).decode()
    return found


async def pttl(raw: Any, key: str) -> int:
    return int(await raw.pttl(key))


async def test_keys_and_values_are_those_of_the_docs(
    coordinator: RedisCoordinator, raw: Any, redis_key_prefix: str
) -> None:
    p = redis_key_prefix
    c = coordinator
    await c.presence.join("doc-1", "intro", "alice", "node-a", "c1", 30)
    await c.cursors.set("doc-1", "intro", "alice", {"anchor": 4})
    await c.locks.acquire("doc-1", "intro", "alice", 60)
    entry_id = await c.journal.append("doc-1", "intro", b"\x01\x02", origin="node-a")
    await c.cache.put("doc-1", {"title": "Plan"})
    await c.sessions.put("sess-1", {"userId": "u-1"})
    await c.flags.set("new-editor", True)
    await c.rate_limits.hit("u-1", "comment", 5, 60)
    await c.stats.incr("edits", "2026-01-05T09", "updates")
    await c.notifications.push("u-1", {"type": "mention"})

    assert await keys_under(raw, p) == {
        "collab:doc-1:users": "hash",
        "collab:doc-1:cursors": "hash",
        "collab:doc-1:changes": "stream",
        "node:node-a": "string",
        "node:node-a:documents": "set",
        "lock:doc-1:intro": "hash",
        "lock:doc-1:intro:fence": "string",
        "lock:doc-1": "set",
        "doc:doc-1": "string",
        "session:sess-1": "string",
        "feature:new-editor": "string",
        "ratelimit:u-1:comment": "string",
        "stats:edits:2026-01-05T09": "hash",
        "notifications:u-1": "list",
    }
    users = await raw.hgetall(f"{p}collab:doc-1:users")
    entry = json.loads(users[b"node-a:c1"])
    assert set(users) == {b"node-a:c1"}
    assert {k: entry[k] for k in ("section", "user", "node", "connection")} == {
        "section": "intro", "user": "alice", "node": "node-a", "connection": "c1",
    }  # fmt: skip
    assert isinstance(entry["joined_at"], float)
    assert 0 < await pttl(raw, f"{p}collab:doc-1:users") <= 30_000
    assert 0 < await pttl(raw, f"{p}node:node-a") <= 30_000
    assert await raw.smembers(f"{p}node:node-a:documents") == {b"doc-1"}
    assert DAY_MS - 60_000 < await pttl(raw, f"{p}node:node-a:documents") <= DAY_MS
    cursor = json.loads(await raw.hget(f"{p}collab:doc-1:cursors", "intro:alice") or b"")
    assert cursor["value"] == {"anchor": 4}
    assert isinstance(cursor["updated_at"], float)

    lock = await raw.hgetall(f"{p}lock:doc-1:intro")
    assert (lock[b"owner"], lock[b"token"]) == (b"alice", b"1")
    float(lock[b"acquired_at"])
    assert 0 < await pttl(raw, f"{p}lock:doc-1:intro") <= 60_000
    assert await raw.get(f"{p}lock:doc-1:intro:fence") == b"1"
    assert await pttl(raw, f"{p}lock:doc-1:intro:fence") == -1
    assert await raw.smembers(f"{p}lock:doc-1") == {b"intro"}

    [(stored_id, fields)] = await raw.xrange(f"{p}collab:doc-1:changes")
    assert stored_id.decode() == entry_id
    assert fields == {b"section": b"intro", b"update": b"\x01\x02", b"origin": b"node-a"}
    assert await pttl(raw, f"{p}collab:doc-1:changes") == -1

    assert json.loads(await raw.get(f"{p}doc:doc-1") or b"") == {"title": "Plan"}
    assert HOUR_MS - 60_000 < await pttl(raw, f"{p}doc:doc-1") <= HOUR_MS
    assert json.loads(await raw.get(f"{p}session:sess-1") or b"") == {"userId": "u-1"}
    assert DAY_MS - 60_000 < await pttl(raw, f"{p}session:sess-1") <= DAY_MS
    assert await raw.get(f"{p}feature:new-editor") == b"1"
    assert await raw.get(f"{p}ratelimit:u-1:comment") == b"1"
    assert 0 < await pttl(raw, f"{p}ratelimit:u-1:comment") <= 60_000
    assert await raw.hgetall(f"{p}stats:edits:2026-01-05T09") == {b"updates": b"1"}
    assert HOUR_MS - 60_000 < await pttl(raw, f"{p}stats:edits:2026-01-05T09") <= HOUR_MS
    assert await raw.lrange(f"{p}notifications:u-1", 0, -1) == [b'{"type":"mention"}']


async def test_the_outline_room_is_stored_as_an_empty_section(
    coordinator: RedisCoordinator, raw: Any, redis_key_prefix: str
) -> None:
    p = redis_key_prefix
    await coordinator.presence.join("doc-1", None, "bob", "node-a", "c2", 30)
    await coordinator.cursors.set("doc-1", None, "bob", 7)
    await coordinator.journal.append("doc-1", None, b"x")
    entry = json.loads(await raw.hget(f"{p}collab:doc-1:users", "node-a:c2") or b"")
    assert entry["section"] == ""
    assert await raw.hexists(f"{p}collab:doc-1:cursors", ":bob")
    [(_, fields)] = await raw.xrange(f"{p}collab:doc-1:changes")
    assert fields[b"section"] == b""
    assert fields[b"origin"] == b""


async def test_corrupted_values_raise_storage_corrupted(
    coordinator: RedisCoordinator, raw: Any, redis_key_prefix: str
) -> None:
    p = redis_key_prefix
    await raw.set(f"{p}doc:doc-1", b"{not json")
    await raw.set(f"{p}session:sess-1", b'["a list"]')
    await raw.set(f"{p}feature:flag", b"maybe")
    await raw.rpush(f"{p}doc:doc-2", b"a list, not a string")
    await raw.hset(f"{p}stats:t:p", "metric", "1.5")
    await raw.xadd(f"{p}collab:doc-1:changes", {"section": "s"})
    await raw.rpush(f"{p}notifications:u-1", b"\xff\xfe")
    checks: list[Any] = [
        coordinator.cache.get("doc-1"),
        coordinator.sessions.get("sess-1"),
        coordinator.flags.get("flag"),
        coordinator.cache.get("doc-2"),
        coordinator.stats.get("t", "p"),
        coordinator.journal.read("doc-1"),
        coordinator.notifications.peek("u-1"),
    ]
    for check in checks:
        with pytest.raises(StorageCorrupted):
            await check


async def test_an_unreachable_server_raises_storage_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        url = f"redis://127.0.0.1:{port}/0"
        async with RedisCoordinator.from_url(url, connect_timeout=0.5, retries=1) as unreachable:
            with pytest.raises(StorageUnavailable):
                await unreachable.durability()
            with pytest.raises(StorageUnavailable):
                await unreachable.journal.append("d", "s", b"x")
            with pytest.raises(StorageUnavailable):
                await unreachable.locks.acquire("d", "s", "alice", 10)


async def test_durability_reports_aof_on_and_off(redis_servers: StartRedis) -> None:
    with_aof, without_aof = redis_servers(aof=True), redis_servers(aof=False)
    async with RedisCoordinator.from_url(with_aof.url) as durable:
        report = await durable.durability()
        assert (report.aof_enabled, report.appendfsync, report.durable) == (True, "always", True)
    async with RedisCoordinator.from_url(without_aof.url) as volatile:
        report = await volatile.durability()
        assert (report.aof_enabled, report.durable) == (False, False)
        assert "appendonly=no" in report.detail


async def test_a_redis_crash_while_appending(redis_servers: StartRedis) -> None:
    """Appends that returned survive a kill -9 of Redis (AOF, appendfsync always); during
    the outage calls raise StorageUnavailable; after the restart the same coordinator works
    again without being reopened."""
    server = redis_servers(aof=True)
    acknowledged: list[bytes] = []
    enough, outage, recovered, stop = (asyncio.Event() for _ in range(4))
    async with RedisCoordinator.from_url(
        server.url, socket_timeout=1.0, connect_timeout=0.5, retries=2
    ) as coordinator:

        async def writer() -> None:
            n = 0
            while not stop.is_set():
                update = f"update-{n}".encode()
                n += 1
                try:
                    await coordinator.journal.append("d", "s", update, origin="node-a")
                except StorageUnavailable:
                    outage.set()
                    continue
                acknowledged.append(update)
                if len(acknowledged) >= 50:
                    enough.set()
                if outage.is_set():
                    recovered.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(writer())
            async with asyncio.timeout(20):
                await enough.wait()
                before_crash = list(acknowledged)
                server.kill()
                await outage.wait()
                with pytest.raises(StorageUnavailable):
                    await coordinator.cache.get("d")
                await asyncio.to_thread(server.restart)
                await recovered.wait()
            stop.set()

        stored: list[bytes] = []
        after: str | None = None
        while page := await coordinator.journal.read("d", after_id=after, count=1000):
            stored += [entry.update for entry in page]
            after = page[-1].id
    assert set(before_crash) <= set(stored)
    # Every acknowledged append is stored, in order (an append whose reply was lost in the
    # crash may be stored too, or twice: replay is idempotent).
    in_order = list(dict.fromkeys(u for u in stored if u in set(acknowledged)))
    assert in_order == acknowledged
