"""Two server processes sharing one real Redis (service mode): clients on either node converge,
awareness crosses nodes, and a node killed with SIGKILL loses nothing any client received.

Both nodes use one data directory: its SQLite files stand in for the MongoDB and PostgreSQL
they would share in production (SQLite handles several processes on one file).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from loadtests.client import YClient
from loadtests.crash import clocks, covers
from loadtests.harness import ServerProcess
from tests.services.redis import StartRedis

pytestmark = pytest.mark.slow


def nodes(data_dir: Path, redis_url: str) -> tuple[ServerProcess, ServerProcess]:
    env = {"COLLAB_REDIS_URL": redis_url, "COLLAB_SNAPSHOT_IDLE_SECONDS": "0.5"}
    first = ServerProcess(data_dir, env=env).start()
    try:
        second = ServerProcess(data_dir, env=env).start()
    except BaseException:
        first.stop()
        raise
    return first, second


def same_text(first: YClient, second: YClient) -> Callable[[], bool]:
    return lambda: str(first.text) == str(second.text)


def longer_than(client: YClient, length: int) -> Callable[[], bool]:
    return lambda: len(client.text) >= length


async def type_randomly(client: YClient, edits: int, seed: int) -> None:
    rng = random.Random(seed)
    for index in range(edits):
        client.text.insert(rng.randint(0, len(client.text)), "abcdefghij"[index % 10])
        await client.flush()
        if index % 10 == 0:
            await asyncio.sleep(0)


async def test_clients_on_two_nodes_converge(tmp_path: Path, redis_servers: StartRedis) -> None:
    redis = redis_servers(aof=True)
    a, b = nodes(tmp_path / "data", redis.url)
    try:
        clients = [YClient((a if i % 2 else b).ws_url, "shared/intro") for i in range(6)]
        for client in clients:
            await client.connect()
            await asyncio.wait_for(client.synced.wait(), 10)
        edits = 60
        await asyncio.gather(*(type_randomly(c, edits, i) for i, c in enumerate(clients)))
        total = edits * len(clients)
        for client in clients:
            await client.wait_for(longer_than(client, total), timeout=30)
            assert len(client.text) == total
        texts = {str(c.text) for c in clients}
        assert len(texts) == 1
        # A fresh client on either node loads the same text.
        for node in (a, b):
            async with YClient(node.ws_url, "shared/intro") as fresh:
                await fresh.wait_for(longer_than(fresh, total), timeout=10)
                assert {str(fresh.text)} == texts
        for client in clients:
            await client.close()
    finally:
        a.stop()
        b.stop()


async def test_awareness_crosses_nodes(tmp_path: Path, redis_servers: StartRedis) -> None:
    redis = redis_servers(aof=True)
    a, b = nodes(tmp_path / "data", redis.url)
    try:
        async with (
            YClient(a.ws_url, "aware/s") as on_a,
            YClient(b.ws_url, "aware/s") as on_b,
        ):
            await on_a.set_awareness('{"user":{"name":"Ada"},"cursor":{"anchor":1}}')
            await on_b.wait_for(lambda: on_a.client_id in on_b.awareness, timeout=10)
            assert "Ada" in on_b.awareness[on_a.client_id]
            await on_a.close()
            # The node's removal of a closed client's state crosses too.
            await on_b.wait_for(lambda: on_a.client_id not in on_b.awareness, timeout=10)
    finally:
        a.stop()
        b.stop()


async def test_a_killed_node_loses_nothing_and_its_clients_resync_elsewhere(
    tmp_path: Path, redis_servers: StartRedis
) -> None:
    redis = redis_servers(aof=True)
    a, b = nodes(tmp_path / "data", redis.url)
    try:
        writers = [YClient(a.ws_url, f"kill/s{i}") for i in range(3)]
        watchers = [YClient(b.ws_url, f"kill/s{i}") for i in range(3)]
        for client in writers + watchers:
            await client.connect()
            await asyncio.wait_for(client.synced.wait(), 10)
        typing = [asyncio.create_task(type_randomly(w, 3000, i)) for i, w in enumerate(writers)]
        for watcher in watchers:
            await watcher.wait_for(longer_than(watcher, 100), timeout=30)
        a.kill()
        seen: dict[str, dict[int, int]] = {}
        for client in writers + watchers:
            had = seen.setdefault(client.room, {})
            for client_id, clock in clocks(client.doc.get_state()).items():
                if client in watchers or client_id != client.client_id:
                    had[client_id] = max(had.get(client_id, 0), clock)
        for task in typing:
            task.cancel()
        await asyncio.gather(*typing, return_exceptions=True)
        # Everything any watcher received came through Redis: the surviving node has it.
        for room, had in seen.items():
            async with YClient(b.ws_url, room) as fresh:
                assert covers(clocks(fresh.doc.get_state()), had), room
        # The dead node's clients reconnect to the other node and resync both ways.
        for writer in writers:
            await writer.close()
            moved = YClient(b.ws_url, writer.room, doc=writer.doc)
            await moved.connect()
            await asyncio.wait_for(moved.synced.wait(), 10)
            watcher = next(w for w in watchers if w.room == writer.room)
            await watcher.wait_for(same_text(watcher, moved), 10)
            await moved.close()
        for watcher in watchers:
            await watcher.close()
    finally:
        a.kill()
        b.stop()


async def test_a_redis_outage_stops_neither_editing_nor_loses_anything(
    tmp_path: Path, redis_servers: StartRedis
) -> None:
    """Redis dies for a while: clients on one node keep editing each other's text (their
    updates wait in the node's spool), and once Redis is back the other node catches up."""
    redis = redis_servers(aof=True)
    a, b = nodes(tmp_path / "data", redis.url)
    try:
        on_a = [YClient(a.ws_url, "outage/s") for _ in range(2)]
        on_b = YClient(b.ws_url, "outage/s")
        for client in [*on_a, on_b]:
            await client.connect()
            await asyncio.wait_for(client.synced.wait(), 10)
        await on_a[0].insert(0, "before ")
        await on_b.wait_for(lambda: "before" in str(on_b.text), timeout=10)
        redis.kill()
        # Editing on node A goes on: its clients see each other's edits.
        await on_a[0].insert(len(on_a[0].text), "during-1 ")
        await on_a[1].wait_for(lambda: "during-1" in str(on_a[1].text), timeout=15)
        await on_a[1].insert(0, "during-2 ")
        await on_a[0].wait_for(lambda: "during-2" in str(on_a[0].text), timeout=15)
        assert "during" not in str(on_b.text)
        redis.restart()
        # Node B catches up once the spool drains into the stream.
        await on_b.wait_for(lambda: str(on_b.text) == str(on_a[0].text), timeout=30)
        for client in [*on_a, on_b]:
            await client.close()
        async with YClient(b.ws_url, "outage/s") as fresh:
            assert "during-1" in str(fresh.text)
            assert "during-2" in str(fresh.text)
    finally:
        a.stop()
        b.stop()
