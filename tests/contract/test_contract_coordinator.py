"""The Coordinator contract, run against every adapter.

Adapters: the in-process one (a fake clock drives its TTLs) and the Redis one on the
session's throwaway ``redis-server`` (AOF, ``appendfsync always``) or on
``COLLAB_TEST_REDIS_URL``, each test under a key prefix of its own. For Redis, TTLs are
short real ones and expiry is awaited by polling under a deadline (expiry is time-based:
there is no event to wait on). "Peers" are further coordinators on the same backend: other
server nodes for Redis, the same instance in-process (one process is one node).
Redis-only behaviour (restarts, AOF off, the key layout, corrupted values) is in
``test_contract_coordinator_redis.py``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from persistence.coordinator.memory import MemoryCoordinator
from persistence.coordinator.ports import Coordinator
from persistence.coordinator.redis import RedisCoordinator
from persistence.coordinator.values import (
    MAX_CACHE_BYTES,
    MAX_CURSOR_BYTES,
    MAX_NOTIFICATION_BYTES,
    MAX_SESSION_BYTES,
    MAX_UPDATE_BYTES,
    Cursor,
    FlagRule,
    JournalEntry,
    Lock,
    Presence,
    RateDecision,
)
from persistence.errors import DocumentFrozen, StorageClosed, ValueTooLarge

pytestmark = pytest.mark.timeout(30)

SHORT = 0.5  # a TTL that expires within the test (real seconds for Redis)
LONG = 60.0  # a TTL that never expires within the test
DEADLINE = 5.0  # how long past a short TTL a Redis expiry may take to be observed


class SecondsClock:
    """The in-process adapter's clock in tests: Unix seconds that tests move by hand."""

    def __init__(self, now: float = 1_767_600_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    kind: str
    coordinator: Coordinator
    clock: SecondsClock | None
    make_peer: Callable[[], Coordinator]
    peers: list[Coordinator] = field(default_factory=list)

    def peer(self) -> Coordinator:
        """Another node on the same backend."""
        peer = self.make_peer()
        self.peers.append(peer)
        return peer

    async def after_ttl(self, ttl: float, condition: Callable[[], Awaitable[bool]]) -> None:
        """Let ``ttl`` seconds pass and wait until ``condition()`` holds: at once on the fake
        clock; polled under a deadline on Redis, whose TTLs run on its own clock."""
        if self.clock is not None:
            self.clock.advance(ttl)
            assert await condition()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ttl + DEADLINE
        while not await condition():
            assert loop.time() < deadline, "the TTL did not expire in time"
            await asyncio.sleep(0.02)


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = SecondsClock()
        memory = MemoryCoordinator(clock=clock)
        h = Harness("memory", memory, clock, lambda: memory)
    elif request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_key_prefix")
        h = Harness(
            "redis",
            RedisCoordinator.from_url(url, prefix=prefix),
            None,
            lambda: RedisCoordinator.from_url(url, prefix=prefix),
        )
    else:
        url = request.getfixturevalue("redis_cluster_url")
        prefix = request.getfixturevalue("redis_key_prefix")
        h = Harness(
            "redis",
            RedisCoordinator.cluster_from_url(url, prefix=prefix),
            None,
            lambda: RedisCoordinator.cluster_from_url(url, prefix=prefix),
        )
    try:
        yield h
    finally:
        for opened in [h.coordinator, *h.peers]:
            await opened.aclose()


# -- presence --------------------------------------------------------------------------------


async def test_members_lists_each_connection_with_its_section(harness: Harness) -> None:
    presence = harness.coordinator.presence
    joined = await presence.join("doc-1", "intro", "alice", "node-a", "c1", LONG)
    assert joined.document_id == "doc-1"
    assert (joined.section_id, joined.user_id, joined.node_id, joined.connection_id) == (
        "intro", "alice", "node-a", "c1",
    )  # fmt: skip
    assert isinstance(joined.joined_at, float)
    await presence.join("doc-1", None, "bob", "node-b", "c9", LONG)
    await presence.join("doc-1", "intro", "bob", "node-b", "c8", LONG)
    await presence.join("doc-1", "market", "alice", "node-a", "c2", LONG)
    await presence.join("doc-2", "intro", "carol", "node-a", "c3", LONG)
    members = await presence.members("doc-1")
    assert [(m.section_id, m.user_id, m.connection_id) for m in members] == [
        (None, "bob", "c9"),
        ("intro", "alice", "c1"),
        ("intro", "bob", "c8"),
        ("market", "alice", "c2"),
    ]
    assert members[1] == joined
    assert all(isinstance(m, Presence) for m in members)
    assert [m.user_id for m in await presence.members("doc-2")] == ["carol"]
    assert await presence.members("nobody-here") == []


async def test_members_are_shared_between_nodes(harness: Harness) -> None:
    await harness.coordinator.presence.join("d", "s", "alice", "node-a", "c1", LONG)
    await harness.peer().presence.join("d", "s", "bob", "node-b", "c1", LONG)
    for coordinator in (harness.coordinator, harness.peer()):
        assert [m.user_id for m in await coordinator.presence.members("d")] == ["alice", "bob"]


async def test_join_again_moves_the_connection(harness: Harness) -> None:
    presence = harness.coordinator.presence
    await presence.join("d", "s1", "alice", "node-a", "c1", LONG)
    await presence.join("d", "s1", "alice", "node-a", "c1", LONG)
    await presence.join("d", "s2", "alice", "node-a", "c1", LONG)
    assert [m.section_id for m in await presence.members("d")] == ["s2"]


async def test_leave_removes_one_connection_and_is_idempotent(harness: Harness) -> None:
    presence = harness.coordinator.presence
    await presence.join("d", "s", "alice", "node-a", "c1", LONG)
    await presence.join("d", "s", "alice", "node-a", "c2", LONG)
    assert await presence.leave("d", "node-a", "c1") is True
    assert await presence.leave("d", "node-a", "c1") is False
    assert await presence.leave("d", "node-b", "c2") is False
    assert [m.connection_id for m in await presence.members("d")] == ["c2"]


async def test_a_crashed_nodes_users_disappear_within_its_ttl(harness: Harness) -> None:
    presence = harness.coordinator.presence
    await presence.join("d", "s", "alice", "node-dies", "c1", SHORT)
    await presence.join("d2", "s", "alice", "node-dies", "c2", SHORT)
    await presence.join("d", "s", "bob", "node-lives", "c1", LONG)
    await harness.coordinator.cursors.set("d", "s", "alice", {"anchor": 3})
    assert len(await presence.members("d")) == 2

    async def only_bob_left() -> bool:
        return [m.user_id for m in await presence.members("d")] == ["bob"]

    # No heartbeat from node-dies: its entries go once its TTL is over.
    await harness.after_ttl(SHORT, only_bob_left)
    assert await presence.members("d2") == []
    assert await harness.coordinator.cursors.get("d", "s", "alice") is None


async def test_heartbeat_keeps_every_entry_of_the_node(harness: Harness) -> None:
    presence = harness.coordinator.presence
    await presence.join("d", "s", "alice", "node-a", "c1", SHORT)
    await presence.join("d2", "s", "alice", "node-a", "c2", SHORT)
    await presence.join("d", "s", "bob", "node-b", "c1", SHORT)
    assert await presence.heartbeat("node-a", LONG) is True

    async def bob_gone() -> bool:
        return "bob" not in [m.user_id for m in await presence.members("d")]

    # Once node-b's TTL (the same as node-a's first one) is over, node-a's entries remain.
    await harness.after_ttl(SHORT, bob_gone)
    assert [m.user_id for m in await presence.members("d")] == ["alice"]
    assert [m.user_id for m in await presence.members("d2")] == ["alice"]


async def test_a_lapsed_heartbeat_drops_the_nodes_stale_entries(harness: Harness) -> None:
    presence = harness.coordinator.presence
    await presence.join("d", "s", "alice", "node-a", "c1", SHORT)

    async def lapsed() -> bool:
        return await presence.members("d") == []

    await harness.after_ttl(SHORT, lapsed)
    assert await presence.heartbeat("node-a", LONG) is False
    assert await presence.members("d") == []
    assert await presence.heartbeat("node-a", LONG) is True


async def test_a_lapsed_node_rejoining_does_not_revive_other_entries(harness: Harness) -> None:
    presence = harness.coordinator.presence
    await presence.join("d", "s", "alice", "node-a", "c1", SHORT)
    await presence.join("d", "s", "bob", "node-a", "c2", SHORT)
    # A witness with the same TTL, written after the joins: once it is gone, node-a has
    # lapsed too. Nobody reads members meanwhile; then node-a joins with one connection.
    await harness.coordinator.cache.put("witness", {}, ttl=SHORT)

    async def witness_gone() -> bool:
        return await harness.coordinator.cache.get("witness") is None

    await harness.after_ttl(SHORT, witness_gone)
    await presence.join("d", "s", "alice", "node-a", "c1", LONG)
    assert [m.user_id for m in await presence.members("d")] == ["alice"]


async def test_drop_node_removes_every_entry_of_the_node(harness: Harness) -> None:
    presence = harness.coordinator.presence
    await presence.join("d", "s", "alice", "node-a", "c1", LONG)
    await presence.join("d", None, "alice", "node-a", "c2", LONG)
    await presence.join("d2", "s", "carol", "node-a", "c3", LONG)
    await presence.join("d", "s", "bob", "node-b", "c1", LONG)
    assert await presence.drop_node("node-a") == 3
    assert await presence.drop_node("node-a") == 0
    assert [m.user_id for m in await presence.members("d")] == ["bob"]
    assert await presence.members("d2") == []


# -- cursors ---------------------------------------------------------------------------------


async def test_cursor_set_get_and_list(harness: Harness) -> None:
    cursors = harness.coordinator.cursors
    await harness.coordinator.presence.join("d", "s", "alice", "node-a", "c1", LONG)
    await harness.coordinator.presence.join("d", None, "bob", "node-a", "c2", LONG)
    value = {"anchor": {"type": 7, "index": 12}, "head": [1, 2.5], "name": "Älice 🚀", "x": None}
    assert await cursors.set("d", "s", "alice", value) is True
    assert await cursors.set("d", None, "bob", "plain") is True
    cursor = await cursors.get("d", "s", "alice")
    assert isinstance(cursor, Cursor)
    assert (cursor.document_id, cursor.section_id, cursor.user_id) == ("d", "s", "alice")
    assert cursor.value == value
    assert isinstance(cursor.updated_at, float)
    assert await cursors.set("d", "s", "alice", [3, 4]) is True
    listed = await harness.peer().cursors.of_document("d")
    assert [(c.section_id, c.user_id, c.value) for c in listed] == [
        (None, "bob", "plain"),
        ("s", "alice", [3, 4]),
    ]
    assert await cursors.get("d", "other", "alice") is None
    assert await cursors.of_document("empty") == []


async def test_cursor_needs_the_user_present_in_that_section(harness: Harness) -> None:
    cursors = harness.coordinator.cursors
    await harness.coordinator.presence.join("d", "s", "alice", "node-a", "c1", LONG)
    assert await cursors.set("d", "s", "mallory", {"a": 1}) is False
    assert await cursors.set("d", "other", "alice", {"a": 1}) is False
    assert await cursors.set("d", None, "alice", {"a": 1}) is False
    assert await cursors.of_document("d") == []


async def test_cursor_goes_with_the_users_last_connection(harness: Harness) -> None:
    presence, cursors = harness.coordinator.presence, harness.coordinator.cursors
    await presence.join("d", "s", "alice", "node-a", "c1", LONG)
    await harness.peer().presence.join("d", "s", "alice", "node-b", "c2", LONG)
    await cursors.set("d", "s", "alice", {"at": 1})
    await presence.leave("d", "node-a", "c1")
    assert await cursors.get("d", "s", "alice") is not None
    await presence.join("d", "s2", "alice", "node-b", "c2", LONG)  # moves to another section
    assert await cursors.get("d", "s", "alice") is None
    await cursors.set("d", "s2", "alice", {"at": 2})
    assert await presence.drop_node("node-b") == 1
    assert await cursors.of_document("d") == []


async def test_cursor_remove(harness: Harness) -> None:
    cursors = harness.coordinator.cursors
    await harness.coordinator.presence.join("d", "s", "alice", "node-a", "c1", LONG)
    await cursors.set("d", "s", "alice", {"at": 1})
    assert await cursors.remove("d", "s", "alice") is True
    assert await cursors.remove("d", "s", "alice") is False
    assert await cursors.get("d", "s", "alice") is None
    assert len(await harness.coordinator.presence.members("d")) == 1


# -- locks -----------------------------------------------------------------------------------


async def test_acquire_holder_release(harness: Harness) -> None:
    locks = harness.coordinator.locks
    assert await locks.holder("d", "s") is None
    lock = await locks.acquire("d", "s", "alice", LONG)
    assert isinstance(lock, Lock)
    assert (lock.document_id, lock.section_id, lock.owner) == ("d", "s", "alice")
    assert lock.token >= 1
    assert lock.expires_at - lock.acquired_at == pytest.approx(LONG, abs=1.0)
    held = await harness.peer().locks.holder("d", "s")
    assert held is not None
    assert (held.owner, held.token, held.acquired_at) == ("alice", lock.token, lock.acquired_at)
    assert await locks.release("d", "s", "alice") is True
    assert await locks.release("d", "s", "alice") is False
    assert await locks.holder("d", "s") is None


async def test_acquire_refused_while_another_owner_holds_it(harness: Harness) -> None:
    locks = harness.coordinator.locks
    first = await locks.acquire("d", "s", "alice", LONG)
    assert first is not None
    assert await harness.peer().locks.acquire("d", "s", "bob", LONG) is None
    assert await locks.acquire("d", "other", "bob", LONG) is not None
    holder = await locks.holder("d", "s")
    assert holder is not None
    assert holder.owner == "alice"


async def test_reacquire_by_the_owner_renews_with_the_same_token(harness: Harness) -> None:
    locks = harness.coordinator.locks
    first = await locks.acquire("d", "s", "alice", 10)
    again = await locks.acquire("d", "s", "alice", LONG)
    assert first is not None
    assert again is not None
    assert (again.token, again.acquired_at) == (first.token, first.acquired_at)
    assert again.expires_at > first.expires_at + LONG / 2
    holder = await locks.holder("d", "s")
    assert holder is not None
    assert holder.expires_at > first.expires_at + LONG / 2


async def test_renew_only_by_the_owner_of_a_live_lock(harness: Harness) -> None:
    locks = harness.coordinator.locks
    first = await locks.acquire("d", "s", "alice", 10)
    assert first is not None
    assert await locks.renew("d", "s", "bob", LONG) is None
    renewed = await locks.renew("d", "s", "alice", LONG)
    assert renewed is not None
    assert renewed.token == first.token
    assert renewed.expires_at > first.expires_at + LONG / 2
    assert await locks.renew("d", "unlocked", "alice", LONG) is None


async def test_release_by_another_owner_is_refused_unless_forced(harness: Harness) -> None:
    locks = harness.coordinator.locks
    await locks.acquire("d", "s", "alice", LONG)
    assert await locks.release("d", "s", "bob") is False
    assert await locks.holder("d", "s") is not None
    assert await harness.peer().locks.release("d", "s", "admin", force=True) is True
    assert await locks.holder("d", "s") is None
    assert await locks.release("d", "s", "admin", force=True) is False


async def test_an_expired_lock_passes_on_with_a_higher_token(harness: Harness) -> None:
    locks = harness.coordinator.locks
    first = await locks.acquire("d", "s", "alice", SHORT)
    assert first is not None

    async def expired() -> bool:
        return await locks.holder("d", "s") is None

    await harness.after_ttl(SHORT, expired)
    assert await locks.renew("d", "s", "alice", LONG) is None
    assert await locks.release("d", "s", "alice") is False
    second = await locks.acquire("d", "s", "bob", LONG)
    assert second is not None
    assert second.token > first.token
    assert await locks.release("d", "s", "bob") is True
    third = await locks.acquire("d", "s", "alice", LONG)
    assert third is not None
    assert third.token > second.token


async def test_concurrent_acquirers_exactly_one_wins(harness: Harness) -> None:
    nodes = [harness.coordinator, harness.peer(), harness.peer()]
    attempts = [nodes[i % len(nodes)].locks.acquire("d", "s", f"user-{i}", LONG) for i in range(60)]
    results = await asyncio.gather(*attempts)
    winners = [lock for lock in results if lock is not None]
    assert len(winners) == 1
    holder = await harness.coordinator.locks.holder("d", "s")
    assert holder is not None
    assert holder.owner == winners[0].owner


async def test_concurrent_release_and_acquire_never_leave_two_holders(harness: Harness) -> None:
    locks, other = harness.coordinator.locks, harness.peer().locks
    tokens: list[int] = []
    for round_ in range(10):
        owner = f"owner-{round_}"
        contenders = [other.acquire("d", "s", f"late-{i}", LONG) for i in range(5)]
        results = await asyncio.gather(locks.acquire("d", "s", owner, LONG), *contenders)
        winners = [lock for lock in results if lock is not None]
        assert len(winners) == 1
        tokens.append(winners[0].token)
        assert await locks.release("d", "s", winners[0].owner) is True
    assert tokens == sorted(set(tokens))


async def test_held_lists_the_live_locks_of_a_document(harness: Harness) -> None:
    locks = harness.coordinator.locks
    await locks.acquire("d", "s2", "bob", LONG)
    await locks.acquire("d", "s1", "alice", LONG)
    await locks.acquire("d", "gone", "carol", LONG)
    await locks.acquire("other", "s1", "dave", LONG)
    await locks.release("d", "gone", "carol")
    held = await locks.held("d")
    assert [(lock.section_id, lock.owner) for lock in held] == [("s1", "alice"), ("s2", "bob")]
    assert await locks.held("nothing") == []


# -- the change journal ----------------------------------------------------------------------


def id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


async def test_append_then_read_in_order(harness: Harness) -> None:
    journal = harness.coordinator.journal
    ids = [
        await journal.append("d", "s1", b"\x00\x01", origin="node-a"),
        await journal.append("d", None, b"outline"),
        await journal.append("d", "s2", bytes(range(256)), origin="node-b"),
    ]
    await journal.append("other", "s1", b"elsewhere")
    assert [id_key(i) for i in ids] == sorted({id_key(i) for i in ids})
    entries = await harness.peer().journal.read("d")
    assert entries == [
        JournalEntry(ids[0], "d", "s1", b"\x00\x01", "node-a"),
        JournalEntry(ids[1], "d", None, b"outline", None),
        JournalEntry(ids[2], "d", "s2", bytes(range(256)), "node-b"),
    ]
    assert [e.id for e in await journal.read("d", after_id=ids[0])] == ids[1:]
    assert [e.id for e in await journal.read("d", count=2)] == ids[:2]
    assert await journal.read("d", after_id=ids[2]) == []
    assert await journal.read("empty") == []
    assert await journal.last_id("d") == ids[2]
    assert await journal.last_id("empty") == "0-0"


async def test_a_frozen_document_refuses_appends_on_every_node_until_thawed(
    harness: Harness,
) -> None:
    journal, peer = harness.coordinator.journal, harness.peer().journal
    before = await journal.append("d", "s", b"before")
    await journal.freeze("d")
    for node in (journal, peer):
        with pytest.raises(DocumentFrozen):
            await node.append("d", "s", b"refused")
    await peer.append("other", "s", b"another document is not frozen")
    forced = await peer.append("d", "s", b"acknowledged earlier", force=True)
    await peer.thaw("d")
    after = await journal.append("d", "s", b"after")
    entries = await journal.read("d")
    assert [e.id for e in entries] == [before, forced, after]
    assert b"refused" not in [e.update for e in entries]


async def test_concurrent_appends_from_several_nodes_are_all_kept(harness: Harness) -> None:
    nodes = [harness.coordinator, harness.peer()]

    async def writer(n: int) -> list[str]:
        journal = nodes[n % 2].journal
        return [await journal.append("d", "s", f"{n}:{i}".encode()) for i in range(20)]

    written = await asyncio.gather(*(writer(n) for n in range(8)))
    entries = await harness.coordinator.journal.read("d", count=1000)
    assert len(entries) == 160
    keys = [id_key(e.id) for e in entries]
    assert keys == sorted(set(keys))
    for n, ids in enumerate(written):
        mine = [e for e in entries if e.update.startswith(f"{n}:".encode())]
        assert [e.id for e in mine] == ids
        assert [e.update for e in mine] == [f"{n}:{i}".encode() for i in range(20)]


async def test_tail_returns_what_another_node_appends(harness: Harness) -> None:
    reader = harness.peer().journal
    start = await harness.coordinator.journal.last_id("d")
    waiting = asyncio.create_task(reader.tail({"d": start, "d2": "0-0"}, timeout=10.0))
    appended = await harness.coordinator.journal.append("d", "s", b"hello", origin="node-a")
    async with asyncio.timeout(DEADLINE):
        entries = await waiting
    assert entries == [JournalEntry(appended, "d", "s", b"hello", "node-a")]


async def test_tail_reads_several_documents_and_times_out_empty(harness: Harness) -> None:
    journal = harness.coordinator.journal
    first = await journal.append("a", "s", b"1")
    await journal.append("b", "s", b"2")
    await journal.append("a", "s", b"3")
    entries = await journal.tail({"a": first, "b": "0-0"}, timeout=1.0)
    assert sorted((e.document_id, e.update) for e in entries) == [("a", b"3"), ("b", b"2")]
    last = {"a": await journal.last_id("a"), "b": await journal.last_id("b")}
    assert await journal.tail(last, timeout=0.05) == []
    assert await journal.tail(last, timeout=0) == []
    assert await journal.tail({}, timeout=0.05) == []
    assert len(await journal.tail({"a": "0-0"}, timeout=0, count=1)) == 1


async def test_tail_can_be_cancelled(harness: Harness) -> None:
    journal = harness.coordinator.journal
    waiting = asyncio.create_task(journal.tail({"d": "0-0"}, timeout=10.0))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The coordinator still works after a cancelled wait.
    await journal.append("d", "s", b"after")
    assert len(await journal.tail({"d": "0-0"}, timeout=1.0)) == 1


async def test_wake_groups_name_the_documents_appended_to(harness: Harness) -> None:
    journal = harness.coordinator.journal
    group = journal.wake_group("wd")
    if group is None:  # one tail covers every document: no wake groups
        assert journal.wake_group("other") is None
        with pytest.raises(ValueError, match="no wake groups"):
            await journal.wake_position(0)
        with pytest.raises(ValueError, match="no wake groups"):
            await journal.woken(0, "0-0", timeout=0)
        return
    assert all(isinstance(journal.wake_group(f"wd{i}"), int) for i in range(50))
    assert len({journal.wake_group(f"wd{i}") for i in range(50)}) > 1  # documents spread
    start = await journal.wake_position(group)
    waiting = asyncio.create_task(harness.peer().journal.woken(group, start, timeout=10.0))
    await journal.append("wd", "s", b"hello", origin="node-a")
    async with asyncio.timeout(DEADLINE):
        position, woken = await waiting
    assert "wd" in woken
    assert position != start
    assert await journal.woken(group, position, timeout=0.05) == (position, [])
    # Signals wake their own groups too.
    signals = harness.coordinator.signals
    signal_group = signals.wake_group("wd")
    assert signal_group is not None
    signal_start = await signals.wake_position(signal_group)
    await signals.append("wd", None, b"\x01sig", origin="node-a")
    async with asyncio.timeout(DEADLINE):
        _, woken = await signals.woken(signal_group, signal_start, timeout=DEADLINE)
    assert woken == ["wd"]


async def test_trim_deletes_only_entries_up_to_the_id(harness: Harness) -> None:
    journal = harness.coordinator.journal
    ids = [await journal.append("d", "s", bytes([i])) for i in range(5)]
    await journal.append("other", "s", b"kept")
    assert await journal.trim("d", ids[2]) == 3
    assert [e.id for e in await journal.read("d")] == ids[3:]
    assert await journal.trim("d", ids[2]) == 0
    assert await journal.trim("d", "0-0") == 0
    later = await journal.append("d", "s", b"after the snapshot")
    assert id_key(later) > id_key(ids[4])
    assert [e.id for e in await journal.read("d")] == [*ids[3:], later]
    assert await journal.last_id("d") == later
    assert len(await journal.read("other")) == 1
    assert await journal.trim("never-written", ids[4]) == 0


# -- cache, sessions, flags ------------------------------------------------------------------


async def test_cache_put_get_delete_and_expiry(harness: Harness) -> None:
    cache = harness.coordinator.cache
    value = {"title": "Plan 🚀", "sections": [{"id": "s1", "words": 12}], "draft": True}
    assert await cache.get("d") is None
    await cache.put("d", value)
    assert await harness.peer().cache.get("d") == value
    await cache.put("d", {"title": "v2"})
    assert await cache.get("d") == {"title": "v2"}
    assert await cache.delete("d") is True
    assert await cache.delete("d") is False
    await cache.put("d", value, ttl=SHORT)

    async def gone() -> bool:
        return await cache.get("d") is None

    await harness.after_ttl(SHORT, gone)


async def test_sessions_put_get_touch_delete_and_expiry(harness: Harness) -> None:
    sessions = harness.coordinator.sessions
    data = {"userId": "u-1", "roles": ["editor"], "issuedAt": 1767600000}
    await sessions.put("sess-1", data, ttl=SHORT)
    await sessions.put("sess-2", {"userId": "u-2"}, ttl=SHORT)
    assert await sessions.get("sess-1") == data
    assert await sessions.touch("sess-1", LONG) is True
    assert await sessions.touch("missing", LONG) is False

    async def second_expired() -> bool:
        return await sessions.get("sess-2") is None

    # sess-2 had the same TTL as sess-1 before the touch: sess-1 outlives it.
    await harness.after_ttl(SHORT, second_expired)
    assert await sessions.get("sess-1") == data
    assert await sessions.touch("sess-2", LONG) is False
    assert await sessions.delete("sess-1") is True
    assert await sessions.delete("sess-1") is False
    assert await sessions.get("sess-1") is None


async def test_feature_flags(harness: Harness) -> None:
    flags = harness.coordinator.flags
    assert await flags.get("new-editor") is False
    assert await flags.get("new-editor", default=True) is True
    await flags.set("new-editor", True)
    await flags.set("old-export", False)
    assert await harness.peer().flags.get("new-editor") is True
    assert await flags.get("old-export", default=True) is False
    assert await flags.many(["new-editor", "old-export", "unset"]) == {
        "new-editor": True,
        "old-export": False,
        "unset": False,
    }
    assert await flags.many([]) == {}
    assert await flags.delete("new-editor") is True
    assert await flags.delete("new-editor") is False
    assert await flags.get("new-editor") is False


async def test_feature_flag_rollouts(harness: Harness) -> None:
    flags = harness.coordinator.flags
    assert await flags.rule("beta") is None
    await flags.set("beta", True, rollout=37)
    assert await harness.peer().flags.rule("beta") == FlagRule(True, 37)
    assert await flags.get("beta") is True
    await flags.set("beta", False)
    assert await flags.rule("beta") == FlagRule(False, None)
    for bad in (101, -1, True, 2.5):
        with pytest.raises(ValueError, match="rollout"):
            await flags.set("beta", True, rollout=bad)  # type: ignore[arg-type]
    assert await flags.rule("beta") == FlagRule(False, None)  # unchanged


# -- rate limits, stats, notifications -------------------------------------------------------


async def test_rate_limit_fixed_window(harness: Harness) -> None:
    limits = harness.coordinator.rate_limits
    decisions = [await limits.hit("u-1", "comment", 3, LONG) for _ in range(3)]
    assert decisions == [
        RateDecision(True, 2, 0.0),
        RateDecision(True, 1, 0.0),
        RateDecision(True, 0, 0.0),
    ]
    refused = await limits.hit("u-1", "comment", 3, LONG)
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert LONG - DEADLINE < refused.retry_after <= LONG
    assert (await limits.hit("u-1", "upload", 3, LONG)).allowed
    assert (await limits.hit("u-2", "comment", 3, LONG)).allowed
    assert await limits.reset("u-1", "comment") is True
    assert await limits.reset("u-1", "comment") is False
    assert (await limits.hit("u-1", "comment", 3, LONG)).remaining == 2


async def test_rate_limit_window_ends(harness: Harness) -> None:
    limits = harness.coordinator.rate_limits
    assert (await limits.hit("u-1", "burst", 1, SHORT)).allowed

    async def window_over() -> bool:
        return (await limits.hit("u-1", "burst", 1, SHORT)).allowed

    await harness.after_ttl(SHORT, window_over)


async def test_rate_limit_holds_under_concurrency(harness: Harness) -> None:
    nodes = [harness.coordinator, harness.peer(), harness.peer()]
    hits = [nodes[i % 3].rate_limits.hit("u-1", "edit", 10, LONG) for i in range(50)]
    decisions = await asyncio.gather(*hits)
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
    assert all(d.retry_after > 0 for d in decisions if not d.allowed)


async def test_stats_counters(harness: Harness) -> None:
    stats = harness.coordinator.stats
    assert await stats.get("edits", "2026-01-05T09") == {}
    assert await stats.incr("edits", "2026-01-05T09", "updates") == 1
    assert await stats.incr("edits", "2026-01-05T09", "updates", 4) == 5
    assert await harness.peer().stats.incr("edits", "2026-01-05T09", "bytes", 512) == 512
    assert await stats.incr("edits", "2026-01-05T09", "updates", -2) == 3
    assert await stats.get("edits", "2026-01-05T09") == {"updates": 3, "bytes": 512}
    await stats.incr("edits", "short", "updates", ttl=SHORT)

    async def gone() -> bool:
        return await stats.get("edits", "short") == {}

    await harness.after_ttl(SHORT, gone)


async def test_stats_counters_add_up_under_concurrency(harness: Harness) -> None:
    nodes = [harness.coordinator, harness.peer()]
    await asyncio.gather(*(nodes[i % 2].stats.incr("k", "p", "m") for i in range(40)))
    assert await harness.coordinator.stats.get("k", "p") == {"m": 40}


async def test_notification_queue_is_fifo_and_bounded(harness: Harness) -> None:
    queues = harness.coordinator.notifications
    assert await queues.size("u-1") == 0
    assert await queues.pop("u-1") == []
    for i in range(5):
        assert await queues.push("u-1", {"n": i, "text": "Ünïcode"}, max_len=3) == min(i + 1, 3)
    assert await queues.size("u-1") == 3
    assert await harness.peer().notifications.peek("u-1") == [
        {"n": 2, "text": "Ünïcode"},
        {"n": 3, "text": "Ünïcode"},
        {"n": 4, "text": "Ünïcode"},
    ]
    assert [n["n"] for n in await queues.pop("u-1")] == [2]
    assert [n["n"] for n in await queues.peek("u-1", 1)] == [3]
    assert [n["n"] for n in await queues.pop("u-1", 10)] == [3, 4]
    assert await queues.size("u-1") == 0
    await queues.push("u-2", {"n": 0})
    assert await queues.size("u-2") == 1


# -- durability and lifecycle ----------------------------------------------------------------


async def test_durability_report(harness: Harness) -> None:
    report = await harness.coordinator.durability()
    if harness.kind == "memory":
        assert (report.backend, report.aof_enabled, report.durable) == ("memory", False, False)
    else:
        assert report.backend == "redis"
        assert report.durable == (report.aof_enabled and report.appendfsync == "always")


async def test_calls_after_aclose_raise_storage_closed(harness: Harness) -> None:
    coordinator = harness.coordinator
    await coordinator.aclose()
    await coordinator.aclose()
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: coordinator.presence.members("d"),
        lambda: coordinator.locks.acquire("d", "s", "alice", LONG),
        lambda: coordinator.journal.append("d", "s", b"x"),
        lambda: coordinator.cache.get("d"),
        lambda: coordinator.flags.get("f"),
        lambda: coordinator.durability(),
    ]
    for call in calls:
        with pytest.raises(StorageClosed):
            await call()


