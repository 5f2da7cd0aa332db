"""Who a client can claim to be, end to end: bounded JSON in awareness and REST bodies,
sections created on join by editors only, awareness client ids bound to their user, and the
verified identity the server writes into every relayed awareness state."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx2
import pycrdt
import pytest

from loadtests.client import YClient
from protocol.events import decode_event
from protocol.ysync import AppEventMessage
from tests.conftest import LiveServer, StartServer
from tests.integration.test_presence import eventually

DEEP = 5000  # levels: well past Python's recursion limit


def nested(levels: int, leaf: str = "1") -> str:
    return "[" * levels + leaf + "]" * levels


def errors_of(client: YClient) -> list[dict[str, Any]]:
    events = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    return [event.fields for event in events if event.type == "error"]


def no_server_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def make_document(server: LiveServer, token: str, body: dict[str, Any]) -> None:
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        response = await http.post(
            "/api/documents", headers={"Authorization": f"Bearer {token}"}, json=body
        )
        assert response.status_code == 201, response.text


async def team(server: LiveServer) -> tuple[Any, Any, Any]:
    """An owner (editor), an editor and a viewer of document ``doc`` (one section ``s``)."""
    owner = await server.add_user("owner@example.com", "analyst", "Olivia")
    editor = await server.add_user("eve@example.com", "analyst", "Eve")
    viewer = await server.add_user("vic@example.com", "viewer", "Vic")
    await make_document(
        server,
        server.token(owner),
        {
            "documentId": "doc",
            "title": "Doc",
            "permissions": {"edit": [str(editor.id)], "view": [str(viewer.id)]},
            "sections": [{"id": "s", "title": "S", "content": "text"}],
        },
    )
    return owner, editor, viewer


def cursor_state(position: int, name: str) -> str:
    return json.dumps({"user": {"name": name}, "cursor": {"anchor": position, "head": position}})


# -- issue item 3: deeply nested JSON ---------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        pytest.param('{"deep": ' + nested(DEEP) + "}", id="state"),
        pytest.param('{"user": ' + nested(DEEP) + "}", id="user"),
        pytest.param('{"cursor": ' + nested(DEEP) + "}", id="cursor"),
    ],
)
async def test_nested_awareness_closes_the_sender_with_1002_and_spares_the_others(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, state: str
) -> None:
    caplog.set_level(logging.WARNING)
    server = await start_server(insecure_dev=False)
    owner, _, viewer = await team(server)
    owner_id = str(owner.id)
    async with (
        YClient(server.ws_url, "doc/s", token=server.token(owner)) as editor,
        YClient(server.ws_url, "doc/s", token=server.token(viewer), query="events=1") as bad,
        YClient(server.ws_url, "doc/s", token=server.token(viewer)) as watcher,
    ):
        await editor.set_awareness(cursor_state(1, "Olivia"))
        await bad.set_awareness(state)
        assert await bad.wait_closed() == 1002
        assert [e["code"] for e in errors_of(bad)] == [1002]
        assert bad.client_id not in watcher.awareness
        # The other user's cursor keeps updating, in the relay and in the coordinator.
        await editor.set_awareness(cursor_state(4, "Olivia"))
        await watcher.wait_for(lambda: '"anchor": 4' in watcher.awareness.get(editor.client_id, ""))

        async def cursor_moved() -> bool:
            cursors = await server.collab.coordinator.cursors.of_document("doc")
            return [(c.user_id, c.value) for c in cursors] == [(owner_id, {"anchor": 4, "head": 4})]

        await eventually(cursor_moved, what="the editor's cursor stored")
    assert no_server_errors(caplog) == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/documents"),
        ("PATCH", "/api/documents/doc"),
        ("PUT", "/api/documents/doc/permissions"),
        ("POST", "/api/documents/doc/status"),
        ("POST", "/api/documents/doc/revisions"),
        ("POST", "/api/documents/doc/comments"),
        ("POST", "/api/documents/doc/approvals"),
        ("POST", "/api/approval-workflows"),
    ],
)
async def test_nested_rest_bodies_get_422(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    caplog.set_level(logging.WARNING)
    server = await start_server()
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        created = await http.post("/api/documents", json={"documentId": "doc", "title": "D"})
        assert created.status_code == 201, created.text
        for body in ('{"title": ' + nested(2500) + "}", nested(2500)):
            response = await http.request(
                method, path, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 422, response.text
            assert "nested" in response.json()["detail"]
        # Still a document like before, and the server still answers.
        document = await http.get("/api/documents/doc")
        assert document.json()["title"] == "D"
    assert no_server_errors(caplog) == []


# -- issue item 10: only editors create sections by joining ---------------------------------


async def test_a_viewer_joining_an_unknown_section_gets_4404_and_creates_nothing(
    start_server: StartServer,
) -> None:
    server = await start_server(insecure_dev=False)
    owner, editor, viewer = await team(server)
    client = YClient(server.ws_url, "doc/new-section", token=server.token(viewer))
    await client.connect()
    assert await client.wait_closed() == 4404
    await client.close()
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        auth = {"Authorization": f"Bearer {server.token(owner)}"}
        document = (await http.get("/api/documents/doc", headers=auth)).json()
        assert [s["id"] for s in document["content"]["sections"]] == ["s"]
        assert "new-section" not in document["content"]["markdown"]
        # An editor joining it does create it; the viewer may then join it.
        async with YClient(server.ws_url, "doc/new-section", token=server.token(editor)):
            pass
        async with YClient(server.ws_url, "doc/new-section", token=server.token(viewer)) as ok:
            assert not ok.closed.is_set()

        async def listed() -> bool:
            body = (await http.get("/api/documents/doc", headers=auth)).json()
            return [s["id"] for s in body["content"]["sections"]] == ["s", "new-section"]

        await eventually(listed, what="the editor's section listed")


# -- issue item 11: client ids bound to their user ------------------------------------------


async def test_a_disconnected_users_client_id_cannot_be_squatted(
    start_server: StartServer,
) -> None:
    server = await start_server(insecure_dev=False)
    owner, editor, viewer = await team(server)
    alice_doc: pycrdt.Doc[Any] = pycrdt.Doc()
    client_id = int(alice_doc.client_id)
    alice = await YClient(
        server.ws_url, "doc/s", token=server.token(owner), doc=alice_doc
    ).__aenter__()
    async with YClient(server.ws_url, "doc/s", token=server.token(viewer)) as watcher:
        for _ in range(3):
            await alice.set_awareness(cursor_state(1, "Olivia"))
        await watcher.wait_for(lambda: client_id in watcher.awareness)
        await alice.close()
        await watcher.wait_for(lambda: client_id not in watcher.awareness)

        # Another editor publishes Alice's id with a higher clock and a name of their choice.
        mallory = YClient(
            server.ws_url,
            "doc/s",
            token=server.token(editor),
            query="events=1",
            doc=pycrdt.Doc(client_id=client_id),
        )
        async with mallory:
            for _ in range(10):
                await mallory.set_awareness(cursor_state(9, "Olivia"))
            await mallory.wait_for(lambda: len(errors_of(mallory)) > 0)
            assert errors_of(mallory)[0]["code"] == 4403
            assert not errors_of(mallory)[0]["fatal"]
            async with YClient(server.ws_url, "doc/s", token=server.token(viewer)) as late:
                assert client_id not in late.awareness, "not stored"
            assert client_id not in watcher.awareness, "not relayed"
            # Alice reconnects with her id (y-websocket keeps it) and a fresh clock.
            back = YClient(server.ws_url, "doc/s", token=server.token(owner), doc=alice_doc)
            async with back:
                await back.set_awareness(cursor_state(2, "Olivia"))
                await watcher.wait_for(lambda: client_id in watcher.awareness)
                async with YClient(server.ws_url, "doc/s", token=server.token(viewer)) as late:
                    await late.wait_for(lambda: client_id in late.awareness)
                    state = json.loads(late.awareness[client_id])
                    assert state["collab"]["userId"] == str(owner.id)
                    assert state["cursor"] == {"anchor": 2, "head": 2}


# -- issue item 12: the verified identity in awareness and presence --------------------------


async def test_relayed_awareness_carries_the_verified_identity(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    owner, editor, viewer = await team(server)
    forged = {
        "user": {"name": "Impostor", "color": "#f00"},
        "collab": {"userId": str(owner.id), "name": "Olivia"},
        "cursor": {"anchor": 3, "head": 3},
    }
    async with (
        YClient(server.ws_url, "doc/s", token=server.token(editor)) as eve,
        YClient(server.ws_url, "doc/s", token=server.token(viewer)) as watcher,
    ):
        await eve.set_awareness(json.dumps(forged))
        await watcher.wait_for(lambda: eve.client_id in watcher.awareness)
        relayed = json.loads(watcher.awareness[eve.client_id])
        assert relayed["collab"] == {"userId": str(editor.id), "name": "Eve"}
        assert relayed["user"] == forged["user"], "the rest stays as the client sent it"
        assert relayed["cursor"] == forged["cursor"]
        # Plain y-websocket states (an empty one, a name and a colour) relay and parse.
        verified = {"userId": str(editor.id), "name": "Eve"}
        for plain in ("{}", ' { "user" : {"name":"Eve","color":"#30bced"} } '):
            expected = {**json.loads(plain), "collab": verified}

            def relayed_as(expected: dict[str, Any] = expected) -> bool:
                return bool(json.loads(watcher.awareness[eve.client_id]) == expected)

            await eve.set_awareness(plain)
            await watcher.wait_for(relayed_as)
        await eve.set_awareness(json.dumps(forged))

        async with httpx2.AsyncClient(base_url=server.http_url) as http:
            auth = {"Authorization": f"Bearer {server.token(owner)}"}

            async def listed() -> bool:
                response = await http.get("/api/documents/doc/presence", headers=auth)
                users = {u["userId"]: u for u in response.json()["users"]}
                eve_entry = users.get(str(editor.id))
                return eve_entry is not None and eve_entry["sections"][0]["cursor"] == {
                    "anchor": 3,
                    "head": 3,
                }

            await eventually(listed, what="Eve's cursor listed")
            response = await http.get("/api/documents/doc/presence", headers=auth)
            names = {u["userId"]: u["name"] for u in response.json()["users"]}
            assert names[str(editor.id)] == "Eve"
            assert "Impostor" not in response.text


async def test_a_non_object_state_is_refused_with_an_error_event(
    start_server: StartServer,
) -> None:
    server = await start_server()
    async with (
        YClient(server.ws_url, "plain/s", query="events=1") as sender,
        YClient(server.ws_url, "plain/s") as watcher,
    ):
        await sender.set_awareness("42")
        await sender.wait_for(lambda: len(errors_of(sender)) > 0)
        assert errors_of(sender)[0]["code"] == 4400
        await sender.set_awareness('{"cursor": null}')
        await watcher.wait_for(lambda: sender.client_id in watcher.awareness)
        assert json.loads(watcher.awareness[sender.client_id])["cursor"] is None
