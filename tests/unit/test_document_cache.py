"""The document cache in front of ``business_documents`` (``server/documents/doc_cache.py``):
hits, invalidation on every write, and the races that must not leave a stale record."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persistence.content.sqlite import SqliteContentStore
from persistence.coordinator.memory import MemoryCoordinator
from persistence.errors import StorageUnavailable
from server.documents.doc_cache import CachedContent, decode, encode

D = "business_documents"


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SqliteContentStore, MemoryCoordinator]]:
    content = await SqliteContentStore.open(tmp_path / "c.sqlite3")
    coordinator = MemoryCoordinator()
    yield content, coordinator
    await content.aclose()
    await coordinator.aclose()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(json_values, st.datetimes(timezones=st.just(UTC)))
def test_the_codec_round_trips_records_with_datetimes(value: Any, moment: datetime) -> None:
    record = {"v": value, "at": moment, "nested": [{"at": moment}]}
    assert decode(encode(record)) == record


async def test_reads_are_cached_and_every_write_invalidates(
    stores: tuple[SqliteContentStore, MemoryCoordinator],
) -> None:
    content, coordinator = stores
    async with asyncio.TaskGroup() as tasks:
        cached = CachedContent(content, coordinator.cache, tasks, settle=0.01)
        await cached.insert(D, {"documentId": "d1", "title": "one", "version": 1})
        assert (await cached.get(D, "d1"))["title"] == "one"  # type: ignore[index]
        assert (await cached.get(D, "d1"))["title"] == "one"  # type: ignore[index]
        assert (cached.misses, cached.hits) == (1, 1)
        assert await coordinator.cache.get("d1") is not None
        for title in ("two", "three", "four"):
            await cached.update(D, "d1", {"title": title})
            assert await coordinator.cache.get("d1") is None
            assert (await cached.get(D, "d1"))["title"] == title  # type: ignore[index]
        await cached.delete(D, "d1")
        assert await cached.get(D, "d1") is None
        await cached.insert("projects", {"projectId": "p", "name": "n"})
        assert (await cached.get("projects", "p"))["name"] == "n"  # type: ignore[index]
        assert await coordinator.cache.get("p") is None  # other collections pass through


class SlowReads:
    """A content store whose next ``get`` waits for a signal (to interleave a write)."""

    def __init__(self, inner: SqliteContentStore) -> None:
        self.inner = inner
        self.reading = asyncio.Event()
        self.go_on = asyncio.Event()
        self.hold = False

    async def get(self, collection: str, doc_id: str) -> Any:
        record = await self.inner.get(collection, doc_id)
        if self.hold:
            self.hold = False
            self.reading.set()
            await self.go_on.wait()
        return record

    async def update(self, collection: str, doc_id: str, fields: Any, **kw: Any) -> Any:
        return await self.inner.update(collection, doc_id, fields, **kw)

    async def insert(self, collection: str, doc: Any) -> Any:
        return await self.inner.insert(collection, doc)


async def test_a_read_that_began_before_a_write_does_not_cache_what_it_read(
    stores: tuple[SqliteContentStore, MemoryCoordinator],
) -> None:
    content, coordinator = stores
    slow = SlowReads(content)
    async with asyncio.TaskGroup() as tasks:
        cached = CachedContent(slow, coordinator.cache, tasks, settle=0.01)  # type: ignore[arg-type]
        await cached.insert(D, {"documentId": "d1", "title": "old"})
        slow.hold = True
        reader = tasks.create_task(cached.get(D, "d1"))
        await slow.reading.wait()  # the reader holds the old record
        await cached.update(D, "d1", {"title": "new"})
        slow.go_on.set()
        assert (await reader)["title"] == "old"  # type: ignore[index]  # it began before the write
        assert (await cached.get(D, "d1"))["title"] == "new"  # type: ignore[index]


class Watched:
    """The in-process cache, with an event set at each delete."""

    def __init__(self, coordinator: MemoryCoordinator) -> None:
        self.cache = coordinator.cache
        self.deleted = asyncio.Event()
        self.down = False
        self.calls = 0

    async def get(self, doc_id: str) -> Any:
        self.calls += 1
        if self.down:
            raise StorageUnavailable("down")
        return await self.cache.get(doc_id)

    async def put(self, doc_id: str, value: Any, ttl: float = 3600) -> None:
        self.calls += 1
        await self.cache.put(doc_id, value, ttl)

    async def delete(self, doc_id: str) -> bool:
        self.calls += 1
        if self.down:
            raise StorageUnavailable("down")
        self.deleted.set()
        return await self.cache.delete(doc_id)


async def test_another_nodes_racing_put_is_dropped_after_the_settle_delay(
    stores: tuple[SqliteContentStore, MemoryCoordinator],
) -> None:
    content, coordinator = stores
    watched = Watched(coordinator)
    async with asyncio.TaskGroup() as tasks:
        writer = CachedContent(content, watched, tasks, settle=0.05)
        await writer.insert(D, {"documentId": "d1", "title": "old"})
        stale = await content.get(D, "d1")  # node B read this just before the write...
        await writer.update(D, "d1", {"title": "new"})
        watched.deleted.clear()
        await coordinator.cache.put("d1", encode(stale))  # ...and cached it just after
        async with asyncio.timeout(5):
            await watched.deleted.wait()  # the settle delete
        assert await coordinator.cache.get("d1") is None
        assert (await writer.get(D, "d1"))["title"] == "new"  # type: ignore[index]


async def test_a_failed_invalidation_bypasses_the_cache_until_it_succeeds(
    stores: tuple[SqliteContentStore, MemoryCoordinator],
) -> None:
    content, coordinator = stores

    flaky = Watched(coordinator)
    async with asyncio.TaskGroup() as tasks:
        cached = CachedContent(content, flaky, tasks, settle=0.01, pause=0.1)
        await cached.insert(D, {"documentId": "d1", "title": "old"})
        await cached.get(D, "d1")  # cached
        flaky.down = True
        await cached.update(D, "d1", {"title": "new"})
        assert (await coordinator.cache.get("d1"))["title"] == "old"  # type: ignore[index]
        assert (await cached.get(D, "d1"))["title"] == "new"  # type: ignore[index]
        flaky.deleted.clear()
        flaky.down = False
        async with asyncio.timeout(5):
            await flaky.deleted.wait()  # the retry
        assert await coordinator.cache.get("d1") is None
        assert (await cached.get(D, "d1"))["title"] == "new"  # type: ignore[index]


async def test_after_a_cache_failure_the_cache_is_left_alone_for_a_pause(
    stores: tuple[SqliteContentStore, MemoryCoordinator],
) -> None:
    content, coordinator = stores
    watched, clock = Watched(coordinator), [0.0]
    async with asyncio.TaskGroup() as tasks:
        cached = CachedContent(
            content,
            watched,
            tasks,
            settle=0.01,
            pause=0.3,
            clock=lambda: clock[0],
        )
        await cached.insert(D, {"documentId": "d1", "title": "one"})
        watched.down = True
        assert (await cached.get(D, "d1"))["title"] == "one"  # type: ignore[index]
        calls = watched.calls
        for i in range(5):  # paused: neither reads nor writes touch the cache
            await cached.update(D, "d1", {"title": f"t{i}"})
            assert (await cached.get(D, "d1"))["title"] == f"t{i}"  # type: ignore[index]
        assert watched.calls == calls
        watched.down = False
        clock[0] = 1.0  # the pause is over; d1 stays uncached until its delete went through
        watched.deleted.clear()
        async with asyncio.timeout(5):
            await watched.deleted.wait()
        assert (await cached.get(D, "d1"))["title"] == "t4"  # type: ignore[index]
