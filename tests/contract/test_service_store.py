"""What the service-mode room store guarantees beyond the RoomStore contract.

``test_contract_room_store.py`` runs the port's contract against
:class:`persistence.rooms.service.ServiceRoomStore`; this file checks what only the service
mode has: one change stream shared by every section of a document (the trim rule), several
nodes on one stream, journal positions as ints, a Redis crash, the durability check, and
failing backends. Each test runs on both backends (Redis journal + embedded SQLite content
store; in-process journal + Mongo content store on mongomock) unless it needs one of them.
Stores that a test opens as "nodes" share one journal and one content store, as server
nodes share one Redis and one MongoDB.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pycrdt
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.ids import InvalidRoomName, RoomName
from persistence.content.mongo import MongoContentStore
from persistence.content.ports import ContentStore
from persistence.content.sqlite import SqliteContentStore
from persistence.coordinator.memory import MemoryCoordinator
from persistence.coordinator.ports import ChangeJournal
from persistence.coordinator.redis import RedisCoordinator
from persistence.coordinator.values import DurabilityReport, JournalEntry
from persistence.errors import (
    StorageClosed,
    StorageConflict,
    StorageCorrupted,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)
from persistence.rooms import service as service_store
from persistence.rooms.ports import StoredRoom
from persistence.rooms.service import (
    MAX_JOURNAL_SEQ,
    ServiceRoomStore,
    covered_position,
    journal_seq,
    require_durable,
)
from persistence.rooms.sqlite_spool import Spool
from tests.contract.mongomock_async import AsyncMockClient

if TYPE_CHECKING:
    from tests.services.redis import StartRedis, ThrowawayRedis

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0  # seconds any awaited future or event may take before the test fails


# -- backends and instrumented wrappers ------------------------------------------------------


class Journal:
    """A change journal in front of the real one: can hold or fail calls on request."""

    def __init__(self, inner: ChangeJournal) -> None:
        self.inner = inner
        self.hold_trim: asyncio.Event | None = None
        self.trim_reached = asyncio.Event()
        self.hold_append: asyncio.Event | None = None
        self.append_reached = asyncio.Event()
        self.hold_after_append: asyncio.Event | None = None
        self.appended = asyncio.Event()
        self.fail_append: set[bytes] = set()
        self.fail_read: StorageError | None = None
        self.fail_trim: StorageError | None = None
        self.down: StorageUnavailable | None = None  # fails every append (a write outage)
        self.hold_update: dict[bytes, asyncio.Event] = {}  # holds the append of that update
        self.update_reached: dict[bytes, asyncio.Event] = {}
        self.entries: list[JournalEntry] = []  # every entry appended through this wrapper

    async def freeze(self, document_id: str) -> None:
        await self.inner.freeze(document_id)

    async def thaw(self, document_id: str) -> None:
        await self.inner.thaw(document_id)

    async def append(
        self,
        document_id: str,
        section_id: str | None,
        update: bytes,
        *,
        origin: str | None = None,
        force: bool = False,
    ) -> str:
        self.append_reached.set()
        self.update_reached.setdefault(update, asyncio.Event()).set()
        if self.hold_append is not None:
            await self.hold_append.wait()
        if update in self.hold_update:
            await self.hold_update[update].wait()
        if self.down is not None:
            raise self.down
        if update in self.fail_append:
            raise StorageUnavailable("injected: the journal is unreachable")
        entry_id = await self.inner.append(
            document_id, section_id, update, origin=origin, force=force
        )
        self.entries.append(JournalEntry(entry_id, document_id, section_id, update, origin))
        self.appended.set()
        if self.hold_after_append is not None:
            await self.hold_after_append.wait()
        return entry_id

    async def read(
        self, document_id: str, after_id: str | None = None, count: int = 100
    ) -> list[JournalEntry]:
        if self.fail_read is not None:
            raise self.fail_read
        return await self.inner.read(document_id, after_id, count)

    async def trim(self, document_id: str, up_to_id: str) -> int:
        self.trim_reached.set()
        if self.hold_trim is not None:
            await self.hold_trim.wait()
        if self.fail_trim is not None:
            raise self.fail_trim
        return await self.inner.trim(document_id, up_to_id)


class States:
    """A content store in front of the real one, for its CRDT-state calls only."""

    def __init__(self, inner: ContentStore) -> None:
        self.inner = inner
        self.hold_save: asyncio.Event | None = None
        self.save_reached = asyncio.Event()
        self.fail_load: StorageError | None = None
        self.fail_save: StorageError | None = None
        self.corrupt_seq: int | None = None

    async def save_crdt_state(self, room: str, state: bytes, journal_seq: int) -> None:
        self.save_reached.set()
        if self.hold_save is not None:
            await self.hold_save.wait()
        if self.fail_save is not None:
            raise self.fail_save
        await self.inner.save_crdt_state(room, state, journal_seq)

    async def load_crdt_state(self, room: str) -> tuple[bytes, int] | None:
        if self.fail_load is not None:
            raise self.fail_load
        loaded = await self.inner.load_crdt_state(room)
        if loaded is not None and self.corrupt_seq is not None:
            return loaded[0], self.corrupt_seq
        return loaded


@dataclass
class Backend:
    """One journal and one content store; ``node()`` opens a store on them (a server node)."""

    journal: ChangeJournal
    states: ContentStore
    opened: list[ServiceRoomStore] = field(default_factory=list)

    def node(
        self,
        origin: str = "node-a",
        *,
        journal: Journal | None = None,
        states: States | None = None,
        follow: bool = False,
        spool: Spool | None = None,
    ) -> ServiceRoomStore:
        store = ServiceRoomStore(
            cast(ChangeJournal, journal) if journal is not None else self.journal,
            cast(ContentStore, states) if states is not None else self.states,
            origin=origin,
            follow=follow,
            spool=spool,
        )
        self.opened.append(store)
        return store

    async def entries(self, document_id: str) -> list[JournalEntry]:
        """The entries left in the document's stream, oldest first."""
        found: list[JournalEntry] = []
        after: str | None = None
        while page := await self.journal.read(document_id, after, 1000):
            found += page
            after = page[-1].id
        return found

    async def stream(self, document_id: str) -> list[bytes]:
        """The updates left in the document's stream, oldest first."""
        return [entry.update for entry in await self.entries(document_id)]


@pytest.fixture(params=["redis-sqlite", "memory-mongomock"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with AsyncExitStack() as stack:
        states: ContentStore
        if request.param == "redis-sqlite":
            url: str = request.getfixturevalue("redis_url")
            prefix: str = request.getfixturevalue("redis_key_prefix")
            coordinator: RedisCoordinator | MemoryCoordinator = await stack.enter_async_context(
                RedisCoordinator.from_url(url, prefix=prefix)
            )
            states = await stack.enter_async_context(
                await SqliteContentStore.open(tmp_path / "content.sqlite3")
            )
        else:
            coordinator = await stack.enter_async_context(MemoryCoordinator())
            client = AsyncMockClient()
            stack.push_async_callback(client.close)
            states = await stack.enter_async_context(MongoContentStore(client["collab_test"]))
            await states.ensure_indexes()
        opened = Backend(coordinator.journal, states)
        yield opened
        for store in opened.opened:
            await store.aclose()


async def settle(*futures: asyncio.Future[Any]) -> None:
    """Wait for every future (their outcome is checked by the caller)."""
    await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), WAIT)


