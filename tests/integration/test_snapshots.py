"""Derived content in business_documents follows the live rooms (debounced snapshots)."""

from __future__ import annotations

import asyncio

import pycrdt

from loadtests.client import YClient
from server.hooks import Stored
from tests.conftest import StartServer


async def test_snapshot_writes_the_documents_content(start_server: StartServer) -> None:
    server = await start_server(snapshot_idle_seconds=30, snapshot_max_wait_seconds=30)
    collab = server.collab
    async with (
        YClient(server.ws_url, "plan/vision") as vision,
        YClient(server.ws_url, "plan/risks") as risks,
    ):
        await vision.insert(0, "Grow the core business.")
        await risks.insert(0, "Competition may respond")
        async with YClient(server.ws_url, "plan") as outline:
            sections = outline.doc.get("sections", type=pycrdt.Map)
            await outline.wait_for(lambda: len(sections) == 2)
        async with YClient(server.ws_url, "plan/risks") as peer:
            await peer.wait_for(lambda: str(peer.text) == "Competition may respond")
        await collab.snapshots.flush()
    stored = await collab.content.get("business_documents", "plan")
    assert stored is not None
    content = stored["content"]
    assert [s["id"] for s in content["sections"]] == ["vision", "risks"]
    assert content["sections"][0]["content"] == "Grow the core business."
    assert "## risks" in content["markdown"]
    assert content["metadata"]["wordCount"] == 4 + 1 + 3 + 1  # words plus the two titles
    assert content["metadata"]["readingTime"] == 1
    assert stored["status"] == "draft"


async def test_snapshot_reads_unloaded_sections_from_storage(start_server: StartServer) -> None:
    server = await start_server(room_idle_seconds=0, snapshot_idle_seconds=30)
    collab = server.collab
    unloaded = asyncio.create_task(collab.registry.wait_unloaded("memo/a"))
    async with YClient(server.ws_url, "memo/a") as first:
        await first.insert(0, "first section")
        async with YClient(server.ws_url, "memo/a") as peer:
            await peer.wait_for(lambda: str(peer.text) == "first section")
    await asyncio.wait_for(unloaded, 10)
    async with YClient(server.ws_url, "memo/b") as second:
        await second.insert(0, "second")
        async with YClient(server.ws_url, "memo/b") as peer:
            await peer.wait_for(lambda: str(peer.text) == "second")
        await collab.snapshots.flush()
    stored = await collab.content.get("business_documents", "memo")
    assert stored is not None
    assert [s["content"] for s in stored["content"]["sections"]] == ["first section", "second"]


async def test_continuous_typing_is_snapshotted_after_max_wait(start_server: StartServer) -> None:
    """Idle never comes while someone types; max-wait still bounds how stale content gets."""
    server = await start_server(snapshot_idle_seconds=30, snapshot_max_wait_seconds=0.2)
    collab = server.collab
    written = asyncio.Event()

    async def note(stored: Stored) -> None:
        written.set()

    collab.hooks.after_store.subscribe(note)
    async with YClient(server.ws_url, "busy/s") as editor:

        async def type_steadily() -> None:
            while True:  # an edit every 10 ms: never idle for 30 s
                await editor.insert(0, "x")
                await asyncio.sleep(0.01)

        typing = asyncio.create_task(type_steadily())
        try:
            await asyncio.wait_for(written.wait(), 10)
        finally:
            typing.cancel()
    stored = await collab.content.get("business_documents", "busy")
    assert stored is not None
    assert stored["content"]["sections"][0]["content"].startswith("x")
