"""Notifications (issue 6): rows, the per-user queue and the live ``notification`` event,
for mentions, replies and documents shared; the REST list, counts and marking read."""

from __future__ import annotations

import uuid
from contextlib import aclosing
from typing import Any

import httpx2

from loadtests.client import YClient
from persistence.relational import User
from protocol.events import AppEvent, decode_event, encode_event
from protocol.ysync import AppEventMessage
from tests.conftest import LiveServer, StartServer


def events(client: YClient, kind: str) -> list[AppEvent]:
    decoded = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    return [e for e in decoded if e.type == kind]


def notifications(client: YClient, kind: str | None = None) -> list[dict[str, Any]]:
    """The notifications a client was pushed live (of one type)."""
    found = [dict(e.get("notification")) for e in events(client, "notification")]
    return [n for n in found if kind is None or n["type"] == kind]


async def ask(client: YClient, kind: str, **fields: Any) -> AppEvent:
    """Send a comment request over the socket and wait for its answer."""
    request_id = uuid.uuid4().hex
    await client.send(
        AppEventMessage(encode_event(AppEvent(kind, {"requestId": request_id, **fields})))
    )

    def answered() -> AppEvent | None:
        for kind_ in ("comment.ack", "error"):
            for event in events(client, kind_):
                if event.get("requestId") == request_id:
                    return event
        return None

    await client.wait_for(lambda: answered() is not None)
    found = answered()
    assert found is not None
    return found


def rest(server: LiveServer, user: User) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        base_url=server.http_url, headers={"Authorization": f"Bearer {server.token(user)}"}
    )