# -- journal positions -----------------------------------------------------------------------

U64 = 2**64 - 1
in_range = st.tuples(st.integers(0, 2**43 - 1), st.integers(0, 2**20 - 1))
any_id = st.tuples(st.integers(0, U64), st.integers(0, U64))


@settings(max_examples=300, deadline=None)
@given(in_range, in_range)
def test_journal_seq_is_exact_and_keeps_the_order_in_range(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    seq_a, seq_b = journal_seq(f"{a[0]}-{a[1]}"), journal_seq(f"{b[0]}-{b[1]}")
    assert 0 <= seq_a <= MAX_JOURNAL_SEQ
    assert covered_position(seq_a) == a
    assert (seq_a < seq_b) == (a < b)
    assert (seq_a == seq_b) == (a == b)


@settings(max_examples=300, deadline=None)
@given(any_id, any_id)
def test_journal_seq_is_a_monotone_lower_bound_beyond_the_range(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    seq_a, seq_b = journal_seq(f"{a[0]}-{a[1]}"), journal_seq(f"{b[0]}-{b[1]}")
    assert 0 <= seq_a <= MAX_JOURNAL_SEQ
    assert covered_position(seq_a) <= a  # never claims to cover more than it does
    if a <= b:
        assert seq_a <= seq_b


def test_journal_seq_of_a_real_stream_id_and_bad_values() -> None:
    assert covered_position(journal_seq("1767600000000-3")) == (1767600000000, 3)
    assert covered_position(journal_seq("0-0")) == (0, 0)
    assert covered_position(journal_seq(f"{2**43}-0")) == (2**43 - 1, 2**20 - 1)
    with pytest.raises(ValueError, match="entry id"):
        journal_seq("12")
    for bad in (-1, MAX_JOURNAL_SEQ + 1):
        with pytest.raises(StorageCorrupted):
            covered_position(bad)


# -- one stream, several sections ------------------------------------------------------------


async def test_trimming_one_section_keeps_the_uncovered_entries_of_the_others(
    backend: Backend,
) -> None:
    node_a = backend.node("node-a")
    for room, update in [
        ("d/s1", b"a1"), ("d/s2", b"b1"), ("d/s1", b"a2"),
        ("d", b"o1"), ("d/s2", b"b2"), ("d/s1", b"a3"),
    ]:  # fmt: skip
        await asyncio.wait_for(node_a.append(room, update), WAIT)

    await asyncio.wait_for(node_a.compact("d/s1", b"state-s1"), WAIT)
    # Only a1 goes: b1 (s2 has no state) stops the trim, even though a2 and a3 are covered.
    assert await backend.stream("d") == [b"b1", b"a2", b"o1", b"b2", b"a3"]
    assert await node_a.load("d/s2") == StoredRoom(None, (b"b1", b"b2"))
    assert await node_a.load("d") == StoredRoom(None, (b"o1",))
    assert await node_a.load("d/s1") == StoredRoom(b"state-s1", ())

    # Another node knows nothing of s1's state from memory: it reads it from the content store.
    node_b = backend.node("node-b")
    assert await node_b.load("d/s2") == StoredRoom(None, (b"b1", b"b2"))
    await asyncio.wait_for(node_b.compact("d/s2", b"state-s2"), WAIT)
    assert await backend.stream("d") == [b"o1", b"b2", b"a3"]  # the outline's o1 stops it

    await asyncio.wait_for(node_a.compact("d", b"state-outline"), WAIT)
    assert await backend.stream("d") == []

    node_c = backend.node("node-c")
    assert await node_c.load("d") == StoredRoom(b"state-outline", ())
    assert await node_c.load("d/s1") == StoredRoom(b"state-s1", ())
    assert await node_c.load("d/s2") == StoredRoom(b"state-s2", ())


async def test_long_streams_are_read_and_trimmed_page_by_page(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_store, "READ_PAGE", 3)
    node = backend.node()
    s1 = [f"s1-{i}".encode() for i in range(10)]
    s2 = [f"s2-{i}".encode() for i in range(4)]
    await settle(*(node.append("d/s1", update) for update in s1))
    await settle(*(node.append("d/s2", update) for update in s2[:2]))
    await settle(node.append("d/s1", b"s1-late"))
    await settle(*(node.append("d/s2", update) for update in s2[2:]))
    assert await node.load("d/s1") == StoredRoom(None, (*s1, b"s1-late"))

    await asyncio.wait_for(node.compact("d/s1", b"state"), WAIT)
    assert await backend.stream("d") == [*s2[:2], b"s1-late", *s2[2:]]
    assert await backend.node("node-b").load("d/s2") == StoredRoom(None, tuple(s2))
    assert await backend.node("node-c").load("d/s1") == StoredRoom(b"state", ())


async def test_entries_appended_while_a_compaction_runs_are_kept(backend: Backend) -> None:
    """Appends of the same room by another node, and of another section, land while the
    state is being saved and between the trim's walk and its XTRIM: none is lost."""
    journal, states = Journal(backend.journal), States(backend.states)
    node_a = backend.node("node-a", journal=journal, states=states)
    node_b = backend.node("node-b")
    await settle(*(node_a.append("d/s1", f"early-{i}".encode()) for i in range(3)))

    states.hold_save, journal.hold_trim = asyncio.Event(), asyncio.Event()
    compaction = node_a.compact("d/s1", b"state")
    queued_after = node_a.append("d/s1", b"late-a")
    await asyncio.wait_for(states.save_reached.wait(), WAIT)
    assert not journal.trim_reached.is_set()  # no trim before the state is stored
    await asyncio.wait_for(node_b.append("d/s1", b"during-save"), WAIT)
    await asyncio.wait_for(node_a.append("d/s2", b"other-section"), WAIT)
    states.hold_save.set()
    await asyncio.wait_for(journal.trim_reached.wait(), WAIT)
    await asyncio.wait_for(node_b.append("d/s1", b"during-trim"), WAIT)
    assert not compaction.done()
    assert not queued_after.done()  # FIFO: it waits behind the compaction
    journal.hold_trim.set()
    await asyncio.wait_for(asyncio.gather(compaction, queued_after), WAIT)

    kept = [b"during-save", b"other-section", b"during-trim", b"late-a"]
    assert await backend.stream("d") == kept
    node_c = backend.node("node-c")
    s1_after_state = (b"during-save", b"during-trim", b"late-a")
    assert await node_c.load("d/s1") == StoredRoom(b"state", s1_after_state)
    assert await node_c.load("d/s2") == StoredRoom(None, (b"other-section",))


async def test_a_compaction_claims_only_what_was_appended_before_it(backend: Backend) -> None:
    """The compaction waits behind this node's last append; another node appends to the
    same room after the compaction call (a later id): that entry stays in the journal."""
    journal = Journal(backend.journal)
    node_a, node_b = backend.node("node-a", journal=journal), backend.node("node-b")
    journal.hold_after_append = asyncio.Event()
    last_before = node_a.append("d/s", b"a-before")
    compaction = node_a.compact("d/s", b"state")
    await asyncio.wait_for(journal.appended.wait(), WAIT)  # a-before is in the stream
    await asyncio.wait_for(node_b.append("d/s", b"b-after-call"), WAIT)
    journal.hold_after_append.set()
    await asyncio.wait_for(asyncio.gather(last_before, compaction), WAIT)
    assert await backend.stream("d") == [b"b-after-call"]
    assert await backend.node("node-c").load("d/s") == StoredRoom(b"state", (b"b-after-call",))


async def test_a_compaction_racing_appends_of_every_room(backend: Backend) -> None:
    """Nothing held: appends of two nodes and two sections all in flight around a
    compaction. The state replaces exactly the appends issued before it."""
    node_a, node_b = backend.node("node-a"), backend.node("node-b")
    early = [f"early-{i}".encode() for i in range(40)]
    late = [f"late-{i}".encode() for i in range(40)]
    other = [f"other-{i}".encode() for i in range(80)]
    futures = [node_a.append("d/s1", update) for update in early]
    futures += [node_b.append("d/s2", update) for update in other[:40]]
    compaction = node_a.compact("d/s1", b"state")
    futures += [node_a.append("d/s1", update) for update in late]
    futures += [node_b.append("d/s2", update) for update in other[40:]]
    await asyncio.wait_for(asyncio.gather(compaction, *futures), WAIT)

    node_c = backend.node("node-c")
    assert await node_c.load("d/s1") == StoredRoom(b"state", tuple(late))
    assert await node_c.load("d/s2") == StoredRoom(None, tuple(other))
    assert set(await backend.stream("d")) <= {*late, *other, *early}
    assert set(await backend.stream("d")) >= {*late, *other}


async def test_a_compaction_behind_a_newer_state_fails_and_keeps_it(backend: Backend) -> None:
    node_a, node_b = backend.node("node-a"), backend.node("node-b")
    await asyncio.wait_for(node_a.append("d/s", b"x1"), WAIT)
    await asyncio.wait_for(node_b.append("d/s", b"x2"), WAIT)
    assert await node_b.load("d/s") == StoredRoom(None, (b"x1", b"x2"))
    await asyncio.wait_for(node_b.compact("d/s", b"state-b"), WAIT)
    with pytest.raises(StorageConflict):
        await asyncio.wait_for(node_a.compact("d/s", b"state-a"), WAIT)
    assert await backend.node("node-c").load("d/s") == StoredRoom(b"state-b", ())


async def test_a_compaction_whose_state_is_not_saved_trims_nothing(backend: Backend) -> None:
    states = States(backend.states)
    node = backend.node(states=states)
    await settle(node.append("d/s", b"1"), node.append("d/s", b"2"))
    states.fail_save = StorageUnavailable("injected: the content store is unreachable")
    with pytest.raises(StorageUnavailable):
        await asyncio.wait_for(node.compact("d/s", b"state"), WAIT)
    assert await backend.stream("d") == [b"1", b"2"]
    assert await backend.node("node-b").load("d/s") == StoredRoom(None, (b"1", b"2"))


async def test_a_failed_trim_still_completes_the_compaction(backend: Backend) -> None:
    journal = Journal(backend.journal)
    node = backend.node(journal=journal)
    await settle(node.append("d/s", b"1"), node.append("d/s", b"2"))
    journal.fail_trim = StorageUnavailable("injected: trim failed")
    await asyncio.wait_for(node.compact("d/s", b"state"), WAIT)
    assert await backend.stream("d") == [b"1", b"2"]  # kept, but covered by the state
    assert await backend.node("node-b").load("d/s") == StoredRoom(b"state", ())
    journal.fail_trim = None
    await asyncio.wait_for(node.compact("d/s", b"state"), WAIT)
    assert await backend.stream("d") == []


# -- several nodes on one room: follow mode --------------------------------------------------


async def _ids(backend: Backend, document_id: str) -> dict[bytes, str]:
    """The stream id of each update left in the document's stream."""
    return {entry.update: entry.id for entry in await backend.entries(document_id)}


async def _saved_seq(backend: Backend, room: str) -> int | None:
    saved = await backend.states.load_crdt_state(room)
    return None if saved is None else saved[1]


@pytest.mark.parametrize("follow", [False, True], ids=["own-appends", "follow"])
async def test_what_a_compaction_claims_with_and_without_follow_mode(
    backend: Backend, follow: bool
) -> None:
    """Node A appends a1, node B b1, node A a2; A has applied a1 only when it compacts.
    Without follow mode A claims up to a2, its own last append (the one-node rule, kept);
    in follow mode only up to a1, the newest entry it marked."""
    node_a, node_b = backend.node("node-a", follow=follow), backend.node("node-b")
    for node, update in ((node_a, b"a1"), (node_b, b"b1"), (node_a, b"a2")):
        await asyncio.wait_for(node.append("d/s", update), WAIT)
    ids = await _ids(backend, "d")
    if follow:
        node_a.mark_applied("d/s", ids[b"a1"])
    await asyncio.wait_for(node_a.compact("d/s", b"state-a1-a2"), WAIT)
    assert await _saved_seq(backend, "d/s") == journal_seq(ids[b"a1" if follow else b"a2"])


async def test_follow_mode_keeps_the_entries_a_compaction_has_not_applied(
    backend: Backend,
) -> None:
    """Two nodes on one stream, interleaved appends. Node A compacts before its follower
    applied B's entry b1: b1 is neither trimmed nor skipped at load. Nothing is lost."""
    node_a, node_b = backend.node("node-a", follow=True), backend.node("node-b", follow=True)
    assert await node_a.load("d/s") == StoredRoom(None, ())
    assert await node_b.load("d/s") == StoredRoom(None, ())
    for node, update in ((node_a, b"a1"), (node_b, b"b1"), (node_a, b"a2"), (node_b, b"b2")):
        await asyncio.wait_for(node.append("d/s", update), WAIT)
    ids = await _ids(backend, "d")

    node_a.mark_applied("d/s", ids[b"a1"])  # A's follower has skipped a1 (its own), no more
    await asyncio.wait_for(node_a.compact("d/s", b"state-a"), WAIT)  # holds a1 and a2
    assert await backend.stream("d") == [b"b1", b"a2", b"b2"]
    loaded = await backend.node("node-c").load("d/s")
    assert loaded == StoredRoom(b"state-a", (b"b1", b"a2", b"b2"))

    for update in (b"a1", b"b1", b"a2", b"b2"):  # B's follower went through all four
        node_b.mark_applied("d/s", ids[update])
    await asyncio.wait_for(node_b.compact("d/s", b"state-b"), WAIT)
    assert await backend.stream("d") == []
    assert await backend.node("node-d").load("d/s") == StoredRoom(b"state-b", ())

    # A is behind B's state (it applied b1, not b2): its compaction is refused.
    node_a.mark_applied("d/s", ids[b"b1"])
    with pytest.raises(StorageConflict):
        await asyncio.wait_for(node_a.compact("d/s", b"state-a-2"), WAIT)
    assert await backend.node("node-e").load("d/s") == StoredRoom(b"state-b", ())


async def test_follow_mode_claims_the_marks_made_before_the_compact_call(
    backend: Backend,
) -> None:
    node_a, node_b = backend.node("node-a", follow=True), backend.node("node-b")
    await asyncio.wait_for(node_a.append("d/s", b"a1"), WAIT)
    await asyncio.wait_for(node_b.append("d/s", b"b1"), WAIT)
    ids = await _ids(backend, "d")
    node_a.mark_applied("d/s", ids[b"a1"])
    compaction = node_a.compact("d/s", b"state-a1")
    node_a.mark_applied("d/s", ids[b"b1"])  # applied after the call: not in that state
    await asyncio.wait_for(compaction, WAIT)
    assert await _saved_seq(backend, "d/s") == journal_seq(ids[b"a1"])
    assert await backend.stream("d") == [b"b1"]


async def test_follow_mode_without_marks_keeps_the_stored_position(backend: Backend) -> None:
    """Nothing marked: the compaction saves the state at the position of the state the room
    was loaded from, and trims nothing it does not cover (its own appends included)."""
    writer = backend.node("node-b")
    await settle(writer.append("d/s", b"x1"), writer.append("d/s", b"x2"))
    ids = await _ids(backend, "d")
    await asyncio.wait_for(writer.compact("d/s", b"state-1"), WAIT)
    await asyncio.wait_for(writer.append("d/s", b"x3"), WAIT)

    node = backend.node("node-a", follow=True)
    assert await node.load("d/s") == StoredRoom(b"state-1", (b"x3",))
    await asyncio.wait_for(node.append("d/s", b"a1"), WAIT)  # its own: not marked yet
    await asyncio.wait_for(node.compact("d/s", b"state-2"), WAIT)
    assert await _saved_seq(backend, "d/s") == journal_seq(ids[b"x2"])
    assert await backend.stream("d") == [b"x3", b"a1"]
    assert await backend.node("node-c").load("d/s") == StoredRoom(b"state-2", (b"x3", b"a1"))

    # A room this node never loaded nor marked: the state claims nothing at all.
    await asyncio.wait_for(writer.append("e/s", b"e1"), WAIT)
    await asyncio.wait_for(node.compact("e/s", b"state-e"), WAIT)
    assert await _saved_seq(backend, "e/s") == 0
    assert await backend.stream("e") == [b"e1"]
    assert await backend.node("node-d").load("e/s") == StoredRoom(b"state-e", (b"e1",))


async def test_mark_applied_checks_its_arguments(backend: Backend) -> None:
    with pytest.raises(RuntimeError, match="follow=True"):
        backend.node("node-a").mark_applied("d/s", "1-0")
    node = backend.node("node-b", follow=True)
    with pytest.raises(InvalidRoomName):
        node.mark_applied("d/s/x", "1-0")
    with pytest.raises(ValueError, match="entry id"):
        node.mark_applied("d/s", "12")


class FollowingNode:
    """A server node in miniature: one document per room, edits appended through a
    follow-mode store, and a follower that goes through every appended entry in order
    (read from the tap of the shared journal wrapper, so a trim never hides one from it),
    applies the other nodes' entries and marks each one."""

    def __init__(self, store: ServiceRoomStore, origin: str, tap: Journal) -> None:
        self.store = store
        self.origin = origin
        self.tap = tap
        self.docs: dict[str, pycrdt.Doc[Any]] = {}
        self.followed = 0  # entries of the tap gone through
        self.edits = 0

    async def open(self, room: str) -> None:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        for update in (await self.store.load(room)).updates():
            doc.apply_update(update)
        self.docs[room] = doc

    async def edit(self, room: str) -> str:
        word = f"{self.origin}.{self.edits}"
        self.edits += 1
        doc = self.docs[room]
        text = doc.get("content", type=pycrdt.Text)
        before = doc.get_state()
        text += word + " "
        await asyncio.wait_for(self.store.append(room, doc.get_update(before)), WAIT)
        return word

    def follow(self, count: int) -> None:
        for entry in self.tap.entries[self.followed : self.followed + count]:
            room = str(RoomName(entry.document_id, entry.section_id))
            if entry.origin != self.origin:
                self.docs[room].apply_update(entry.update)
            self.store.mark_applied(room, entry.id)
            self.followed += 1

    async def compact(self, room: str) -> bool:
        try:
            await asyncio.wait_for(self.store.compact(room, self.docs[room].get_update()), WAIT)
        except StorageConflict:
            return False  # another node saved a state newer than what this one applied
        return True


@pytest.mark.parametrize("seed", range(3))
async def test_follow_mode_nodes_compacting_at_random_lose_nothing(
    backend: Backend, seed: int
) -> None:
    rng = random.Random(seed)
    tap = Journal(backend.journal)
    rooms = ("d/s1", "d/s2")
    nodes = [
        FollowingNode(backend.node(origin, journal=tap, follow=True), origin, tap)
        for origin in ("node-a", "node-b")
    ]
    for node in nodes:
        for room in rooms:
            await node.open(room)
    written: dict[str, set[str]] = {room: set() for room in rooms}
    compacted = 0
    for _ in range(150):
        node, room, roll = rng.choice(nodes), rng.choice(rooms), rng.random()
        if roll < 0.5:
            written[room].add(await node.edit(room))
        elif roll < 0.8:
            node.follow(rng.randint(1, 6))
        else:
            compacted += await node.compact(room)
    assert compacted > 0
    assert len(await backend.stream("d")) < len(tap.entries)  # compactions did trim
    fresh = backend.node("node-c")
    for room in rooms:
        assert set(_rebuild((await fresh.load(room)).updates()).split()) == written[room]


# -- replay ----------------------------------------------------------------------------------


def _rebuild(updates: list[bytes]) -> str:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("content", type=pycrdt.Text))


async def test_replaying_twice_is_harmless(backend: Backend) -> None:
    author: pycrdt.Doc[Any] = pycrdt.Doc()
    text = author.get("content", type=pycrdt.Text)
    updates: list[bytes] = []
    for word in ("alpha ", "beta ", "gamma ", "delta "):
        before = author.get_state()
        text += word
        updates.append(author.get_update(before))
        if word == "beta ":
            state_after_beta = author.get_update()

    node = backend.node()
    await settle(*(node.append("d/s", update) for update in updates[:2]))
    await asyncio.wait_for(node.compact("d/s", state_after_beta), WAIT)
    for update in updates[2:]:  # one at a time: appends queued together share an entry
        await asyncio.wait_for(node.append("d/s", update), WAIT)
    # A re-sent append (its first reply lost) stores the same update twice.
    await backend.journal.append("d", "s", updates[2], origin="node-a")

    first = await node.load("d/s")
    second = await backend.node("node-b").load("d/s")
    assert first == second
    assert first == StoredRoom(state_after_beta, (updates[2], updates[3], updates[2]))
    expected = "alpha beta gamma delta "
    assert _rebuild(first.updates()) == expected
    assert _rebuild(first.updates() * 2) == expected
    assert _rebuild(updates + first.updates() + updates) == expected


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [StorageUnavailable, StorageCorrupted])
async def test_a_failing_state_read_fails_the_load(
    backend: Backend, error: type[StorageError]
) -> None:
    states = States(backend.states)
    node = backend.node(states=states)
    await asyncio.wait_for(node.append("d/s", b"1"), WAIT)
    await asyncio.wait_for(node.compact("d/s", b"state"), WAIT)
    states.fail_load = error("injected: the content store failed")
    with pytest.raises(error):
        await node.load("d/s")
    states.fail_load = None
    assert await node.load("d/s") == StoredRoom(b"state", ())


