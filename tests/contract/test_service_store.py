"""What the service-mode room store guarantees beyond the RoomStore contract.

``test_contract_room_store.py`` runs the port's contract against
:class:`persistence.service_store.ServiceRoomStore`; this file checks what only the service
mode has: one change stream shared by every section of a document (the trim rule), several
nodes on one stream, journal positions as ints, a Redis crash, the durability check, and
failing backends. Each test runs on both backends (Redis journal + embedded SQLite content
store; in-process journal + Mongo content store on mongomock) unless it needs one of them.
Stores that a test opens as "nodes" share one journal and one content store, as server
nodes share one Redis and one MongoDB.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pycrdt
import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt.ids import InvalidRoomName
from persistence import service_store
from persistence.content import ContentStore
from persistence.coordinator import ChangeJournal
from persistence.coordinator_memory import MemoryCoordinator
from persistence.coordinator_values import DurabilityReport, JournalEntry
from persistence.errors import (
    StorageClosed,
    StorageConflict,
    StorageCorrupted,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)
from persistence.mongo import MongoContentStore
from persistence.ports import StoredRoom
from persistence.redis import RedisCoordinator
from persistence.service_store import (
    MAX_JOURNAL_SEQ,
    ServiceRoomStore,
    covered_position,
    journal_seq,
    require_durable,
)
from persistence.sqlite_content import SqliteContentStore
from tests.contract.mongomock_async import AsyncMockClient

if TYPE_CHECKING:
    from tests.services.redis import StartRedis

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

    async def append(
        self, document_id: str, section_id: str | None, update: bytes, *, origin: str | None = None
    ) -> str:
        self.append_reached.set()
        if self.hold_append is not None:
            await self.hold_append.wait()
        if update in self.fail_append:
            raise StorageUnavailable("injected: the journal is unreachable")
        entry_id = await self.inner.append(document_id, section_id, update, origin=origin)
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
    ) -> ServiceRoomStore:
        store = ServiceRoomStore(
            cast(ChangeJournal, journal) if journal is not None else self.journal,
            cast(ContentStore, states) if states is not None else self.states,
            origin=origin,
        )
        self.opened.append(store)
        return store

    async def stream(self, document_id: str) -> list[bytes]:
        """The updates left in the document's stream, oldest first."""
        found: list[bytes] = []
        after: str | None = None
        while page := await self.journal.read(document_id, after, 1000):
            found += [entry.update for entry in page]
            after = page[-1].id
        return found


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
    await settle(*(node.append("d/s", update) for update in updates[2:]))
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