async def test_aclose_ends_a_waiting_tail(harness: Harness) -> None:
    waiting = asyncio.create_task(harness.coordinator.journal.tail({"d": "0-0"}, timeout=10))
    await asyncio.sleep(0)
    await harness.coordinator.aclose()
    with pytest.raises(StorageClosed):
        await waiting


# -- bad input -------------------------------------------------------------------------------

BAD_DOCUMENT_IDS = ["", "a/b", "a:b", "a b", "x" * 65, "ünï", None, 7, "*"]
BAD_TOKENS = ["", "a:b", "a b", "x" * 129, "tab\t", "new\nline", None, 7, b"bytes", "{x}", "a*"]
BAD_TTLS = [0, -1, math.nan, math.inf, True, "5", None, 31 * 86_400]


@pytest.mark.parametrize("bad", BAD_DOCUMENT_IDS)
async def test_bad_document_ids_are_refused(harness: Harness, bad: Any) -> None:
    c = harness.coordinator
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: c.presence.join(bad, "s", "u", "n", "c", LONG),
        lambda: c.presence.members(bad),
        lambda: c.cursors.set(bad, "s", "u", 1),
        lambda: c.locks.acquire(bad, "s", "u", LONG),
        lambda: c.locks.acquire("d", bad, "u", LONG),
        lambda: c.locks.held(bad),
        lambda: c.journal.append(bad, "s", b"x"),
        lambda: c.journal.read(bad),
        lambda: c.journal.tail({bad: "0-0"}, timeout=0),
        lambda: c.cache.put(bad, {}),
        lambda: c.cache.get(bad),
    ]
    if bad is not None:  # a section id of None is the outline room
        calls.append(lambda: c.journal.append("d", bad, b"x"))
        calls.append(lambda: c.presence.join("d", bad, "u", "n", "c", LONG))
    for call in calls:
        with pytest.raises(ValueError, match="id"):
            await call()