async def test_a_corrupted_state_position_fails_the_load(backend: Backend) -> None:
    states = States(backend.states)
    node = backend.node(states=states)
    await asyncio.wait_for(node.compact("d/s", b"state"), WAIT)
    states.corrupt_seq = -1
    with pytest.raises(StorageCorrupted):
        await node.load("d/s")


async def test_a_failing_journal_read_fails_the_load(backend: Backend) -> None:
    journal = Journal(backend.journal)
    node = backend.node(journal=journal)
    await asyncio.wait_for(node.append("d/s", b"1"), WAIT)
    journal.fail_read = StorageUnavailable("injected: the journal is unreachable")
    with pytest.raises(StorageUnavailable):
        await node.load("d/s")


async def test_a_failed_append_fails_its_future_only(backend: Backend) -> None:
    journal = Journal(backend.journal)
    node = backend.node(journal=journal)
    journal.fail_append = {b"lost"}
    futures = [node.append("d/s", update) for update in (b"1", b"lost", b"3", b"")]
    await settle(*futures)
    assert futures[0].result() is None
    assert isinstance(futures[1].exception(), StorageUnavailable)
    assert futures[2].result() is None
    assert isinstance(futures[3].exception(), StorageError)  # an empty update is refused
    assert await node.load("d/s") == StoredRoom(None, (b"1", b"3"))


