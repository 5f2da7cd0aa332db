"""The RoomStore contract, run against every adapter.

Adapters: the embedded SQLite one, the in-process one, and the service-mode one
(:class:`persistence.rooms.service.ServiceRoomStore`) twice: over the Redis coordinator's
change stream (the session's throwaway ``redis-server``, under a key prefix of the test's
own) with the embedded SQLite content store, and over the in-process coordinator's journal
with the Mongo content store on mongomock. Service-mode behaviour beyond the port (the trim
across sections, Redis crashes, the durability check) is in ``test_service_store.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from persistence.content.mongo import MongoContentStore
from persistence.content.ports import ContentStore
from persistence.content.sqlite import SqliteContentStore
from persistence.coordinator.memory import MemoryCoordinator
from persistence.coordinator.ports import ChangeJournal
from persistence.coordinator.redis import RedisCoordinator
from persistence.errors import StorageClosed, StorageCorrupted, StorageUnavailable
from persistence.rooms.memory import MemoryRoomStore
from persistence.rooms.ports import RoomStore
from persistence.rooms.service import ServiceRoomStore
from persistence.rooms.sqlite import SqliteRoomStore
from tests.contract.mongomock_async import AsyncMockClient

Factory = Callable[[], Awaitable[RoomStore]]


async def _service_backends(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, stack: AsyncExitStack
) -> tuple[ChangeJournal, ContentStore]:
    """The journal and the content store a service-mode store runs on (closed by ``stack``)."""
    states: ContentStore
    if kind == "service-redis":
        url: str = request.getfixturevalue("redis_url")
        prefix: str = request.getfixturevalue("redis_key_prefix")
        redis = await stack.enter_async_context(RedisCoordinator.from_url(url, prefix=prefix))
        states = await stack.enter_async_context(
            await SqliteContentStore.open(tmp_path / "content.sqlite3")
        )
        return redis.journal, states
    memory = await stack.enter_async_context(MemoryCoordinator())
    client = AsyncMockClient()
    stack.push_async_callback(client.close)
    states = await stack.enter_async_context(MongoContentStore(client["collab_test"]))
    await states.ensure_indexes()
    return memory.journal, states


@pytest.fixture(params=["sqlite", "memory", "service-redis", "service-memory-mongomock"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Opens stores of one adapter; every store opened shares one backend (one SQLite file;
    for service mode one journal and one content store)."""
    opened: list[RoomStore] = []
    memory = MemoryRoomStore()
    async with AsyncExitStack() as stack:
        backends: tuple[ChangeJournal, ContentStore] | None = None

        async def factory() -> RoomStore:
            nonlocal backends
            store: RoomStore
            if request.param == "sqlite":
                store = await SqliteRoomStore.open(tmp_path / "rooms.sqlite3")
            elif request.param == "memory":
                store = memory
            else:
                if backends is None:
                    backends = await _service_backends(request.param, request, tmp_path, stack)
                store = ServiceRoomStore(*backends, origin="node-test")
            opened.append(store)
            return store

        yield factory
        for store in opened:
            await store.aclose()


async def test_unknown_room_loads_empty(open_store: Factory) -> None:
    store = await open_store()
    stored = await store.load("nobody/here")
    assert stored.is_empty
    assert stored.updates() == []


async def test_appends_load_in_order(open_store: Factory) -> None:
    store = await open_store()
    futures = [store.append("d/s", bytes([i])) for i in range(50)]
    await asyncio.gather(*futures)
    stored = await store.load("d/s")
    assert stored.journal == tuple(bytes([i]) for i in range(50))
    assert stored.snapshot is None


async def test_rooms_are_separate(open_store: Factory) -> None:
    store = await open_store()
    await store.append("a", b"1")
    await store.append("b", b"2")
    assert (await store.load("a")).journal == (b"1",)
    assert (await store.load("b")).journal == (b"2",)


async def test_load_sees_appends_issued_before_it(open_store: Factory) -> None:
    store = await open_store()
    pending = store.append("d", b"x")
    stored = await store.load("d")
    assert pending.done()
    assert stored.journal == (b"x",)


async def test_compact_replaces_earlier_appends_and_keeps_later_ones(open_store: Factory) -> None:
    store = await open_store()
    await store.append("d", b"old1")
    await store.append("d", b"old2")
    compaction = store.compact("d", b"state")
    later = store.append("d", b"new")
    await asyncio.gather(compaction, later)
    stored = await store.load("d")
    assert stored.snapshot == b"state"
    assert stored.journal == (b"new",)
    assert stored.updates() == [b"state", b"new"]


async def test_compact_twice_keeps_the_latest_snapshot(open_store: Factory) -> None:
    store = await open_store()
    await store.compact("d", b"one")
    await store.compact("d", b"two")
    assert (await store.load("d")).snapshot == b"two"


async def test_calls_after_close_raise(open_store: Factory) -> None:
    store = await open_store()
    await store.aclose()
    with pytest.raises(StorageClosed):
        await store.load("d")
    with pytest.raises(StorageClosed):
        _ = store.append("d", b"x")


async def test_sqlite_append_is_durable_once_resolved(tmp_path: Path) -> None:
    path = tmp_path / "rooms.sqlite3"
    async with await SqliteRoomStore.open(path) as store:
        await store.append("d/s", b"kept")
        # Read through a second, independent connection while the first is still open.
        rows = sqlite3.connect(path).execute("SELECT payload FROM room_journal").fetchall()
        assert rows == [(b"kept",)]
    async with await SqliteRoomStore.open(path) as reopened:
        assert (await reopened.load("d/s")).journal == (b"kept",)


async def test_sqlite_group_commit_batches_concurrent_appends(tmp_path: Path) -> None:
    async with await SqliteRoomStore.open(tmp_path / "rooms.sqlite3") as store:
        await asyncio.gather(*(store.append("d", bytes([i])) for i in range(200)))
        assert store.commits < 200


async def test_sqlite_corrupted_file_is_reported_not_empty(tmp_path: Path) -> None:
    path = tmp_path / "rooms.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises((StorageCorrupted, StorageUnavailable)):
        await SqliteRoomStore.open(path)


async def test_sqlite_unwritable_directory_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageUnavailable):
        await SqliteRoomStore.open(blocker / "rooms.sqlite3")
