"""The cluster follower (``server/realtime/cluster.py``) on a Redis Cluster with many documents:
its blocked reads are bounded by the wake groups, not by the documents, and an append whose
wake-up was lost is still delivered, by the sweep.

The follower runs in this process against the session's throwaway cluster (three masters),
with a registry of stand-in rooms; another coordinator plays the other node.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from redis.asyncio.cluster import RedisCluster

from crdt.ids import RoomName
from persistence.coordinator.redis import RedisCoordinator
from persistence.coordinator.redis_wakes import WAKE_GROUPS
from server.hooks import Hooks
from server.realtime.cluster import AWARENESS, Cluster
from server.realtime.registry import RoomRegistry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DOCUMENTS = 320
CAP = 24  # connections per cluster node for the follower: the old design needed one per document


@dataclass
class StandInRoom:
    name: RoomName
    arrived: asyncio.Event
    updates: list[bytes] = field(default_factory=list)
    awareness: list[bytes] = field(default_factory=list)

    @property
    def key(self) -> str:
        return str(self.name)

    def apply_remote(self, update: bytes) -> None:
        self.updates.append(update)
        self.arrived.set()

    def apply_remote_awareness(self, payload: bytes) -> None:
        self.awareness.append(payload)
        self.arrived.set()


class StandInRegistry:
    """What the follower asks of the registry: the loaded rooms."""

    def __init__(self) -> None:
        self.loaded: dict[str, StandInRoom] = {}
        self.changed = asyncio.Event()

    def add(self, document_id: str) -> StandInRoom:
        room = StandInRoom(RoomName(document_id, "s"), self.changed)
        self.loaded[room.key] = room
        return room

    def room(self, key: str) -> StandInRoom | None:
        return self.loaded.get(key)

    def rooms(self) -> list[StandInRoom]:
        return list(self.loaded.values())

    def is_loading(self, key: str) -> bool:
        return False

    def is_loading_document(self, document_id: str) -> bool:
        return False


@dataclass
class Follower:
    cluster: Cluster
    registry: StandInRegistry
    client: RedisCluster
    coordinator: RedisCoordinator
    name: str
    prefix: str


@pytest.fixture
def prefix() -> str:
    return f"collab-test-follow-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def follower(redis_cluster_url: str, prefix: str) -> AsyncIterator[Follower]:
    name = f"follower-{uuid.uuid4().hex[:8]}"
    client = RedisCluster.from_url(
        redis_cluster_url, max_connections=CAP, client_name=name, protocol=2
    )
    coordinator = RedisCoordinator(client, prefix=prefix)
    registry = StandInRegistry()
    cluster = Cluster(
        cast(RoomRegistry, registry),
        coordinator.journal,
        coordinator.signals,
        "node-b",
        on_event=lambda *event: None,
        hooks=Hooks(),
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            cluster.start(tasks)
            yield Follower(cluster, registry, client, coordinator, name, prefix)
            cluster.stop()
    finally:
        await coordinator.aclose()


@pytest.fixture
async def other_node(redis_cluster_url: str, prefix: str) -> AsyncIterator[RedisCoordinator]:
    async with RedisCoordinator.cluster_from_url(redis_cluster_url, prefix=prefix) as node:
        yield node


async def load(follower: Follower, documents: list[str]) -> list[StandInRoom]:
    """Load the rooms one at a time, as a node loading them on demand does."""
    rooms = []
    for document_id in documents:
        rooms.append(follower.registry.add(document_id))
        await follower.cluster.before_load(RoomName(document_id, "s"))
    return rooms


async def until(condition: Any, registry: StandInRegistry, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            registry.changed.clear()
            await registry.changed.wait()


async def connections(client: RedisCluster, name: str) -> tuple[int, int]:
    """(open connections named ``name`` on all masters, those blocked in XREAD)."""
    replies = await client.execute_command("CLIENT LIST", target_nodes=RedisCluster.PRIMARIES)
    opened = blocked = 0
    for clients in cast(dict[str, list[dict[str, str]]], replies).values():
        for fields in clients:
            if fields.get("name") == name:
                opened += 1
                blocked += "b" in fields.get("flags", "") and fields.get("cmd") == "xread"
    return opened, blocked


@contextlib.contextmanager
def sweeping_every(follower: Follower, seconds: float) -> Iterator[None]:
    before = [f.sweep for f in follower.cluster.followers]
    for stream_follower in follower.cluster.followers:
        stream_follower.sweep = seconds
    try:
        yield
    finally:
        for stream_follower, sweep in zip(follower.cluster.followers, before, strict=True):
            stream_follower.sweep = sweep


async def test_many_documents_follow_with_a_bounded_number_of_blocked_reads(
    follower: Follower, other_node: RedisCoordinator
) -> None:
    documents = [f"many-{i}" for i in range(DOCUMENTS)]
    with sweeping_every(follower, 600):  # what arrives now came through the wake-ups
        rooms = await load(follower, documents)
        # Every document gets an update and an awareness signal from the other node.
        for start in range(0, DOCUMENTS, 40):
            chunk = documents[start : start + 40]
            await asyncio.gather(
                *(other_node.journal.append(d, "s", f"u-{d}".encode(), origin="a") for d in chunk),
                *(
                    other_node.signals.append(d, "s", bytes((AWARENESS,)) + b"x", origin="a")
                    for d in chunk
                ),
            )
        await until(
            lambda: all(r.updates and r.awareness for r in rooms), follower.registry, timeout=30
        )
    assert [r.updates for r in rooms] == [[f"u-{d}".encode()] for d in documents]
    assert all(r.awareness == [b"x"] for r in rooms)
    assert follower.cluster.stats()["cluster_documents_followed"] == DOCUMENTS

    # The follower's connections: at most one blocked read per wake group and stream kind,
    # whatever the number of documents (the old design held one per document and kind).
    groups = {follower.coordinator.journal.wake_group(d) for d in documents}
    assert len(groups) == WAKE_GROUPS
    opened, blocked = await connections(follower.client, follower.name)
    assert opened >= len(groups)  # each group's waiter has (had) a connection of its own
    assert blocked <= 2 * WAKE_GROUPS
    # Besides the blocked reads: the reader's pipeline and the loads' reads, a few per
    # master. The old design opened one per document and kind: 640 here.
    assert opened <= 2 * WAKE_GROUPS + 3 * 8

    # More updates after the followers blocked: each arrives promptly, through its wake-up.
    started = time.monotonic()
    await asyncio.gather(
        *(other_node.journal.append(d, "s", b"second", origin="a") for d in documents[:40])
    )
    await until(lambda: all(len(r.updates) == 2 for r in rooms[:40]), follower.registry, 10)
    assert time.monotonic() - started < 5
    # The follower's own appends are skipped.
    await other_node.journal.append(documents[0], "s", b"mine", origin="node-b")
    await other_node.journal.append(documents[0], "s", b"third", origin="a")
    await until(lambda: len(rooms[0].updates) == 3, follower.registry, 10)
    assert rooms[0].updates[-1] == b"third"


async def test_an_append_whose_wake_up_was_lost_arrives_by_the_sweep(
    follower: Follower, redis_cluster_url: str
) -> None:
    documents = [f"lost-{i}" for i in range(40)]
    sweep = 0.5
    with sweeping_every(follower, sweep):
        rooms = await load(follower, documents)
        sweeps = follower.cluster.followers[0].sweeps
        # An append with no wake-up, as when a node dies between the append and its wake:
        # a plain XADD to the document's stream.
        client = RedisCluster.from_url(redis_cluster_url, protocol=2)
        started = time.monotonic()
        try:
            key = f"{follower.prefix}collab:{{{documents[7]}}}:changes"
            await client.xadd(key, {"section": "s", "update": b"unwoken", "origin": "a"})
        finally:
            await client.aclose()
        await until(lambda: rooms[7].updates == [b"unwoken"], follower.registry, timeout=10)
        elapsed = time.monotonic() - started
    # It came with a sweep, within about one sweep interval (plus a read).
    assert elapsed < sweep + 2.0
    assert follower.cluster.followers[0].sweeps > sweeps
    assert all(not r.updates for i, r in enumerate(rooms) if i != 7)