async def test_bad_room_names_are_refused_at_once(backend: Backend) -> None:
    node = backend.node()
    for name in ("", "d/s/x", "d/", "d s"):
        with pytest.raises(InvalidRoomName):
            _ = node.append(name, b"x")
        with pytest.raises(InvalidRoomName):
            _ = node.compact(name, b"x")
        with pytest.raises(InvalidRoomName):
            await node.load(name)


async def test_aclose_waits_for_queued_writes_and_leaves_the_backends_open(
    backend: Backend,
) -> None:
    journal = Journal(backend.journal)
    journal.hold_append = asyncio.Event()
    node = backend.node(journal=journal)
    pending = [node.append("d/s", b"1"), node.append("d/s", b"2"), node.compact("d/t", b"st")]
    await asyncio.wait_for(journal.append_reached.wait(), WAIT)
    closing = asyncio.ensure_future(node.aclose())
    done, _ = await asyncio.wait({closing}, timeout=0.2)
    assert not done  # the queued appends are not written yet
    with pytest.raises(StorageClosed):
        _ = node.append("d/s", b"3")
    journal.hold_append.set()
    await asyncio.wait_for(closing, WAIT)
    assert all(future.done() and future.exception() is None for future in pending)
    with pytest.raises(StorageClosed):
        await node.load("d/s")
    with pytest.raises(StorageClosed):
        _ = node.compact("d/s", b"x")
    await node.aclose()  # idempotent
    # Neither the journal nor the content store was closed: they belong to the caller.
    assert await backend.stream("d") == [b"1", b"2"]
    assert await backend.states.load_crdt_state("d/t") == (b"st", 0)
    assert await backend.node("node-b").load("d/s") == StoredRoom(None, (b"1", b"2"))


