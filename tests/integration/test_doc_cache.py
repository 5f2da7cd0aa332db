"""The Redis document cache ``doc:{documentId}`` in service mode: REST reads of a document
are answered from it, and no read after a write (metadata, status, permissions, a snapshot of
an edit) returns the version before it (``docs/administration.md``)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2

from loadtests.client import YClient
from persistence.coordinator.redis import RedisCoordinator
from server.documents.doc_cache import CachedContent
from server.hooks import Stored
from tests.conftest import StartServer
from tests.services.redis import StartRedis


async def test_reads_are_cached_and_never_stale_after_a_write(
    redis_servers: StartRedis, start_server: StartServer
) -> None:
    # (Redis first: it then outlives the server, which closes cleanly.)
    redis = redis_servers(aof=True)
    server = await start_server(insecure_dev=False, redis_url=redis.url)
    olga = await server.add_user("olga@example.com", "analyst")
    vic = await server.add_user("vic@example.com", "viewer")
    headers = {"Authorization": f"Bearer {server.token(olga)}"}
    content = server.collab.content
    assert isinstance(content, CachedContent)
    stored = asyncio.Event()

    async def on_stored(event: Stored) -> None:
        stored.set()

    server.collab.hooks.after_store.subscribe(on_stored)
    coordinator = RedisCoordinator.from_url(redis.url)
    async with httpx2.AsyncClient(base_url=server.http_url, headers=headers) as http:

        async def read() -> dict[str, Any]:
            response = await http.get("/api/documents/doc")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        made = await http.post(
            "/api/documents",
            json={"documentId": "doc", "title": "v0", "sections": [{"id": "s", "title": "S"}]},
        )
        assert made.status_code == 201, made.text
        first = await read()
        hits = content.hits
        assert await read() == first
        assert content.hits > hits  # answered from doc:doc
        assert (await coordinator.cache.get("doc")) is not None
        for i in range(1, 6):
            patched = await http.patch("/api/documents/doc", json={"title": f"v{i}"})
            assert patched.status_code == 200
            assert (await read())["title"] == f"v{i}"
        shared = await http.put("/api/documents/doc/permissions", json={"view": [str(vic.id)]})
        assert shared.status_code == 200, shared.text
        assert str(vic.id) in (await read())["permissions"]["view"]
        stored.clear()
        async with YClient(server.ws_url, "doc/s", token=server.token(olga)) as socket:
            await socket.synced.wait()
            await socket.insert(0, "fresh words")
            await socket.flush()
            async with asyncio.timeout(10):
                await stored.wait()  # the snapshot of the edit was written
            assert "fresh words" in (await read())["content"]["markdown"]
        status = await http.post("/api/documents/doc/status", json={"status": "review"})
        assert status.status_code == 200, status.text
        assert (await read())["status"] == "review"
    await coordinator.aclose()
