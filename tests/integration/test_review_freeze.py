"""While a document is in review its content is frozen: sockets turn read-only, restores are
refused; when the review ends, editing resumes."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx2
import pytest
import websockets

from loadtests.client import YClient
from loadtests.harness import ServerProcess
from protocol.events import AppEvent, decode_event, encode_event
from protocol.ysync import AppEventMessage
from tests.conftest import StartServer
from tests.services.redis import StartRedis


async def test_content_is_frozen_while_in_review(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    owner = await server.add_user("owner@example.com", "manager")
    headers = {"Authorization": f"Bearer {server.token(owner)}"}
    async with httpx2.AsyncClient(base_url=server.http_url, headers=headers) as http:
        created = await http.post(
            "/api/documents",
            json={
                "documentId": "plan",
                "title": "Plan",
                "sections": [{"id": "s", "title": "S", "content": "v1"}],
            },
        )
        assert created.status_code == 201, created.text
        saved = (await http.post("/api/documents/plan/revisions", json={})).json()
        async with YClient(
            server.ws_url, "plan/s", token=server.token(owner), query="events=1"
        ) as editor:
            await editor.insert(2, "+")
            await editor.wait_for(lambda: str(editor.text) == "v1+")
            moved = await http.post("/api/documents/plan/status", json={"status": "review"})
            assert moved.status_code == 200, moved.text
            # Within 5 s the open socket is read-only, and told so.
            await editor.wait_for(lambda: bool(editor.denied), timeout=5)
            await editor.insert(0, "late ")
            await editor.wait_for(lambda: len(editor.denied) >= 2, timeout=5)
            restore = await http.post(
                f"/api/documents/plan/revisions/{saved['revisionId']}/restore", json={}
            )
            assert restore.status_code == 409
            assert "review" in restore.json()["detail"]
            async with YClient(server.ws_url, "plan/s", token=server.token(owner)) as reader:
                assert str(reader.text) == "v1+"
            # Changes requested: back to draft, editing resumes without reconnecting.
            back = await http.post("/api/documents/plan/status", json={"status": "draft"})
            assert back.status_code == 200, back.text
            denied = len(editor.denied)
            async with YClient(server.ws_url, "plan/s", token=server.token(owner)) as writer:
                assert not writer.denied
                await writer.insert(0, "ok ")
                await editor.wait_for(lambda: "ok " in str(editor.text), timeout=5)
            assert len(editor.denied) == denied


def acked(client: YClient) -> int:
    events = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    return max((int(e.get("updates")) for e in events if e.type == "ack"), default=0)


async def _create(http: httpx2.AsyncClient, document_id: str) -> None:
    created = await http.post(
        "/api/documents",
        json={
            "documentId": document_id,
            "title": "Plan",
            "sections": [{"id": "s", "title": "S", "content": "v1"}],
        },
    )
    assert created.status_code == 201, created.text


async def test_no_edit_is_acknowledged_once_the_review_answer_is_out(
    start_server: StartServer,
) -> None:
    """The freeze is atomic with the status change: an edit sent the instant the answer
    arrives is refused, and the revision under review is the live text."""
    server = await start_server(insecure_dev=False)
    owner = await server.add_user("owner@example.com", "manager")
    headers = {"Authorization": f"Bearer {server.token(owner)}"}
    async with httpx2.AsyncClient(base_url=server.http_url, headers=headers) as http:
        await _create(http, "atomic")
        async with YClient(
            server.ws_url, "atomic/s", token=server.token(owner), query="events=1"
        ) as editor:
            await editor.insert(2, "+")
            # Sync step 2 and the edit: every update message sent so far is acknowledged.
            await editor.wait_for(lambda: acked(editor) >= 2)
            before = acked(editor)
            moved = await http.post("/api/documents/atomic/status", json={"status": "review"})
            assert moved.status_code == 200, moved.text
            await editor.insert(0, "late ")
            await editor.wait_for(lambda: bool(editor.denied), timeout=5)
            ping = AppEventMessage(encode_event(AppEvent("ping", {"id": 1})))
            await editor.send(ping)  # answered after anything the server had to say before
            await editor.wait_for(lambda: any(_pongs(editor)), timeout=5)
            # Refused for good (the ack that settles it may follow), never stored nor shown.
            assert acked(editor) <= before + 1
            async with YClient(server.ws_url, "atomic/s", token=server.token(owner)) as reader:
                assert str(reader.text) == "v1+"
            revision = moved.json()["revision"]["revisionId"]
            shown = await http.get(f"/api/documents/atomic/revisions/{revision}")
            assert shown.status_code == 200, shown.text
            assert "v1+" in shown.text
            assert "late" not in shown.text


def _pongs(client: YClient) -> list[AppEvent]:
    events = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    return [e for e in events if e.type == "pong"]


@pytest.mark.slow
async def test_another_node_acknowledges_no_edit_after_the_review_answer(
    tmp_path: Path, redis_servers: StartRedis
) -> None:
    redis = redis_servers(aof=True)
    env = {"COLLAB_REDIS_URL": redis.url}
    a = ServerProcess(tmp_path / "data", env=env).start()
    b = ServerProcess(tmp_path / "data", env=env).start()
    try:
        async with httpx2.AsyncClient(base_url=a.http_url) as http:
            await _create(http, "nodes")
            async with YClient(b.ws_url, "nodes/s", query="events=1") as editor:
                await editor.insert(2, "+")
                await editor.wait_for(lambda: acked(editor) >= 2)
                before = acked(editor)
                moved = await http.post("/api/documents/nodes/status", json={"status": "review"})
                assert moved.status_code == 200, moved.text
                with contextlib.suppress(websockets.ConnectionClosed):
                    await editor.insert(0, "late ")
                # Refused on B: read-only by then, or the journal refuses it (closed 4409).
                await editor.wait_for(
                    lambda: bool(editor.denied) or editor.closed.is_set(), timeout=10
                )
                assert acked(editor) == before
            async with YClient(a.ws_url, "nodes/s") as reader:
                assert "late" not in str(reader.text)
            async with YClient(b.ws_url, "nodes/s") as reader:
                assert "late" not in str(reader.text)
                assert "v1+" in str(reader.text)
    finally:
        a.stop()
        b.stop()