# -- the spool: appends the journal cannot take ----------------------------------------------

OUTAGE_ERROR = "injected: the journal is unreachable"


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    async with await Spool.open(tmp_path / "spool.sqlite3") as opened:
        yield opened


def _section(entries: list[JournalEntry], section_id: str | None) -> list[bytes]:
    return [entry.update for entry in entries if entry.section_id == section_id]


def _first_occurrences(updates: Sequence[bytes]) -> list[bytes]:
    """The updates without the repeats (a re-sent append may be stored twice)."""
    return list(dict.fromkeys(updates))


async def test_appends_are_spooled_while_the_journal_fails_then_moved_in_order(
    spool: Spool, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="persistence.rooms.service")
    journal = Journal(backend.journal)
    node = backend.node(journal=journal, spool=spool)
    await asyncio.wait_for(node.append("d/s1", b"1"), WAIT)
    journal.down = StorageUnavailable(OUTAGE_ERROR)
    spooled = [("d/s1", b"2"), ("d/s2", b"x"), ("d/s1", b"3"), ("e", b"y")]
    await asyncio.wait_for(asyncio.gather(*(node.append(r, u) for r, u in spooled)), WAIT)
    assert node.stats() == {"spooled_now": 4, "spooled_total": 4, "drained_total": 0}
    assert await backend.stream("d") == [b"1"]
    assert await backend.stream("e") == []
    # A load includes the room's spooled updates (this journal can still be read).
    assert await node.load("d/s1") == StoredRoom(None, (b"1", b"2", b"3"))
    assert await node.load("e") == StoredRoom(None, (b"y",))
    # A compaction saves its state but trims nothing while the room has spooled updates.
    await asyncio.wait_for(node.compact("d/s1", b"state"), WAIT)
    assert await backend.states.load_crdt_state("d/s1") is not None
    assert await backend.stream("d") == [b"1"]

    journal.down = None
    await asyncio.wait_for(node.wait_drained(), WAIT)
    assert node.stats() == {"spooled_now": 0, "spooled_total": 4, "drained_total": 4}
    entries = await backend.entries("d")
    assert _section(entries, "s1") == [b"1", b"2", b"3"]
    assert _section(entries, "s2") == [b"x"]
    assert await backend.stream("e") == [b"y"]
    await asyncio.wait_for(node.append("d/s2", b"z"), WAIT)  # straight to the stream again
    assert node.stats()["spooled_total"] == 4
    assert _section(await backend.entries("d"), "s2") == [b"x", b"z"]

    # The state covers what reached the stream before the call; the spooled updates came
    # later: a node without the spool loads them after it.
    other = backend.node("node-b")
    assert await other.load("d/s1") == StoredRoom(b"state", (b"2", b"3"))
    assert await other.load("d/s2") == StoredRoom(None, (b"x", b"z"))
    await node.aclose()
    records = [r for r in caplog.records if r.name == "persistence.rooms.service"]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert OUTAGE_ERROR in warnings[0].getMessage()
    drained = [r for r in records if "spool drained" in r.getMessage()]
    assert len(drained) == 1
    assert drained[0].levelno == logging.INFO
    assert "4 updates" in drained[0].getMessage()


