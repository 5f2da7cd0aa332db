"""An acknowledged update is durable even when it cannot integrate yet.

An update whose dependency has not arrived (B typed after A, B sent alone) is kept pending by
the CRDT core and changes nothing visible; it must still be journaled before it is
acknowledged, survive an unload, a kill -9 and a compaction, and integrate when A arrives.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from loadtests.client import YClient
from loadtests.harness import ServerProcess
from protocol.events import AppEvent, decode_event
from protocol.ysync import AppEventMessage, SyncUpdate
from tests.services.redis import StartRedis


def two_edits() -> tuple[bytes, bytes]:
    """A types "AAA", then "BBB" after it: B depends on A."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text: pycrdt.Text = doc.get("content", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text += "AAA"
    text += "BBB"
    first, second = updates
    return first, second


def acks(client: YClient) -> int:
    events: list[AppEvent] = [
        decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)
    ]
    return max((int(e.get("updates")) for e in events if e.type == "ack"), default=0)


# The first update message a client sends is its sync step 2 (its answer to the server's
# step 1, sent as it joins): acks count it too.
STEP2 = 1


async def send_acked(url: str, room: str, update: bytes) -> None:
    async with YClient(url, room, query="events=1") as client:
        await client.send(SyncUpdate(update))
        await client.wait_for(lambda: acks(client) >= STEP2 + 1)


async def text_after(url: str, room: str, update: bytes, expected: str) -> str:
    """Send ``update`` from one client; what another client of the room then shows (the
    server sends the sender nothing of its own update back)."""
    async with YClient(url, room) as watcher, YClient(url, room) as sender:
        await sender.send(SyncUpdate(update))
        await watcher.wait_for(lambda: len(watcher.text) >= len(expected))
        return str(watcher.text)


async def test_an_acknowledged_update_waiting_for_its_dependency_survives_kill_9(
    tmp_path: Path,
) -> None:
    first, second = two_edits()
    server = ServerProcess(tmp_path / "data").start()
    try:
        await send_acked(server.ws_url, "held/kill", second)
    finally:
        server.kill()
    restarted = ServerProcess(tmp_path / "data").start()
    try:
        text = await text_after(restarted.ws_url, "held/kill", first, "AAABBB")
        assert text == "AAABBB"
    finally:
        restarted.stop()


async def test_a_held_back_update_survives_unload_and_compaction(tmp_path: Path) -> None:
    first, second = two_edits()
    env = {"COLLAB_ROOM_IDLE_SECONDS": "0", "COLLAB_COMPACT_AFTER_UPDATES": "1"}
    with ServerProcess(tmp_path / "data", env=env) as server:
        await send_acked(server.ws_url, "held/unload", second)
        # The room unloads (with its final compaction) once the client left; then it loads
        # from the compacted state, which must still hold B.
        async with YClient(server.ws_url, "held/other") as other:
            await other.insert(0, "x")
        text = await text_after(server.ws_url, "held/unload", first, "AAABBB")
        assert text == "AAABBB"


@pytest.mark.slow
async def test_a_held_back_update_crosses_nodes_and_survives_the_node_that_took_it(
    tmp_path: Path, redis_servers: StartRedis
) -> None:
    """Y reaches node B before anyone sent X; X goes to node A; B is then killed."""
    first, second = two_edits()
    redis = redis_servers(aof=True)
    env = {"COLLAB_REDIS_URL": redis.url, "COLLAB_SNAPSHOT_IDLE_SECONDS": "0.5"}
    a = ServerProcess(tmp_path / "data", env=env).start()
    b = ServerProcess(tmp_path / "data", env=env).start()
    try:
        async with YClient(a.ws_url, "held/nodes") as watcher:
            await send_acked(b.ws_url, "held/nodes", second)
            assert await text_after(a.ws_url, "held/nodes", first, "AAABBB") == "AAABBB"
            await watcher.wait_for(lambda: str(watcher.text) == "AAABBB")
        b.kill()
        a.kill()
        restarted = ServerProcess(tmp_path / "data", env=env).start()
        try:
            async with YClient(restarted.ws_url, "held/nodes") as fresh:
                await fresh.wait_for(lambda: str(fresh.text) == "AAABBB")
        finally:
            restarted.stop()
    finally:
        a.kill()
        b.kill()


