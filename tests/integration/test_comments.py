"""Comments live over the socket and through REST (issue 6): anchors that follow concurrent
edits on every replica, reviewers who comment while their socket stays read-only, acks only
after the database stored the comment, and the refusals."""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx2
import pytest

from crdt.anchors import Anchor, Resolved, resolve_anchor
from loadtests.client import YClient
from persistence.relational import AuditQuery, CommentQuery, User, migrate, open_relational
from protocol.events import AppEvent, decode_event, encode_event
from protocol.ysync import AppEventMessage
from tests.conftest import LiveServer, StartServer
from tests.services.postgres import PostgresDatabases

TEXT = "The quick brown fox jumps over the lazy dog."


def events(client: YClient, kind: str | None = None) -> list[AppEvent]:
    """The application events a client received (of one type)."""
    decoded = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    return [e for e in decoded if kind is None or e.type == kind]


def answer(client: YClient, request_id: str) -> AppEvent | None:
    """The ack or error answering a request, once it arrived."""
    for event in events(client):
        if event.type in ("comment.ack", "error") and event.get("requestId") == request_id:
            return event
    return None


async def ask(client: YClient, kind: str, **fields: Any) -> AppEvent:
    """Send a comment request over the socket and wait for its answer."""
    request_id = uuid.uuid4().hex
    await client.send(
        AppEventMessage(encode_event(AppEvent(kind, {"requestId": request_id, **fields})))
    )
    await client.wait_for(lambda: answer(client, request_id) is not None)
    found = answer(client, request_id)
    assert found is not None
    return found


def acked(client: YClient) -> int:
    """How many of its updates the server acknowledged to a client."""
    return max((int(e.get("updates")) for e in events(client, "ack")), default=0)


def comment_events(client: YClient, action: str | None = None) -> list[dict[str, Any]]:
    """The ``comment`` events a client received: ``{"action", "comment"}``."""
    return [
        dict(e.fields)
        for e in events(client, "comment")
        if action is None or e.get("action") == action
    ]


def anchor_of(comment: dict[str, Any]) -> Anchor:
    """The stored anchor (sticky indexes and quote) of a comment's JSON."""
    sticky = comment["sticky"]
    return Anchor(
        base64.b64decode(sticky["start"]), base64.b64decode(sticky["end"]), comment["quote"]
    )


async def setup(
    server: LiveServer, sections: list[dict[str, str]] | None = None, **lists: list[User]
) -> tuple[User, httpx2.AsyncClient]:
    """An owner, a document ``plan`` with its sections and permission lists, and a REST
    client acting as the owner."""
    owner = await server.add_user(f"owner-{uuid.uuid4().hex[:6]}@example.com", "analyst", "Olga")
    http = httpx2.AsyncClient(
        base_url=server.http_url, headers={"Authorization": f"Bearer {server.token(owner)}"}
    )
    created = await http.post(
        "/api/documents",
        json={
            "documentId": "plan",
            "title": "Plan",
            "sections": sections or [{"id": "s", "title": "S", "content": TEXT}],
            "permissions": {level: [str(u.id) for u in users] for level, users in lists.items()},
        },
    )
    assert created.status_code == 201, created.text
    return owner, http


def as_user(server: LiveServer, user: User) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        base_url=server.http_url, headers={"Authorization": f"Bearer {server.token(user)}"}
    )