async def test_a_room_keeps_spooling_until_its_own_backlog_is_in_the_stream(
    spool: Spool, backend: Backend
) -> None:
    journal = Journal(backend.journal)
    node = backend.node(journal=journal, spool=spool)
    journal.down = StorageUnavailable(OUTAGE_ERROR)
    await settle(node.append("d/s1", b"1"), node.append("d/s1", b"2"))
    assert spool.count() == 2
    journal.hold_update[b"2"] = asyncio.Event()
    journal.update_reached.pop(b"2", None)
    reached = journal.update_reached[b"2"] = asyncio.Event()
    journal.down = None
    await asyncio.wait_for(reached.wait(), WAIT)  # the drainer moved 1 and holds on 2
    assert await backend.stream("d") == [b"1"]
    # The journal is back, but d/s1 still has 2 in the spool: its 3 must wait behind it.
    # d/s2 has nothing spooled: its x goes straight to the stream.
    await asyncio.wait_for(node.append("d/s1", b"3"), WAIT)
    await asyncio.wait_for(node.append("d/s2", b"x"), WAIT)
    assert node.stats()["spooled_total"] == 3
    assert await backend.stream("d") == [b"1", b"x"]
    assert await node.load("d/s1") == StoredRoom(None, (b"1", b"2", b"3"))
    journal.hold_update[b"2"].set()
    await asyncio.wait_for(node.wait_drained(), WAIT)
    assert await backend.stream("d") == [b"1", b"x", b"2", b"3"]
    await node.aclose()


async def test_what_neither_the_journal_nor_the_spool_takes_fails_its_append(
    spool: Spool, backend: Backend
) -> None:
    journal = Journal(backend.journal)
    node = backend.node(journal=journal, spool=spool)
    journal.down = StorageUnavailable(OUTAGE_ERROR)
    refused = node.append("d/s", b"")  # the journal would refuse it: so does the spool
    kept = node.append("d/s", b"kept")
    await settle(refused, kept)
    assert isinstance(refused.exception(), StorageError)
    assert kept.result() is None
    assert spool.count() == 1
    await spool.aclose()
    lost = node.append("d/s", b"lost")
    await settle(lost)
    assert isinstance(lost.exception(), StorageClosed)
    journal.down = None
    assert await backend.stream("d") == []
    with pytest.raises(StorageClosed):  # the spool is gone: the load cannot include it
        await node.load("d/s")


async def test_aclose_moves_the_spool_to_the_journal_once_it_is_back(
    spool: Spool, backend: Backend
) -> None:
    journal = Journal(backend.journal)
    node = backend.node(journal=journal, spool=spool)
    journal.down = StorageUnavailable(OUTAGE_ERROR)
    await settle(node.append("d/s", b"1"), node.append("d/s", b"2"))
    assert spool.count() == 2
    journal.down = None
    await asyncio.wait_for(node.aclose(), WAIT)
    assert spool.count() == 0
    assert await backend.stream("d") == [b"1", b"2"]
    await node.wait_drained()  # nothing left: returns although the store is closed


async def test_without_a_spool_a_journal_outage_fails_the_append(backend: Backend) -> None:
    journal = Journal(backend.journal)
    node = backend.node(journal=journal)
    journal.down = StorageUnavailable(OUTAGE_ERROR)
    with pytest.raises(StorageUnavailable):
        await asyncio.wait_for(node.append("d/s", b"1"), WAIT)
    assert node.stats() == {"spooled_now": 0, "spooled_total": 0, "drained_total": 0}
    await asyncio.wait_for(node.wait_drained(), WAIT)  # nothing to wait for


# -- Redis: durability and crashes -----------------------------------------------------------


async def test_require_durable_on_real_servers(redis_servers: StartRedis) -> None:
    with_aof, without_aof = redis_servers(aof=True), redis_servers(aof=False)
    async with RedisCoordinator.from_url(with_aof.url) as durable:
        require_durable(await durable.durability())
        raw = aioredis.Redis.from_url(with_aof.url)
        try:
            await raw.config_set("appendfsync", "everysec")
        finally:
            await raw.aclose()
        with pytest.raises(StorageMisconfigured, match="appendfsync everysec") as everysec:
            require_durable(await durable.durability())
        assert "`appendfsync always`" in str(everysec.value)
    async with RedisCoordinator.from_url(without_aof.url) as volatile:
        with pytest.raises(StorageMisconfigured) as refused:
            require_durable(await volatile.durability())
    message = str(refused.value)
    assert "Redis has appendonly no" in message
    assert "acknowledged edits could be lost in a crash" in message
    assert "`appendonly yes` and `appendfsync always`" in message
    assert "run embedded" in message


def test_require_durable_explains_every_refusal() -> None:
    require_durable(DurabilityReport("redis", True, "always", "appendonly=yes appendfsync=always"))
    cases = {
        DurabilityReport("redis", True, None, "CONFIG GET refused"): "does not tell",
        DurabilityReport("redis", True, "no", "appendonly=yes appendfsync=no"): "appendfsync no",
        DurabilityReport("memory", False, None, "in-process"): "in this process only",
    }
    for report, expected in cases.items():
        with pytest.raises(StorageMisconfigured, match=expected):
            require_durable(report)


async def test_require_durable_refuses_the_in_process_coordinator() -> None:
    async with MemoryCoordinator() as memory:
        with pytest.raises(StorageMisconfigured, match="in this process only"):
            require_durable(await memory.durability())


async def test_acknowledged_appends_survive_a_redis_crash(
    redis_servers: StartRedis, tmp_path: Path
) -> None:
    """kill -9 of Redis (AOF, appendfsync always) while a node appends, then a restart:
    every append whose future resolved is loaded afterwards, after the compacted state."""
    server = redis_servers(aof=True)
    content = tmp_path / "content.sqlite3"
    acknowledged: list[bytes] = []
    compacted: list[bytes] = []
    enough, outage, recovered, stop = (asyncio.Event() for _ in range(4))
    async with (
        RedisCoordinator.from_url(
            server.url, socket_timeout=1.0, connect_timeout=0.5, retries=2
        ) as coordinator,
        await SqliteContentStore.open(content) as states,
    ):
        require_durable(await coordinator.durability())
        node = ServiceRoomStore(coordinator.journal, states, origin="node-a")

        async def writer() -> None:
            n = 0
            while not stop.is_set():
                update = f"update-{n}".encode()
                n += 1
                try:
                    await node.append("d/s", update)
                except StorageUnavailable:
                    outage.set()
                    continue
                acknowledged.append(update)
                if len(acknowledged) == 20:
                    await node.compact("d/s", b"state")
                    compacted.extend(acknowledged)
                if len(acknowledged) >= 60:
                    enough.set()
                if outage.is_set():
                    recovered.set()

        async with asyncio.TaskGroup() as group:
            group.create_task(writer())
            async with asyncio.timeout(40):
                await enough.wait()
                server.kill()
                await outage.wait()
                await asyncio.to_thread(server.restart)
                await recovered.wait()
            stop.set()
        await node.aclose()

    async with (
        RedisCoordinator.from_url(server.url) as reopened,
        await SqliteContentStore.open(content) as reopened_states,
    ):
        loaded = await ServiceRoomStore(reopened.journal, reopened_states).load("d/s")
    assert compacted == acknowledged[:20]
    after_state = acknowledged[20:]
    assert loaded.snapshot == b"state"
    # Every acknowledged append after the state is there, in order (an append whose reply
    # was lost in the crash may be stored too, or twice: replay is idempotent)...
    assert list(dict.fromkeys(u for u in loaded.journal if u in set(after_state))) == after_state
    # ...and none that the state covers.
    assert not set(compacted) & set(loaded.journal)


