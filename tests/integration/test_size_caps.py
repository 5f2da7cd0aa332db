"""Size caps: an update that would take a room past ``max_section_bytes``, or its document
past ``max_document_bytes``, is refused before the journal; the stored document stays whole
and readable. REST writes past them get 413."""

from __future__ import annotations

import httpx2

from loadtests.client import YClient
from protocol.events import AppEvent, decode_event
from protocol.ysync import AppEventMessage
from tests.conftest import StartServer

KIB = 1024


def _errors(client: YClient) -> list[AppEvent]:
    events = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    return [event for event in events if event.type == "error"]


async def test_a_section_fed_past_its_cap_is_refused_and_stays_readable(
    start_server: StartServer,
) -> None:
    server = await start_server(max_section_bytes=64 * KIB, max_document_bytes=1024 * KIB)
    kept = "k" * (50 * KIB)
    async with YClient(server.ws_url, "big/s", query="events=1") as writer:
        await writer.insert(0, kept)
        async with YClient(server.ws_url, "big/s") as peer:
            await peer.wait_for(lambda: len(peer.text) == len(kept))
            await writer.insert(len(writer.text), "x" * (20 * KIB))
            await writer.wait_for(lambda: bool(writer.denied))
            assert "would exceed" in writer.denied[0]
            await writer.wait_for(lambda: bool(_errors(writer)))
            [error] = _errors(writer)
            assert error.get("code") == 4413
            assert error.get("fatal") is False
            # Small edits still go through: the connection stays open.
            await peer.insert(0, "ok ")
            await writer.wait_for(lambda: str(writer.text).startswith("ok "))
        assert not writer.closed.is_set()
    async with YClient(server.ws_url, "big/s") as reader:
        assert str(reader.text) == "ok " + kept
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/api/documents/big", params={"fresh": "1"})
    assert response.status_code == 200
    assert response.json()["content"]["sections"][0]["content"] == "ok " + kept
    assert server.collab.registry.stats()["updates_refused_too_large_total"] == 1


async def test_a_document_fed_past_its_cap_is_refused(start_server: StartServer) -> None:
    server = await start_server(max_section_bytes=64 * KIB, max_document_bytes=100 * KIB)
    chunk = "d" * (45 * KIB)
    async with YClient(server.ws_url, "wide/a") as first:
        await first.insert(0, chunk)
        async with YClient(server.ws_url, "wide/b") as second:
            await second.insert(0, chunk)
            await second.insert(0, "more " * 3000)
            await second.wait_for(lambda: bool(second.denied))
            assert "document wide would exceed" in second.denied[0]
    async with YClient(server.ws_url, "wide/b") as reader:
        assert str(reader.text) == chunk


async def test_rest_writes_past_the_caps_get_413(start_server: StartServer) -> None:
    server = await start_server(max_section_bytes=4 * KIB, max_document_bytes=6 * KIB)
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        too_big = await http.post(
            "/api/documents",
            json={"title": "Huge", "sections": [{"title": "A", "content": "a" * (5 * KIB)}]},
        )
        too_many = await http.post(
            "/api/documents",
            json={
                "title": "Wide",
                "sections": [{"title": t, "content": "a" * (3 * KIB)} for t in "ABC"],
            },
        )
        fine = await http.post(
            "/api/documents",
            json={"title": "Fine", "sections": [{"title": "A", "content": "a" * KIB}]},
        )
    for response in (too_big, too_many):
        assert response.status_code == 413, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["title"] == "document too large"
    assert fine.status_code == 201, fine.text
