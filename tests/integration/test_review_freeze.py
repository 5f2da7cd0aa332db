"""While a document is in review its content is frozen: sockets turn read-only, restores are
refused; when the review ends, editing resumes."""

from __future__ import annotations

import httpx

from loadtests.client import YClient
from tests.conftest import StartServer


async def test_content_is_frozen_while_in_review(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    owner = await server.add_user("owner@example.com", "manager")
    headers = {"Authorization": f"Bearer {server.token(owner)}"}
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers) as http:
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