# -- Redis outages with the spool -------------------------------------------------------------

OUTAGE_ROOMS = ("d/s1", "d/s2", "e")


def _redis(url: str) -> RedisCoordinator:
    """A coordinator that gives up on a dead Redis within about a second (as in production,
    a failing append surfaces after the client's bounded retries)."""
    return RedisCoordinator.from_url(url, socket_timeout=1.0, connect_timeout=0.5, retries=2)


async def _take_down(server: ThrowawayRedis, how: str) -> None:
    if how == "sigkill":
        await asyncio.to_thread(server.kill)
    elif how == "shutdown":  # a clean stop: SHUTDOWN (the AOF is fsynced), then reap it
        raw = aioredis.Redis.from_url(server.url)
        try:
            await raw.shutdown(nosave=True)
        finally:
            await raw.aclose()
        await asyncio.to_thread(server.kill)
    else:  # "freeze": the process hangs, connections time out
        os.kill(int((server.root / "server.pid").read_text()), signal.SIGSTOP)


async def _bring_back(server: ThrowawayRedis, how: str) -> None:
    if how == "freeze":
        os.kill(int((server.root / "server.pid").read_text()), signal.SIGCONT)
    else:
        await asyncio.to_thread(server.restart)  # same port, it reloads its AOF


async def _edit_through_an_outage(
    server: ThrowawayRedis, tmp_path: Path, *, how: str, outage: float, pace: float
) -> None:
    """One writer per room appends numbered updates, each awaited (an append that fails or
    hangs fails the test), before, during and after an outage of at least ``outage``
    seconds; d/s1's writer also compacts during the outage. Then a store without a spool,
    on a fresh connection, must load every acknowledged update, in order."""
    content = tmp_path / "content.sqlite3"
    acked: dict[str, list[bytes]] = {room: [] for room in OUTAGE_ROOMS}
    covered: list[int] = []  # how many updates of d/s1 the state compacted in the outage holds
    progress = asyncio.Condition()
    stop, down = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    async with (
        _redis(server.url) as coordinator,
        await SqliteContentStore.open(content) as states,
        await Spool.open(tmp_path / "spool.sqlite3") as spool,
    ):
        require_durable(await coordinator.durability())
        node = ServiceRoomStore(coordinator.journal, states, origin="node-a", spool=spool)

        async def writer(room: str) -> None:
            n = 0
            while not stop.is_set():
                update = f"{room}:{n}".encode()
                n += 1
                await asyncio.wait_for(node.append(room, update), WAIT)
                async with progress:
                    acked[room].append(update)
                    progress.notify_all()
                if room == "d/s1" and down.is_set() and not covered and spool.count() > 10:
                    await asyncio.wait_for(node.compact(room, b"state"), WAIT)
                    covered.append(len(acked[room]))
                await asyncio.sleep(pace)  # the pace of a fast typist: not a synchronization

        async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
            async with progress:
                await asyncio.wait_for(progress.wait_for(predicate), timeout)

        def each_room_has(counts: dict[str, int], more: int) -> Callable[[], bool]:
            return lambda: all(len(acked[room]) >= counts[room] + more for room in OUTAGE_ROOMS)

        async with asyncio.TaskGroup() as group:
            for room in OUTAGE_ROOMS:
                group.create_task(writer(room))
            await until(each_room_has(dict.fromkeys(OUTAGE_ROOMS, 0), 20))
            before = {room: len(acked[room]) for room in OUTAGE_ROOMS}
            await _take_down(server, how)
            # From here until Redis comes back no append can reach it: each is spooled (but
            # the one per room that was in flight when it went down).
            down_at = {room: len(acked[room]) for room in OUTAGE_ROOMS}
            down.set()
            started = loop.time()
            await until(
                lambda: loop.time() - started >= outage and each_room_has(before, 20)(),
                timeout=outage + WAIT,
            )
            # Still down: the updates wait in the spool, and a load cannot read the stream.
            assert spool.count() > 0
            assert covered
            with pytest.raises(StorageUnavailable):
                await asyncio.wait_for(node.load("d/s2"), WAIT)
            back_at = {room: len(acked[room]) for room in OUTAGE_ROOMS}
            await _bring_back(server, how)
            await asyncio.wait_for(node.wait_drained(), outage + WAIT)
            drained = {room: len(acked[room]) for room in OUTAGE_ROOMS}
            spooled_total = node.stats()["spooled_total"]
            await until(each_room_has(drained, 10))
            stop.set()
        await node.aclose()
        stats = node.stats()
        assert stats["spooled_total"] == spooled_total  # drained: straight to the stream again
        assert stats["spooled_now"] == 0
        assert stats["drained_total"] == stats["spooled_total"]
        outage_acks = sum(back_at[room] - down_at[room] for room in OUTAGE_ROOMS)
        assert stats["spooled_total"] >= outage_acks - len(OUTAGE_ROOMS)

    async with (
        RedisCoordinator.from_url(server.url) as fresh,
        await SqliteContentStore.open(content) as fresh_states,
    ):
        reader = ServiceRoomStore(fresh.journal, fresh_states, origin="node-b")
        for room in ("d/s2", "e"):  # never compacted: the whole history, in order
            loaded = await reader.load(room)
            assert loaded.snapshot is None
            assert _first_occurrences(loaded.journal) == acked[room]
        loaded = await reader.load("d/s1")
        assert loaded.snapshot == b"state"
        after_state = _first_occurrences(loaded.journal)
        assert after_state == acked["d/s1"][len(acked["d/s1"]) - len(after_state) :]
        assert len(after_state) >= len(acked["d/s1"]) - covered[0]


