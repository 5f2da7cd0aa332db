"""Room documents are freed once nothing needs them: unloads, failures, ``?fresh=1`` reads.

A pycrdt document with an observer is never collected while its subscription lives, so each
path that creates one must release it; these tests count the documents alive in the process.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import httpx2
import pycrdt
import pytest

from loadtests import bench_memory
from loadtests.client import YClient
from loadtests.harness import ServerProcess
from tests.conftest import StartServer


def _docs_alive() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, pycrdt.Doc))


async def _write_and_unload(
    server_url: str, registry: object, document_id: str, size: int = 100
) -> None:
    """Write ``size`` times "kept " into a section of ``document_id`` over a socket, then
    wait until both of its rooms (the section and the outline) are unloaded."""
    unloaded = [
        asyncio.create_task(registry.wait_unloaded(key))  # type: ignore[attr-defined]
        for key in (f"{document_id}/s", document_id)
    ]
    async with YClient(server_url, f"{document_id}/s") as writer:
        await writer.insert(0, "kept " * size)
        async with YClient(server_url, f"{document_id}/s") as peer:
            await peer.wait_for(lambda: len(peer.text) == len("kept ") * size)
    await asyncio.wait_for(asyncio.gather(*unloaded), 10)


async def test_an_unloaded_room_frees_its_document(start_server: StartServer) -> None:
    server = await start_server(room_idle_seconds=0)
    registry = server.collab.registry
    unloaded = asyncio.create_task(registry.wait_unloaded("freed/s"))
    outline_unloaded = asyncio.create_task(registry.wait_unloaded("freed"))
    async with YClient(server.ws_url, "freed/s") as writer:
        await writer.insert(0, "soon unloaded")
        live = registry.live_doc("freed/s")
        assert live is not None
        room_doc, crdt_doc = weakref.ref(live), weakref.ref(live.doc)
        del live
    await asyncio.wait_for(asyncio.gather(unloaded, outline_unloaded), 10)
    assert registry.stats()["rooms"] == 0
    gc.collect()
    assert room_doc() is None
    assert crdt_doc() is None


async def test_rooms_loaded_and_unloaded_many_times_leave_no_document(
    start_server: StartServer,
) -> None:
    server = await start_server(room_idle_seconds=0)
    registry = server.collab.registry
    await _write_and_unload(server.ws_url, registry, "warm")
    before = _docs_alive()
    for cycle in range(10):
        await _write_and_unload(server.ws_url, registry, f"cycle{cycle}")
    assert registry.stats()["rooms"] == 0
    assert _docs_alive() <= before


async def test_fresh_reads_of_unloaded_documents_leave_no_document(
    start_server: StartServer,
) -> None:
    """``GET ?fresh=1`` renders unloaded rooms from storage into temporary documents."""
    server = await start_server(room_idle_seconds=0)
    registry = server.collab.registry
    await _write_and_unload(server.ws_url, registry, "fresh")
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        first = await http.get("/api/documents/fresh", params={"fresh": "1"})
        assert first.status_code == 200, first.text
        before = _docs_alive()
        for _ in range(20):
            response = await http.get("/api/documents/fresh", params={"fresh": "1"})
            assert response.status_code == 200
            assert "kept kept" in response.json()["content"]["markdown"]
    assert registry.stats()["rooms"] == 0
    assert _docs_alive() <= before


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A ``collab serve`` child process that unloads a room as soon as it is empty."""
    with ServerProcess(tmp_path_factory.mktemp("memory"), env=bench_memory.ENV) as server:
        yield server


async def test_a_leave_during_the_unload_does_not_unload_twice(
    idle_server: ServerProcess,
) -> None:
    """Two clients leave a 1 MB room one after the other: the second leave used to land
    while the room was being unloaded and start a second unload, whose bookkeeping failed
    and shut the whole server down."""
    size = 1 << 20
    async with httpx2.AsyncClient(base_url=idle_server.http_url, timeout=30) as http:
        await bench_memory.write_room(idle_server.ws_url, http, "twice/s", size)
        unloaded = (await bench_memory.health(http))["rooms_unloaded_total"]
        await bench_memory.join_and_leave(idle_server.ws_url, http, "twice/s", size, unloaded)
        assert (await http.get("/healthz")).json()["status"] == "ok"


async def test_rss_stays_bounded_over_many_loads_and_unloads(
    idle_server: ServerProcess,
) -> None:
    """200 load/unload cycles of a 1 MB room: a leaked document costs about 1 MB each, so
    the bound (60 MB) is far above noise and far below a leak."""
    result = await bench_memory.cycles(idle_server, 200, 1 << 20)
    growth = (result["rss_end_bytes"] - result["rss_warm_bytes"]) / 1e6
    assert growth < 60, result


async def test_unloaded_documents_leave_no_size_records(start_server: StartServer) -> None:
    """The size records of small documents go with their last room: a server that loads
    many distinct documents does not keep one record per document forever."""
    server = await start_server(room_idle_seconds=0)
    registry = server.collab.registry
    for index in range(20):
        await _write_and_unload(server.ws_url, registry, f"distinct{index}")
    stats = registry.stats()
    assert stats["rooms"] == 0
    assert stats["documents_sizes_kept"] == 0


async def test_a_large_unloaded_document_keeps_its_size_record(
    start_server: StartServer,
) -> None:
    """A document holding a quarter of the document cap or more keeps counting its unloaded
    rooms against the cap."""
    server = await start_server(
        room_idle_seconds=0, max_document_bytes=4096, max_section_bytes=4096
    )
    registry = server.collab.registry
    await _write_and_unload(server.ws_url, registry, "small")
    assert registry.stats()["documents_sizes_kept"] == 0
    await _write_and_unload(server.ws_url, registry, "large", size=300)
    assert registry.stats()["documents_sizes_kept"] == 1


async def test_an_unloaded_room_is_freed_without_the_garbage_collector(
    start_server: StartServer,
) -> None:
    """Reference counting alone frees an unloaded room: a closed connection keeps no path to
    it (its close chain is dropped once fired, the transport lets go of its session), so
    nothing waits for a full collection, which the server never runs."""
    server = await start_server(room_idle_seconds=0)
    registry = server.collab.registry
    gc.collect()
    gc.disable()
    try:
        unloaded = asyncio.create_task(registry.wait_unloaded("nogc/s"))
        async with YClient(server.ws_url, "nogc/s") as writer:
            await writer.insert(0, "freed at once")
            room = registry.room("nogc/s")
            assert room is not None
            freed = asyncio.Event()
            finalizer = weakref.finalize(room, freed.set)
            del room
        await asyncio.wait_for(unloaded, 10)
        await asyncio.wait_for(freed.wait(), 10)
        assert not finalizer.alive
    finally:
        gc.enable()