@pytest.mark.parametrize("bad", BAD_TOKENS)
async def test_bad_tokens_are_refused(harness: Harness, bad: Any) -> None:
    c = harness.coordinator
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: c.presence.join("d", "s", bad, "n", "c", LONG),
        lambda: c.presence.join("d", "s", "u", bad, "c", LONG),
        lambda: c.presence.join("d", "s", "u", "n", bad, LONG),
        lambda: c.presence.heartbeat(bad, LONG),
        lambda: c.locks.acquire("d", "s", bad, LONG),
        lambda: c.sessions.get(bad),
        lambda: c.flags.set(bad, True),
        lambda: c.flags.many(["ok", bad]),
        lambda: c.rate_limits.hit(bad, "a", 1, LONG),
        lambda: c.rate_limits.hit("u", bad, 1, LONG),
        lambda: c.stats.incr(bad, "p", "m"),
        lambda: c.stats.incr("t", "p", bad),
        lambda: c.notifications.push(bad, {}),
    ]
    if bad is not None:  # no origin is None
        calls.append(lambda: c.journal.append("d", "s", b"x", origin=bad))
    for call in calls:
        with pytest.raises(ValueError, match=r"1\.\.128 characters"):
            await call()


@pytest.mark.parametrize("bad", BAD_TTLS)
async def test_bad_durations_are_refused(harness: Harness, bad: Any) -> None:
    c = harness.coordinator
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: c.presence.join("d", "s", "u", "n", "c", bad),
        lambda: c.presence.heartbeat("n", bad),
        lambda: c.locks.acquire("d", "s", "u", bad),
        lambda: c.cache.put("d", {}, ttl=bad),
        lambda: c.sessions.touch("sess", bad),
        lambda: c.rate_limits.hit("u", "a", 1, bad),
        lambda: c.stats.incr("t", "p", "m", ttl=bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="seconds"):
            await call()
    assert await c.presence.members("d") == []
    assert await c.locks.holder("d", "s") is None


