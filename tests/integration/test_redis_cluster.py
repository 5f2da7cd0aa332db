"""Two server nodes on a Redis Cluster (``COLLAB_REDIS_CLUSTER=true``): three masters with a
replica each, AOF ``always`` (``tests/services/redis.py``). Clients on either node converge,
awareness, locks and presence cross nodes, sessions are shared, and a master killed in the
middle of the editing (its replica promoted) loses nothing any client was acknowledged.

The server processes share one data directory: its SQLite files stand in for the MongoDB
and PostgreSQL they would share in production.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest

from loadtests.client import YClient
from loadtests.crash import clocks, covers
from loadtests.harness import ServerProcess
from loadtests.redis_cluster import ThrowawayRedisCluster
from persistence.coordinator.redis import RedisCoordinator
from tests.conftest import StartServer
from tests.integration.test_cluster import longer_than, same_text, type_randomly
from tests.integration.test_locks import events, send_event, wait_acked

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

StartCluster = Callable[[], ThrowawayRedisCluster]


def cluster_env(url: str) -> dict[str, str]:
    return {
        "COLLAB_REDIS_URL": url,
        "COLLAB_REDIS_CLUSTER": "true",
        "COLLAB_SNAPSHOT_IDLE_SECONDS": "0.5",
    }


async def type_until(client: YClient, stop: asyncio.Event, seed: int) -> None:
    """Type at about 200 edits/s (a paced writer, so the typing spans the failover)."""
    index = 0
    while not stop.is_set():
        index += 1
        client.text.insert((index * 7919 + seed) % (len(client.text) + 1), "abcdefghij"[index % 10])
        await client.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.005)


def process_nodes(data_dir: Path, url: str, count: int = 2) -> list[ServerProcess]:
    started: list[ServerProcess] = []
    try:
        for _ in range(count):
            started.append(ServerProcess(data_dir, env=cluster_env(url)).start())
    except BaseException:
        for node in started:
            node.stop()
        raise
    return started


async def test_clients_on_two_nodes_converge_and_see_each_other(
    tmp_path: Path, redis_cluster_url: str
) -> None:
    a, b = process_nodes(tmp_path / "data", redis_cluster_url)
    try:
        # Rooms of several documents: their streams live on different shards.
        rooms = [f"cl-{name}/intro" for name in ("alpha", "beta", "gamma", "delta")]
        clients = [YClient((a if i % 2 else b).ws_url, rooms[i % 4]) for i in range(8)]
        for client in clients:
            await client.connect()
            await asyncio.wait_for(client.synced.wait(), 10)
        edits = 40
        await asyncio.gather(*(type_randomly(c, edits, i) for i, c in enumerate(clients)))
        for client in clients:
            await client.wait_for(longer_than(client, 2 * edits), timeout=30)
        for room in rooms:
            texts = {str(c.text) for c in clients if c.room == room}
            assert len(texts) == 1, room
            assert len(texts.pop()) == 2 * edits
        for client in clients:
            await client.close()

        async with (
            YClient(a.ws_url, "cl-aware/s") as on_a,
            YClient(b.ws_url, "cl-aware/s") as on_b,
        ):
            await on_a.set_awareness('{"user":{"name":"Ada"},"cursor":{"anchor":1}}')
            await on_b.wait_for(lambda: on_a.client_id in on_b.awareness, timeout=10)
            assert "Ada" in on_b.awareness[on_a.client_id]
            await on_a.close()
            await on_b.wait_for(lambda: on_a.client_id not in on_b.awareness, timeout=10)
    finally:
        a.stop()
        b.stop()


async def test_locks_presence_and_sessions_cross_nodes(
    redis_cluster_url: str, start_server: StartServer
) -> None:
    node_a = await start_server(redis_url=redis_cluster_url, redis_cluster=True)
    node_b = await start_server(redis_url=redis_cluster_url, redis_cluster=True)
    owner = node_a.collab.authn.dev_user
    other_user = node_b.collab.authn.dev_user
    assert owner is not None
    assert other_user is not None
    async with YClient(node_a.ws_url, "cl-lock/intro", query="events=1") as alice:
        await alice.insert(0, "base")
        await wait_acked(alice, 2)
        async with YClient(node_b.ws_url, "cl-lock/intro", query="events=1") as other:
            await other.wait_for(lambda: str(other.text) == "base")
            await send_event(alice, "lock", section="intro")
            await other.wait_for(lambda: bool(events(other, "locked")))
            assert events(other, "locked")[0].get("owner") == str(owner.id)
            room_b = node_b.collab.registry.room("cl-lock/intro")
            assert room_b is not None
            assert room_b.locked_by == str(owner.id)

            async with httpx2.AsyncClient(base_url=node_b.http_url) as http:
                response = await http.get("/api/documents/cl-lock/presence")
                assert response.status_code == 200
                users = {user["userId"] for user in response.json()["users"]}
                assert users == {str(owner.id), str(other_user.id)}

            await send_event(alice, "unlock", section="intro")
            await other.wait_for(lambda: bool(events(other, "unlocked")))
            assert room_b.locked_by is None

    # A session written by one node is read by the other (both through the cluster).
    async with (
        RedisCoordinator.cluster_from_url(redis_cluster_url) as first,
        RedisCoordinator.cluster_from_url(redis_cluster_url) as second,
    ):
        await first.sessions.put("cl-session-1", {"userId": str(owner.id)})
        assert await second.sessions.get("cl-session-1") == {"userId": str(owner.id)}
        assert await second.sessions.delete("cl-session-1")


async def test_a_master_killed_mid_editing_loses_nothing_acknowledged(
    tmp_path: Path, redis_clusters: StartCluster
) -> None:
    cluster = redis_clusters()
    a, b = process_nodes(tmp_path / "data", cluster.url)
    rooms = [f"cl-kill/s{i}" for i in range(3)]
    try:
        writers = [YClient(a.ws_url, room) for room in rooms]
        watchers = [YClient(b.ws_url, room) for room in rooms]
        for client in writers + watchers:
            await client.connect()
            await asyncio.wait_for(client.synced.wait(), 10)
        stop = asyncio.Event()
        typing = [asyncio.create_task(type_until(w, stop, i)) for i, w in enumerate(writers)]
        for watcher in watchers:
            await watcher.wait_for(longer_than(watcher, 50), timeout=30)
        # What the watchers received came through the stream: acknowledged by a replica.
        seen = {w.room: clocks(w.doc.get_state()) for w in watchers}
        before = [len(w.text) for w in writers]
        killed = cluster.kill_master("collab:{cl-kill}:changes")
        # The writers keep typing while the cluster promotes the replica.
        await asyncio.to_thread(cluster.wait_healthy)
        assert killed.pid is None
        assert cluster.master_of("collab:{cl-kill}:changes") is not killed
        assert all(len(w.text) > n for w, n in zip(writers, before, strict=True))
        # Edits typed after the promotion reach the other node through the new master.
        after = [len(w.text) for w in writers]
        for watcher, n in zip(watchers, after, strict=True):
            await watcher.wait_for(longer_than(watcher, n + 20), timeout=30)
        stop.set()
        await asyncio.gather(*typing)
        # Editing went on through the failover: both nodes converge on everything typed.
        for writer, watcher in zip(writers, watchers, strict=True):
            await watcher.wait_for(same_text(watcher, writer), timeout=60)
        written = {w.room: clocks(w.doc.get_state()) for w in writers}
        for client in writers + watchers:
            await client.close()
    finally:
        a.stop()
        b.stop()
    # A new node loads each document from what the promoted replica and the content store
    # kept: everything the watchers saw and everything the writers typed.
    (c,) = process_nodes(tmp_path / "data", cluster.url, count=1)
    try:
        for room in rooms:
            async with YClient(c.ws_url, room) as fresh:
                state = clocks(fresh.doc.get_state())
                assert covers(state, seen[room]), room
                assert covers(state, written[room]), room
    finally:
        c.stop()