async def test_anchor_follows_concurrent_edits_on_every_client(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    editors = [await server.add_user(f"e{i}@example.com", "analyst", f"E{i}") for i in range(3)]
    _, http = await setup(server, edit=editors)
    clients = [
        YClient(server.ws_url, "plan/s", token=server.token(user), query="events=1")
        for user in editors
    ]
    async with aclosing(http), clients[0] as one, clients[1] as two, clients[2] as three:
        assert str(one.text) == str(two.text) == str(three.text) == TEXT
        # Everyone types at once while `one` anchors a comment on "brown fox": edits before
        # the range, right at both of its edges, after it, and deletions around it.
        comment = asyncio.create_task(
            ask(
                one,
                "comment.create",
                section="s",
                start=10,
                end=19,
                quote="brown fox",
                content="Which fox?",
            )
        )
        await asyncio.gather(
            two.insert(0, "Yesterday, "),
            three.insert(len(str(three.text)), " Again and again."),
            one.insert(str(one.text).index("brown"), "very "),
        )
        await asyncio.gather(
            two.delete(str(two.text).index("quick "), len("quick ")),
            three.insert(str(three.text).index(" jumps"), ", the red one,"),
            one.delete(str(one.text).index("lazy "), len("lazy ")),
        )
        ack = await comment
        assert ack.type == "comment.ack", ack.fields
        stored = ack.get("comment")
        assert stored["quote"] == "brown fox"
        await asyncio.gather(
            two.insert(str(two.text).index("brown"), "big "),
            three.delete(len(str(three.text)) - 1, 1),
        )

        def converged(client: YClient) -> bool:
            text = str(client.text)
            return (
                text.startswith("Yesterday, The ")
                and "quick" not in text
                and "lazy" not in text
                and "big " in text
                and "very " in text
                and "fox, the red one, jumps" in text
                and text.endswith("over the dog. Again and again")
            )

        for client in (one, two, three):
            await client.wait_for(lambda c=client: converged(c))  # type: ignore[misc]
        final = str(one.text)
        assert str(two.text) == str(three.text) == final
        anchor = anchor_of(stored)
        for client in (one, two, three):
            resolved = resolve_anchor(client.text, anchor)
            assert isinstance(resolved, Resolved)
            assert resolved.content == "brown fox"
            assert resolved.start == final.index("brown fox")
        listed = (await http.get("/api/documents/plan/comments")).json()
        assert listed["total"] == 1
        view = listed["items"][0]
        assert view["anchor"] == {
            "start": final.index("brown fox"),
            "end": final.index("brown fox") + len("brown fox"),
            "text": "brown fox",
        }
        assert view["sticky"] == stored["sticky"]
        # Every client of the document saw the comment arrive, with the same anchor.
        for client in (one, two, three):
            await client.wait_for(lambda c=client: bool(comment_events(c, "created")))  # type: ignore[misc]
            assert comment_events(client, "created")[0]["comment"]["sticky"] == stored["sticky"]
        # Deleting the words orphans the comment instead of pointing elsewhere.
        start = final.index("brown fox")
        await two.delete(start, len("brown fox"))
        await one.wait_for(lambda: "brown" not in str(one.text))
        assert resolve_anchor(one.text, anchor) == resolve_anchor(two.text, anchor)
        listed = (await http.get("/api/documents/plan/comments")).json()
        assert listed["items"][0]["anchor"] == {"orphaned": True}
        assert listed["items"][0]["quote"] == "brown fox"


async def test_reviewer_comments_live_while_editors_type(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    editors = [await server.add_user(f"ed{i}@example.com", "analyst", f"Ed{i}") for i in range(2)]
    reviewer = await server.add_user("rev@example.com", "viewer", "Rita")
    _, http = await setup(server, edit=editors, comment=[reviewer])
    async with (
        aclosing(http),
        YClient(server.ws_url, "plan/s", token=server.token(editors[0]), query="events=1") as a,
        YClient(server.ws_url, "plan", token=server.token(editors[1]), query="events=1") as b,
        YClient(server.ws_url, "plan/s", token=server.token(reviewer), query="events=1") as rev,
    ):
        assert events(rev, "joined")[0].get("readOnly") is True
        assert events(a, "joined")[0].get("readOnly") is False
        stop = asyncio.Event()

        async def type_along() -> int:
            typed = 0
            while not stop.is_set():
                await a.insert(len(str(a.text)), ".")
                typed += 1
                await a.wait_for(lambda n=typed: acked(a) >= n)  # type: ignore[misc]
            return typed

        typing = asyncio.create_task(type_along())
        ack = await ask(
            rev, "comment.create", section="s", start=4, end=9, content="Quick? Be specific."
        )
        assert ack.type == "comment.ack", ack.fields
        comment_id = ack.get("comment")["id"]
        assert ack.get("comment")["author"] == {"id": str(reviewer.id), "name": "Rita"}
        assert ack.get("comment")["anchor"]["text"] == "quick"
        # Both editors see it live: one in the section's room, one in the outline room.
        for editor in (a, b):
            await editor.wait_for(
                lambda e=editor: any(x["comment"]["id"] == comment_id for x in comment_events(e))  # type: ignore[misc]
            )
        # A reply from an editor reaches the reviewer.
        reply = await ask(a, "comment.create", parentId=comment_id, content="Fixed.")
        assert reply.type == "comment.ack", reply.fields
        await rev.wait_for(
            lambda: any(x["comment"]["parentId"] == comment_id for x in comment_events(rev))
        )
        stop.set()
        typed = await typing
        assert typed >= 1
        # The reviewer's text updates are refused while their comments go through.
        denied = len(rev.denied)
        await rev.insert(0, "REVIEWER WAS HERE ")
        await rev.wait_for(lambda: len(rev.denied) > denied)
        async with YClient(server.ws_url, "plan/s", token=server.token(editors[0])) as fresh:
            assert "REVIEWER" not in str(fresh.text)
            assert str(fresh.text) == str(a.text)
        assert "REVIEWER" not in str(a.text)
        listed = await http.get("/api/documents/plan/comments", params={"thread": comment_id})
        assert [c["content"] for c in listed.json()["items"]] == ["Quick? Be specific.", "Fixed."]


async def test_resolve_reopen_edit_delete_over_socket_and_rest(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    editor = await server.add_user("ed@example.com", "analyst", "Ed")
    _, http = await setup(
        server,
        sections=[
            {"id": "s", "title": "S", "content": TEXT},
            {"id": "t", "title": "T", "content": "Second section."},
        ],
        edit=[editor],
    )
    async with (
        aclosing(http),
        as_user(server, editor) as ed_http,
        YClient(server.ws_url, "plan/t", token=server.token(editor), query="events=1") as ed,
    ):
        made = await http.post(
            "/api/documents/plan/comments",
            json={"section": "s", "start": 4, "end": 9, "content": "REST comment"},
        )
        assert made.status_code == 201, made.text
        cid = made.json()["id"]
        assert made.headers["location"] == f"/api/comments/{cid}"
        await ed.wait_for(lambda: bool(comment_events(ed, "created")))
        # Resolve over the socket, reopen over REST, edit and delete: each reaches the room.
        resolved = await ask(ed, "comment.resolve", id=cid)
        assert resolved.type == "comment.ack", resolved.fields
        assert resolved.get("comment")["resolved"]["by"]["id"] == str(editor.id)
        unresolved = (await http.get("/api/documents/plan/comments?unresolved=1")).json()
        assert unresolved["total"] == 0
        reopened = await ed_http.post(f"/api/comments/{cid}/reopen")
        assert reopened.status_code == 200, reopened.text
        assert reopened.json()["resolved"] is None
        await ed.wait_for(lambda: bool(comment_events(ed, "reopened")))
        edited = await http.patch(f"/api/comments/{cid}", json={"content": "REST comment, v2"})
        assert edited.status_code == 200, edited.text
        assert edited.json()["editedAt"] is not None
        await ed.wait_for(lambda: bool(comment_events(ed, "edited")))
        assert comment_events(ed, "edited")[0]["comment"]["content"] == "REST comment, v2"
        other = await ask(ed, "comment.create", section="t", content="On T, unanchored")
        assert other.type == "comment.ack", other.fields
        assert other.get("comment")["anchor"] is None
        by_section = (await http.get("/api/documents/plan/comments?section=t")).json()
        assert [c["content"] for c in by_section["items"]] == ["On T, unanchored"]
        gone = await http.delete(f"/api/comments/{cid}")
        assert gone.status_code == 204
        await ed.wait_for(lambda: bool(comment_events(ed, "deleted")))
        assert comment_events(ed, "deleted")[0]["comment"]["content"] == ""
        listed = (await http.get("/api/documents/plan/comments")).json()
        assert [c["content"] for c in listed["items"]] == ["On T, unanchored"]
        with_deleted = (await http.get("/api/documents/plan/comments?deleted=1")).json()
        assert with_deleted["total"] == 2
        assert with_deleted["items"][0]["deleted"] is True
        # Audited, with the surface each change came through.
        await server.collab.audit.flush()
        rows = await server.collab.relational.audit.query(AuditQuery(action="comment", limit=50))
        ops = sorted((row.changes["op"], row.changes["via"]) for row in rows.items)
        assert ops == sorted(
            [
                ("create", "rest"),
                ("resolve", "socket"),
                ("reopen", "rest"),
                ("edit", "rest"),
                ("create", "socket"),
                ("delete", "rest"),
            ]
        )


async def test_retried_create_is_stored_once(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    editor = await server.add_user("ed@example.com", "analyst", "Ed")
    _, http = await setup(server, edit=[editor])
    async with (
        aclosing(http),
        YClient(server.ws_url, "plan/s", token=server.token(editor), query="events=1") as ed,
    ):
        comment_id = str(uuid.uuid4())
        first = await ask(ed, "comment.create", id=comment_id, content="Once")
        again = await ask(ed, "comment.create", id=comment_id, content="Once")
        assert first.type == again.type == "comment.ack"
        assert first.get("comment")["id"] == again.get("comment")["id"] == comment_id
        page = await server.collab.relational.comments.find(CommentQuery(document_id="plan"))
        assert page.total == 1


class FailingComments:
    """A comment store whose writes fail as a dead database's do."""

    def __init__(self, real: Any, broken: Any) -> None:
        self._real = real
        self._broken = broken

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def add(self, comment: Any) -> Any:
        return await self._broken.add(comment)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_database_outage_fails_the_request_clearly(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    editors = [await server.add_user(f"e{i}@example.com", "analyst", f"E{i}") for i in range(2)]
    _, http = await setup(server, edit=editors)
    collab = server.collab
    real = collab.relational.comments
    # A store on a PostgreSQL that is not there: its writes fail like an outage's.
    dead = await open_relational(f"postgresql://collab@127.0.0.1:{_closed_port()}/collab")
    async with (
        aclosing(http),
        YClient(server.ws_url, "plan/s", token=server.token(editors[0]), query="events=1") as one,
        YClient(server.ws_url, "plan/s", token=server.token(editors[1]), query="events=1") as two,
    ):
        collab.relational.comments = FailingComments(real, dead.comments)
        try:
            failed = await ask(one, "comment.create", section="s", start=4, end=9, content="Lost?")
            assert failed.type == "error"
            assert failed.get("code") == 503
            assert failed.get("fatal") is False
            assert "storage" in failed.get("title")
            assert not one.closed.is_set()
            rest = await http.post("/api/documents/plan/comments", json={"content": "Lost too?"})
            assert rest.status_code == 503
            assert rest.headers["retry-after"]
        finally:
            collab.relational.comments = real
            await dead.aclose()
        ok = await ask(one, "comment.create", content="After the outage")
        assert ok.type == "comment.ack", ok.fields
        # The other client saw the comment made after the outage, and nothing before it.
        await two.wait_for(lambda: bool(comment_events(two)))
        await one.wait_for(lambda: bool(comment_events(one)))
        assert [x["comment"]["content"] for x in comment_events(two)] == ["After the outage"]
        assert [x["comment"]["content"] for x in comment_events(one)] == ["After the outage"]
        page = await real.find(CommentQuery(document_id="plan"))
        assert [c.content for c in page.items] == ["After the outage"]


async def test_bad_input_is_refused(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    alice = await server.add_user("alice@example.com", "analyst", "Alice")
    bob = await server.add_user("bob@example.com", "analyst", "Bob")
    stranger = await server.add_user("stranger@example.com", "analyst", "Stranger")
    watcher = await server.add_user("watch@example.com", "viewer", "Walt")
    _, http = await setup(server, edit=[alice, bob], view=[watcher])
    async with (
        aclosing(http),
        as_user(server, alice) as alice_http,
        as_user(server, bob) as bob_http,
        as_user(server, stranger) as stranger_http,
        as_user(server, watcher) as watcher_http,
        YClient(server.ws_url, "plan/s", token=server.token(bob), query="events=1") as bob_ws,
    ):
        made = await alice_http.post("/api/documents/plan/comments", json={"content": "Mine"})
        assert made.status_code == 201
        cid = made.json()["id"]
        # Unknown comment ids: 404 over REST and over the socket.
        unknown = str(uuid.uuid4())
        assert (await http.get(f"/api/comments/{unknown}")).status_code == 404
        assert (
            await http.patch(f"/api/comments/{unknown}", json={"content": "x"})
        ).status_code == 404
        assert (await http.get("/api/comments/not-a-uuid")).status_code == 404
        missing = await ask(bob_ws, "comment.edit", id=unknown, content="x")
        assert (missing.type, missing.get("code")) == ("error", 404)
        # Editing someone else's comment: 403 (REST and socket); deleting it too.
        assert (
            await bob_http.patch(f"/api/comments/{cid}", json={"content": "x"})
        ).status_code == 403
        theirs = await ask(bob_ws, "comment.edit", id=cid, content="x")
        assert (theirs.type, theirs.get("code")) == ("error", 403)
        assert (await bob_http.delete(f"/api/comments/{cid}")).status_code == 403
        # A viewer may read comments but not write them; a stranger does not see them.
        assert (await watcher_http.get("/api/documents/plan/comments")).status_code == 200
        refused = await watcher_http.post("/api/documents/plan/comments", json={"content": "x"})
        assert refused.status_code == 403
        assert (await stranger_http.get(f"/api/comments/{cid}")).status_code == 404
        assert (await stranger_http.get("/api/documents/plan/comments")).status_code == 404
        # Replies across documents are refused.
        other = await http.post(
            "/api/documents",
            json={
                "documentId": "other",
                "title": "Other",
                "permissions": {"edit": [str(alice.id)]},
            },
        )
        assert other.status_code == 201
        across = await alice_http.post(
            "/api/documents/other/comments", json={"content": "re", "parentId": cid}
        )
        assert across.status_code == 422, across.text
        assert across.json()["errors"][0]["field"] == "parentId"
        # Content too long, empty, or with a NUL: 422 (and an error event over the socket).
        too_long = {"content": "x" * 10_001}
        assert (await http.post("/api/documents/plan/comments", json=too_long)).status_code == 422
        assert (
            await http.post("/api/documents/plan/comments", json={"content": " "})
        ).status_code == 422
        assert (
            await http.post("/api/documents/plan/comments", json={"content": "a\0b"})
        ).status_code == 422
        long_ws = await ask(bob_ws, "comment.create", content="x" * 10_001)
        assert (long_ws.type, long_ws.get("code")) == ("error", 422)
        assert long_ws.get("errors")[0]["field"] == "content"
        # Anchors out of range, inverted, half given, or in a section that does not exist.
        for body in (
            {"section": "s", "start": 0, "end": len(TEXT) + 1},
            {"section": "s", "start": 9, "end": 4},
            {"section": "s", "start": 4},
            {"start": 0, "end": 3},
            {"section": "nope", "start": 0, "end": 3},
            {"section": "bad id!", "start": 0, "end": 3},
        ):
            answer_ = await http.post("/api/documents/plan/comments", json={"content": "x", **body})
            assert answer_.status_code == 422, (body, answer_.text)
        out_ws = await ask(bob_ws, "comment.create", section="s", start=40, end=400, content="x")
        assert (out_ws.type, out_ws.get("code"), out_ws.get("title")) == (
            "error",
            422,
            "anchor out of range",
        )
        # Mentions must name users who exist and may view the document.
        ghost = await http.post(
            "/api/documents/plan/comments", json={"content": "x", "mentions": [str(uuid.uuid4())]}
        )
        assert ghost.status_code == 422
        blind = await http.post(
            "/api/documents/plan/comments", json={"content": "x", "mentions": [str(stranger.id)]}
        )
        assert blind.status_code == 422
        # Unknown fields and query parameters; a comment of another document over the socket.
        assert (
            await http.post("/api/documents/plan/comments", json={"content": "x", "colour": 1})
        ).status_code == 422
        assert (await http.get("/api/documents/plan/comments?colour=red")).status_code == 400
        foreign = await alice_http.post("/api/documents/other/comments", json={"content": "o"})
        assert foreign.status_code == 201
        elsewhere = await ask(bob_ws, "comment.resolve", id=foreign.json()["id"])
        assert (elsewhere.type, elsewhere.get("code")) == ("error", 404)
        # A reply cannot be resolved on its own (its thread is); a deleted comment is gone.
        reply = await bob_http.post(
            "/api/documents/plan/comments", json={"content": "re", "parentId": cid}
        )
        assert reply.status_code == 201
        assert (
            await bob_http.post(f"/api/comments/{reply.json()['id']}/resolve")
        ).status_code == 409
        # The owner (admin of the document) may delete anyone's comment.
        assert (await http.delete(f"/api/comments/{cid}")).status_code == 204
        assert (
            await alice_http.patch(f"/api/comments/{cid}", json={"content": "x"})
        ).status_code == 404
        # Nothing of the refused requests was stored.
        page = await server.collab.relational.comments.find(
            CommentQuery(document_id="plan", include_deleted=True)
        )
        assert sorted(c.content for c in page.items) == ["", "re"]
        assert bob_ws.closed.is_set() is False


@pytest.fixture
async def postgres_url(postgres_databases: PostgresDatabases) -> AsyncIterator[str]:
    """A fresh migrated PostgreSQL database (dropped after the server using it stopped:
    request it before ``start_server``)."""
    url = await postgres_databases.create()
    try:
        await migrate(url)
        yield url
    finally:
        await postgres_databases.drop(url)


async def test_socket_ack_means_postgres_has_it(
    postgres_url: str, start_server: StartServer
) -> None:
    server = await start_server(insecure_dev=False, postgres_url=postgres_url)
    assert server.collab.relational.backend == "postgresql"
    editor = await server.add_user("ed@example.com", "analyst", "Ed")
    _, http = await setup(server, edit=[editor])
    async with (
        aclosing(http),
        YClient(server.ws_url, "plan/s", token=server.token(editor), query="events=1") as ed,
    ):
        ack = await ask(ed, "comment.create", section="s", start=4, end=9, content="PG")
        assert ack.type == "comment.ack", ack.fields
        # Acknowledged means committed: another connection to the database reads it.
        async with await open_relational(postgres_url) as reader:
            stored = await reader.comments.get(uuid.UUID(ack.get("comment")["id"]))
        assert stored is not None
        assert stored.anchor is not None
        assert stored.anchor.quote == "quick"


async def test_large_comments_fit_the_event_limit(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    editor = await server.add_user("ed@example.com", "analyst", "Ed")
    text = "\U0001f600" * 10_000  # 40 KB of UTF-8: quote, text and content together pass 64 KiB
    _, http = await setup(server, [{"id": "s", "title": "S", "content": text}], edit=[editor])
    async with (
        aclosing(http),
        YClient(server.ws_url, "plan/s", token=server.token(editor), query="events=1") as ed,
        YClient(server.ws_url, "plan", token=server.token(editor), query="events=1") as other,
    ):
        ack = await ask(ed, "comment.create", section="s", start=0, end=10_000, content=text)
        assert ack.type == "comment.ack", ack.fields
        sent = ack.get("comment")
        assert sent["truncated"] is True
        assert sent["content"] == text
        assert sent["quote"] == text[:1000]
        assert sent["anchor"]["text"] == text[:1000]
        assert sent["anchor"]["end"] == 10_000
        await other.wait_for(lambda: bool(comment_events(other)))
        assert comment_events(other)[0]["comment"]["truncated"] is True
        # REST has it whole, and the sticky anchor resolves to all of it on a client.
        whole = (await http.get(f"/api/comments/{sent['id']}")).json()
        assert whole["quote"] == text
        assert whole["anchor"]["text"] == text
        assert "truncated" not in whole
        resolved = resolve_anchor(ed.text, anchor_of(whole))
        assert isinstance(resolved, Resolved)
        assert resolved.content == text