class Author:
    """One user's own document: its edits are sent as raw updates over whichever connection
    it has, and after a reconnect it resends only what no server acknowledged (the protocol's
    recommendation), never a full sync step 2."""

    def __init__(self) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.text: pycrdt.Text = self.doc.get("content", type=pycrdt.Text)
        self.updates: list[bytes] = []
        self.acked = 0
        self.doc.observe(lambda event: self.updates.append(event.update))

    async def type_over(self, conn: YClient, edits: int, tag: str) -> None:
        for index in range(edits):
            self.text.insert(len(self.text), f"{tag}{index} ")
            await conn.send(SyncUpdate(self.updates[-1]))

    async def resend_unacked(self, conn: YClient) -> int:
        """Send every update no server acknowledged; returns how many acks ``conn`` owes."""
        pending = self.updates[self.acked :]
        for update in pending:
            await conn.send(SyncUpdate(update))
        return len(pending)

    async def wait_acked(self, conn: YClient, sent: int, base: int) -> None:
        """Wait until ``conn`` acknowledged the ``sent`` updates sent over it (after its sync
        step 2); ``base``: how many of this author's updates were acknowledged before it."""
        await conn.wait_for(lambda: acks(conn) >= STEP2 + sent, timeout=30)
        self.acked = base + sent


@pytest.mark.slow
async def test_acknowledged_edits_survive_a_redis_outage_overlapping_a_node_crash(
    tmp_path: Path, redis_servers: StartRedis
) -> None:
    """Redis dies; node A, whose spool holds acknowledged edits, is killed during the outage;
    the author moves to node B and types on (edits B holds back: they follow edits only A's
    spool has). Everything comes back, then B is killed: every acknowledged edit is on A."""
    redis = redis_servers(aof=True)
    data = tmp_path / "data"

    def node(name: str) -> ServerProcess:
        env = {"COLLAB_REDIS_URL": redis.url, "COLLAB_NODE_NAME": name}
        return ServerProcess(data, env=env)

    a, b = node("node-a").start(), node("node-b").start()
    author = Author()
    try:
        async with YClient(b.ws_url, "chaos/s") as watcher_b:
            on_a = await YClient(a.ws_url, "chaos/s", query="events=1").connect()
            await asyncio.wait_for(on_a.synced.wait(), 10)
            await author.type_over(on_a, 10, "a")
            await author.wait_acked(on_a, 10, 0)
            await watcher_b.wait_for(lambda: str(watcher_b.text) == str(author.text), 15)
            # Opened before the outage: connecting needs the coordinator (sessions, limits).
            on_b = await YClient(b.ws_url, "chaos/s", query="events=1").connect()
            await asyncio.wait_for(on_b.synced.wait(), 10)
            redis.kill()
            await author.type_over(on_a, 10, "spooled")
            await author.wait_acked(on_a, 20, 0)
            a.kill()
            await on_a.close()
            owed = await author.resend_unacked(on_b)
            assert owed == 0
            await author.type_over(on_b, 10, "b")
            await author.wait_acked(on_b, 10, author.acked)
            redis.restart()
            a = node("node-a").start()  # its spool drains into the stream
            await watcher_b.wait_for(lambda: str(watcher_b.text) == str(author.text), 30)
            await on_b.close()
        b.kill()
        async with YClient(a.ws_url, "chaos/s") as fresh:
            await fresh.wait_for(lambda: str(fresh.text) == str(author.text), 30)
    finally:
        a.kill()
        b.kill()