async def test_mentions_and_replies_notify_live_and_over_rest(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    owner = await server.add_user("olga@example.com", "analyst", "Olga")
    mo = await server.add_user("mo@example.com", "viewer", "Mo")
    ida = await server.add_user("ida@example.com", "viewer", "Ida")
    async with (
        rest(server, owner) as http,
        rest(server, mo) as mo_http,
        rest(server, ida) as ida_http,
    ):
        created = await http.post(
            "/api/documents",
            json={
                "documentId": "plan",
                "title": "Plan",
                "sections": [{"id": "s", "title": "S", "content": "Grow in the EU."}],
                "permissions": {"comment": [str(mo.id), str(ida.id)]},
            },
        )
        assert created.status_code == 201, created.text
        # Mo and Ida were told the document was shared with them. Mo listens in the outline
        # room, the owner in the section room.
        async with (
            YClient(server.ws_url, "plan", token=server.token(mo), query="events=1") as mo_ws,
            YClient(server.ws_url, "plan/s", token=server.token(owner), query="events=1") as ws,
        ):
            made = await ask(
                ws,
                "comment.create",
                section="s",
                start=7,
                end=14,
                content="@Mo can you check the EU figures?",
                mentions=[str(mo.id), str(owner.id)],
            )
            assert made.type == "comment.ack", made.fields
            comment_id = made.get("comment")["id"]
            await mo_ws.wait_for(lambda: bool(notifications(mo_ws, "comment_mention")))
            pushed = notifications(mo_ws, "comment_mention")[0]
            assert pushed["resourceType"] == "comment"
            assert pushed["resourceId"] == comment_id
            assert pushed["read"] is False
            assert "Olga" in pushed["title"]
            # The comment can be opened from the notification.
            opened = await mo_http.get(f"/api/comments/{comment_id}")
            assert opened.status_code == 200
            assert opened.json()["documentId"] == "plan"
            # Replies tell the thread's author (Ida's reply; Mo's too, once).
            for replier in (ida_http, mo_http):
                reply = await replier.post(
                    "/api/documents/plan/comments",
                    json={"parentId": comment_id, "content": "Looking."},
                )
                assert reply.status_code == 201, reply.text
            await ws.wait_for(lambda: len(notifications(ws, "comment_reply")) == 2)
            assert {n["title"] for n in notifications(ws, "comment_reply")} == {
                "Ida replied to your comment",
                "Mo replied to your comment",
            }
            # The owner mentioned themself: no notification for that.
            assert notifications(ws, "comment_mention") == []
            # The per-user queue holds them too (for delivery workers).
            queued = await server.collab.coordinator.notifications.peek(str(mo.id), 10)
            assert [q["type"] for q in queued] == ["document_shared", "comment_mention"]
            assert queued[1]["id"] == pushed["id"]
        # REST: unread first, counts, mark one read, mark all read.
        listed = (await http.get("/api/notifications")).json()
        assert listed["total"] == 2
        assert listed["unread"] == 2
        assert {n["type"] for n in listed["items"]} == {"comment_reply"}
        first = listed["items"][0]["id"]
        marked = await http.post(f"/api/notifications/{first}/read")
        assert marked.json() == {"id": first, "changed": True}
        again = await http.post(f"/api/notifications/{first}/read")
        assert again.json()["changed"] is False
        # Someone else's notification is not theirs to mark.
        theirs = (await mo_http.get("/api/notifications")).json()["items"][0]["id"]
        assert (await http.post(f"/api/notifications/{theirs}/read")).json()["changed"] is False
        assert (await mo_http.get("/api/notifications/count")).json() == {"total": 2, "unread": 2}
        listed = (await http.get("/api/notifications")).json()
        assert [n["read"] for n in listed["items"]] == [False, True]
        assert (await http.get("/api/notifications?unread=1")).json()["total"] == 1
        assert (await http.get("/api/notifications/count")).json() == {"total": 2, "unread": 1}
        assert (await http.post("/api/notifications/read-all")).json() == {"changed": 1}
        assert (await http.get("/api/notifications/count")).json() == {"total": 2, "unread": 0}
        paged = (await http.get("/api/notifications?limit=1&offset=1")).json()
        assert len(paged["items"]) == 1
        assert (await http.get("/api/notifications?colour=1")).status_code == 400
        assert (await http.post("/api/notifications/nope/read")).status_code == 404


async def test_documents_shared_with_you(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    owner = await server.add_user("olga@example.com", "analyst", "Olga")
    kim = await server.add_user("kim@example.com", "viewer", "Kim")
    lee = await server.add_user("lee@example.com", "viewer", "Lee")
    async with rest(server, owner) as http, rest(server, kim) as kim_http:
        # Created already shared with Kim: Kim hears of it.
        created = await http.post(
            "/api/documents",
            json={"documentId": "plan", "title": "Q3 Plan", "permissions": {"view": [str(kim.id)]}},
        )
        assert created.status_code == 201, created.text
        async with YClient(server.ws_url, "plan", token=server.token(kim), query="events=1") as ws:
            # Kim's access is raised to edit, Lee is given view: both are told, live for Kim.
            put = await http.put(
                "/api/documents/plan/permissions",
                json={"edit": [str(kim.id)], "view": [str(lee.id)]},
            )
            assert put.status_code == 200, put.text
            await ws.wait_for(
                lambda: any("edit" in n["message"] for n in notifications(ws, "document_shared"))
            )
            shared = notifications(ws, "document_shared")[-1]
            assert shared["resourceType"] == "business_document"
            assert shared["resourceId"] == "plan"
            assert "Olga" in shared["title"]
            assert "Q3 Plan" in shared["title"]
        listed = (await kim_http.get("/api/notifications")).json()
        assert [n["type"] for n in listed["items"]] == ["document_shared", "document_shared"]
        async with (
            rest(server, lee) as lee_http,
            YClient(server.ws_url, "plan", token=server.token(lee), query="events=1") as lee_ws,
        ):
            lee_seen = (await lee_http.get("/api/notifications")).json()
            assert [n["message"] for n in lee_seen["items"]] == [
                "You may now view \u201cQ3 Plan\u201d."
            ]
            # The same lists again (and the owner, who acts, listed too) tell nobody anything;
            # then Lee is raised to comment, and told so live.
            same = await http.put(
                "/api/documents/plan/permissions",
                json={"edit": [str(kim.id)], "view": [str(lee.id), str(owner.id)]},
            )
            assert same.status_code == 200
            raised = await http.put(
                "/api/documents/plan/permissions",
                json={"edit": [str(kim.id)], "comment": [str(lee.id)]},
            )
            assert raised.status_code == 200
            await lee_ws.wait_for(lambda: bool(notifications(lee_ws, "document_shared")))
            assert len(notifications(lee_ws)) == 1
            assert "comment" in notifications(lee_ws)[0]["message"]
            assert (await lee_http.get("/api/notifications/count")).json()["total"] == 2
        assert (await kim_http.get("/api/notifications/count")).json()["total"] == 2
        async with aclosing(rest(server, owner)) as owner_http:
            assert (await owner_http.get("/api/notifications/count")).json()["total"] == 0