@pytest.mark.parametrize("how", ["sigkill", "shutdown", "freeze"])
async def test_editing_goes_on_through_a_redis_outage_and_loses_nothing(
    redis_servers: StartRedis, tmp_path: Path, how: str
) -> None:
    await _edit_through_an_outage(
        redis_servers(aof=True), tmp_path, how=how, outage=3.0, pace=0.005
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_editing_goes_on_through_a_30_second_redis_outage(
    redis_servers: StartRedis, tmp_path: Path
) -> None:
    await _edit_through_an_outage(
        redis_servers(aof=True), tmp_path, how="sigkill", outage=30.0, pace=0.01
    )


async def test_loads_during_a_redis_write_outage_include_the_spooled_updates(
    redis_servers: StartRedis, tmp_path: Path
) -> None:
    """Redis holds every write (``CLIENT PAUSE WRITE``, as in a failover) but still serves
    reads: appends time out and go to the spool, loads go on and include the spooled
    updates, compactions save but do not trim."""
    server = redis_servers(aof=True)
    admin = aioredis.Redis.from_url(server.url)
    try:
        async with (
            _redis(server.url) as coordinator,
            await SqliteContentStore.open(tmp_path / "content.sqlite3") as states,
            await Spool.open(tmp_path / "spool.sqlite3") as spool,
        ):
            node = ServiceRoomStore(coordinator.journal, states, origin="node-a", spool=spool)
            journal = coordinator.journal
            await asyncio.wait_for(node.append("d/s", b"1"), WAIT)
            await admin.client_pause(60_000, all=False)  # writes wait, reads are served
            await settle(*(node.append(room, u) for room, u in [("d/s", b"2"), ("d/t", b"x")]))
            await asyncio.wait_for(node.append("d/s", b"3"), WAIT)
            assert spool.count() == 3
            assert [entry.update for entry in await journal.read("d")] == [b"1"]
            assert await node.load("d/s") == StoredRoom(None, (b"1", b"2", b"3"))
            assert await node.load("d/t") == StoredRoom(None, (b"x",))
            await asyncio.wait_for(node.compact("d/s", b"state"), WAIT)
            assert [entry.update for entry in await journal.read("d")] == [b"1"]

            await admin.client_unpause()
            await asyncio.wait_for(node.wait_drained(), WAIT)
            entries = await journal.read("d")
            # A write that timed out may still have been carried out: first occurrences.
            assert _first_occurrences(_section(entries, "s")) == [b"1", b"2", b"3"]
            assert _first_occurrences(_section(entries, "t")) == [b"x"]
            loaded = await node.load("d/s")
            assert loaded.snapshot == b"state"
            assert _first_occurrences(loaded.journal) == [b"2", b"3"]
            await node.aclose()
    finally:
        await admin.aclose()


async def test_a_spool_left_at_close_is_moved_by_the_next_store_opened_on_it(
    redis_servers: StartRedis, tmp_path: Path
) -> None:
    server = redis_servers(aof=True)
    path, content = tmp_path / "spool.sqlite3", tmp_path / "content.sqlite3"
    async with (
        _redis(server.url) as coordinator,
        await SqliteContentStore.open(content) as states,
        await Spool.open(path) as spool,
    ):
        node = ServiceRoomStore(
            coordinator.journal, states, origin="node-a", spool=spool, drain_timeout=0.2
        )
        await asyncio.wait_for(node.append("d/s", b"1"), WAIT)
        await asyncio.to_thread(server.kill)
        spooled = [("d/s", b"2"), ("d/t", b"x"), ("d/s", b"3")]
        await asyncio.wait_for(asyncio.gather(*(node.append(r, u) for r, u in spooled)), WAIT)
        await node.aclose()  # Redis is still down: the updates stay in the spool file
        assert spool.count() == 3
    await asyncio.to_thread(server.restart)

    async with (
        RedisCoordinator.from_url(server.url) as coordinator,
        await SqliteContentStore.open(content) as states,
        await Spool.open(path) as spool,
    ):
        assert spool.count() == 3
        node = ServiceRoomStore(coordinator.journal, states, origin="node-b", spool=spool)
        await asyncio.wait_for(node.wait_drained(), WAIT)
        assert node.stats() == {"spooled_now": 0, "spooled_total": 0, "drained_total": 3}
        entries = await coordinator.journal.read("d")
        assert _section(entries, "s") == [b"1", b"2", b"3"]
        assert _section(entries, "t") == [b"x"]
        assert await node.load("d/s") == StoredRoom(None, (b"1", b"2", b"3"))
        await node.aclose()


async def test_a_lagging_node_never_saves_away_what_another_node_stored(
    backend: Backend,
) -> None:
    """Node A compacts (its state holds u1) and trims; node B's follower missed u1 (it lagged
    behind the trim) and compacts later with a higher claim: the saved state still holds u1,
    because a compaction folds the stored state into its own."""
    node_a, node_b = backend.node("node-a", follow=True), backend.node("node-b", follow=True)
    doc_a: pycrdt.Doc[Any] = pycrdt.Doc()
    doc_b: pycrdt.Doc[Any] = pycrdt.Doc()
    text_a, text_b = doc_a.get("content", type=pycrdt.Text), doc_b.get("content", type=pycrdt.Text)
    text_a += "from A "
    u1 = doc_a.get_update()
    await asyncio.wait_for(node_a.append("d/s", u1), WAIT)
    text_b += "from B"
    u2 = doc_b.get_update()
    await asyncio.wait_for(node_b.append("d/s", u2), WAIT)
    ids = await _ids(backend, "d")
    node_a.mark_applied("d/s", ids[u1])
    await asyncio.wait_for(node_a.compact("d/s", u1), WAIT)
    # B never applied u1; its follower marks u2 (its own) and B compacts its doc (u2 only).
    node_b.mark_applied("d/s", ids[u2])
    await asyncio.wait_for(node_b.compact("d/s", u2), WAIT)
    loaded = await backend.node("node-c").load("d/s")
    fresh: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in loaded.updates():
        fresh.apply_update(update)
    content = str(fresh.get("content", type=pycrdt.Text))
    assert "from A" in content
    assert "from B" in content


async def test_appends_queued_together_share_one_entry(backend: Backend) -> None:
    """Appends of one room that wait behind a write in flight go as one merged entry; each
    caller's future resolves; the room rebuilds to the same text."""
    author: pycrdt.Doc[Any] = pycrdt.Doc()
    text = author.get("content", type=pycrdt.Text)
    updates: list[bytes] = []
    for index in range(50):
        before = author.get_state()
        text += f"w{index} "
        updates.append(author.get_update(before))
    node = backend.node()
    await settle(*(node.append("d/s", update) for update in updates))
    stored = await backend.node("node-b").load("d/s")
    assert len(stored.journal) < len(updates)
    assert node.appends_merged == len(updates) - len(stored.journal)
    assert _rebuild(stored.updates()) == str(text)


async def test_compacting_the_state_another_node_stored_is_a_no_op(backend: Backend) -> None:
    """Node B loaded the room before any state was stored and has marked nothing; node A
    stores a state at a real position. B then compacts the very same state (a node stopped
    right after loading): no StorageConflict, and the stored position stays A's."""
    node_a, node_b = backend.node("node-a", follow=True), backend.node("node-b", follow=True)
    await asyncio.wait_for(node_a.append("d/s", b"a1"), WAIT)
    assert await node_b.load("d/s") == StoredRoom(None, (b"a1",))
    ids = await _ids(backend, "d")
    node_a.mark_applied("d/s", ids[b"a1"])
    await asyncio.wait_for(node_a.compact("d/s", b"state-1"), WAIT)
    await asyncio.wait_for(node_b.compact("d/s", b"state-1"), WAIT)
    assert await _saved_seq(backend, "d/s") == journal_seq(ids[b"a1"])
    assert await backend.node("node-c").load("d/s") == StoredRoom(b"state-1", ())
