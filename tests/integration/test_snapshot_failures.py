"""A content store that keeps failing: snapshots back off (doubling delays, not a retry every
couple of seconds), show in ``/healthz``, and recover once the store works again."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2

from loadtests.client import YClient
from persistence.content.sqlite import SqliteContentStore
from persistence.errors import StorageUnavailable
from server.hooks import Stored
from tests.conftest import StartServer


class FlakyContentStore(SqliteContentStore):
    """The embedded content store, whose ``update`` fails while ``failing`` is set; each
    refused write is recorded, and ``attempted`` is set at each."""

    failing: bool
    refused: list[float]  # when each refused write came
    attempted: asyncio.Event

    @classmethod
    async def create(cls, path: Path) -> FlakyContentStore:
        store = await cls.open(path)
        assert isinstance(store, FlakyContentStore)
        store.failing = False
        store.refused = []
        store.attempted = asyncio.Event()
        return store

    async def update(
        self,
        collection: str,
        doc_id: str,
        set_fields: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> dict[str, Any]:
        if self.failing and collection == "business_documents":
            self.refused.append(time.monotonic())
            self.attempted.set()
            raise StorageUnavailable("content store down")
        return await super().update(
            collection, doc_id, set_fields, expected_version=expected_version
        )


async def _wait_refusals(store: FlakyContentStore, count: int) -> None:
    async with asyncio.timeout(20):
        while len(store.refused) < count:
            store.attempted.clear()
            await store.attempted.wait()


async def test_failing_snapshots_back_off_show_in_healthz_and_recover(
    start_server: StartServer, tmp_path: Path
) -> None:
    store = await FlakyContentStore.create(tmp_path / "content.sqlite3")
    server = await start_server(
        content_store=store,
        snapshot_idle_seconds=0.01,
        snapshot_max_wait_seconds=0.01,
        snapshot_retry_seconds=0.05,
        snapshot_retry_max_seconds=0.4,
    )
    async with (
        YClient(server.ws_url, "stuck/s") as writer,
        httpx2.AsyncClient(base_url=server.http_url) as http,
    ):
        await writer.insert(0, "first")
        await server.collab.snapshots.flush()
        store.failing = True
        await writer.insert(len(writer.text), " second")
        await _wait_refusals(store, 1)
        delays = []
        for attempt in range(2, 7):
            # Edits keep coming meanwhile: they must not shorten the backoff.
            await writer.insert(len(writer.text), f" {attempt}")
            await _wait_refusals(store, attempt)
            health = (await http.get("/healthz")).json()
            [entry] = health["snapshots"]["documents"]
            assert entry["documentId"] == "stuck"
            assert entry["failures"] == attempt
            assert "content store down" in entry["lastError"]
            delays.append(entry["retryDelaySeconds"])
        assert delays == [0.1, 0.2, 0.4, 0.4, 0.4]  # doubling, capped
        assert health["snapshots"]["failing"] == 1
        assert health["snapshot_failures"] >= 6
        assert health["documents_failing"] == 1
        gaps = [later - earlier for earlier, later in itertools.pairwise(store.refused)]
        # The gap after refusal n is the delay the entry showed after it.
        for gap, delay in zip(gaps, [0.05, *delays[:-1]], strict=True):
            assert gap >= delay * 0.9, (gaps, delays)  # timers never fire early
        written = asyncio.Event()

        async def note(stored: Stored) -> None:
            written.set()

        server.collab.hooks.after_store.subscribe(note)
        store.failing = False
        await asyncio.wait_for(written.wait(), 10)
        health = (await http.get("/healthz")).json()
        assert health["snapshots"] == {"failing": 0, "documents": []}
        stored = await store.get("business_documents", "stuck")
        assert stored is not None
        assert "first second 2 3 4 5 6" in stored["content"]["markdown"]