async def test_bad_counts_entry_ids_and_values_are_refused(harness: Harness) -> None:
    c = harness.coordinator
    calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("count", lambda: c.journal.read("d", count=0)),
        ("count", lambda: c.journal.read("d", count=1001)),
        ("entry id", lambda: c.journal.read("d", after_id="12")),
        ("entry id", lambda: c.journal.read("d", after_id="a-b")),
        ("entry id", lambda: c.journal.read("d", after_id="1-2-3")),
        ("entry id", lambda: c.journal.read("d", after_id="-1-0")),
        ("entry id", lambda: c.journal.read("d", after_id="99999999999999999999999-0")),
        ("entry id", lambda: c.journal.trim("d", "+")),
        ("entry id", lambda: c.journal.tail({"d": "$"}, timeout=0)),
        ("timeout", lambda: c.journal.tail({"d": "0-0"}, timeout=-1)),
        ("update", lambda: c.journal.append("d", "s", b"")),
        ("update", lambda: c.journal.append("d", "s", "text")),  # type: ignore[arg-type]
        ("limit", lambda: c.rate_limits.hit("u", "a", 0, LONG)),
        ("limit", lambda: c.rate_limits.hit("u", "a", 1.5, LONG)),  # type: ignore[arg-type]
        ("count", lambda: c.notifications.pop("u", 0)),
        ("max_len", lambda: c.notifications.push("u", {}, max_len=0)),
        ("True or False", lambda: c.flags.set("f", 1)),  # type: ignore[arg-type]
        ("amount", lambda: c.stats.incr("t", "p", "m", True)),
        ("JSON object", lambda: c.cache.put("d", ["not", "an", "object"])),  # type: ignore[arg-type]
        ("not a JSON value", lambda: c.sessions.put("s", {"when": object()})),
        ("keys must be strings", lambda: c.sessions.put("s", {1: "int key"})),  # type: ignore[dict-item]
        ("NaN", lambda: c.sessions.put("s", {"nan": math.nan})),
        ("not a JSON value", lambda: c.notifications.push("u", {"set": {1, 2}})),
        ("nested deeper", lambda: c.cache.put("d", {"deep": nested(40)})),
    ]
    for match, call in calls:
        with pytest.raises(ValueError, match=match):
            await call()
    assert await c.journal.read("d") == []
    assert await c.sessions.get("s") is None
    assert await c.cache.get("d") is None
    assert await c.notifications.size("u") == 0


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


async def test_oversize_values_are_refused_and_nothing_is_written(harness: Harness) -> None:
    c = harness.coordinator
    await c.presence.join("d", "s", "alice", "node-a", "c1", LONG)
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: c.cursors.set("d", "s", "alice", "x" * (MAX_CURSOR_BYTES + 1)),
        lambda: c.sessions.put("sess", {"blob": "x" * MAX_SESSION_BYTES}),
        lambda: c.notifications.push("u", {"blob": "x" * MAX_NOTIFICATION_BYTES}),
        lambda: c.cache.put("d", {"blob": "x" * MAX_CACHE_BYTES}),
        lambda: c.journal.append("d", "s", b"x" * (MAX_UPDATE_BYTES + 1)),
    ]
    for call in calls:
        with pytest.raises(ValueTooLarge):
            await call()
    assert issubclass(ValueTooLarge, ValueError)
    assert await c.cursors.get("d", "s", "alice") is None
    assert await c.sessions.get("sess") is None
    assert await c.notifications.size("u") == 0
    assert await c.cache.get("d") is None
    assert await c.journal.read("d") == []
    # The limits are inclusive: a value of exactly the limit is stored.
    assert await c.cursors.set("d", "s", "alice", "x" * (MAX_CURSOR_BYTES - 2)) is True
