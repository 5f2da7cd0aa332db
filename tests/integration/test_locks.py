"""Section locks, end to end: over the socket and REST, read-only sections, renewal, release
on unlock, disconnect, expiry and force, the events every client of the document sees, and a
lock taken on one node enforced on another that shares its Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import pycrdt
import pytest

import server.presence.locks as locks_module
from loadtests.client import YClient
from persistence.relational import User
from protocol.events import AppEvent, decode_event, encode_event
from protocol.ysync import AppEventMessage, AwarenessMessage, QueryAwareness
from tests.conftest import LiveServer, StartServer
from tests.services.redis import StartRedis

LOCKED_REASON = "section locked by another user"


def events(client: YClient, kind: str) -> list[AppEvent]:
    """The application events of one type the client received, oldest first."""
    decoded = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    return [event for event in decoded if event.type == kind]


async def send_event(client: YClient, kind: str, **fields: Any) -> None:
    await client.send(AppEventMessage(encode_event(AppEvent(kind, fields))))


def server_text(server: LiveServer, room: str) -> str:
    """The text of a loaded room, as the server holds it."""
    doc = server.collab.registry.live_doc(room)
    assert doc is not None, f"room {room} is not loaded"
    return str(doc.doc.get("content", type=pycrdt.Text))


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` holds (re-checked every few milliseconds), or fail."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.02)


async def wait_acked(client: YClient, updates: int) -> None:
    """Until the server says the client's first ``updates`` update messages are durable (the
    sync step 2 a client answers on joining is the first)."""
    await client.wait_for(lambda: any(e.get("updates") >= updates for e in events(client, "ack")))


def denials(client: YClient) -> int:
    """How many of the client's updates were dropped because of a lock."""
    return client.denied.count(LOCKED_REASON)


async def barrier(client: YClient) -> None:
    """Until the server has handled everything the client sent so far (it answers a query
    for awareness after the messages before it)."""
    answers = sum(isinstance(m, AwarenessMessage) for m in client.received)
    await client.send(QueryAwareness())
    await client.wait_for(
        lambda: sum(isinstance(m, AwarenessMessage) for m in client.received) > answers
    )


async def refused_write(client: YClient, server: LiveServer, room: str, text: str) -> None:
    """Write ``text`` from ``client``: the server must drop it, say so, and keep its text."""
    await barrier(client)
    before, denied = server_text(server, room), denials(client)
    await client.insert(0, text)
    await barrier(client)
    assert denials(client) == denied + 1
    assert server_text(server, room) == before


@dataclass
class Cast:
    """A secure server with a document ``plan`` (sections intro, risks) and its people."""

    server: LiveServer
    owner: User  # analyst who created the document: the admin right on it
    bob: User  # editor
    carol: User  # editor
    vic: User  # viewer
    ada: User  # role admin

    def token(self, user: User) -> str:
        return self.server.token(user)

    def auth(self, user: User) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def client(self, user: User, room: str, *, events_on: bool = True) -> YClient:
        return YClient(
            self.server.ws_url,
            room,
            token=self.token(user),
            query="events=1" if events_on else "",
        )


async def cast(start_server: StartServer) -> Cast:
    server = await start_server(insecure_dev=False)
    owner = await server.add_user("owner@example.com", "analyst", "Olivia")
    bob = await server.add_user("bob@example.com", "analyst", "Bob")
    carol = await server.add_user("carol@example.com", "analyst", "Carol")
    vic = await server.add_user("vic@example.com", "viewer", "Vic")
    ada = await server.add_user("ada@example.com", "admin", "Ada")
    people = Cast(server, owner, bob, carol, vic, ada)
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        response = await http.post(
            "/api/documents",
            headers=people.auth(owner),
            json={
                "documentId": "plan",
                "title": "Plan",
                "permissions": {"edit": [str(bob.id), str(carol.id)], "view": [str(vic.id)]},
                "sections": [
                    {"id": "intro", "title": "Intro", "content": "hello"},
                    {"id": "risks", "title": "Risks", "content": ""},
                ],
            },
        )
        assert response.status_code == 201, response.text
    return people


async def test_socket_lock_makes_the_section_read_only_for_everyone_else(
    start_server: StartServer,
) -> None:
    c = await cast(start_server)
    server = c.server
    bob_id = str(c.bob.id)
    async with (
        c.client(c.bob, "plan/intro") as bob,
        c.client(c.carol, "plan/intro") as carol,
        c.client(c.owner, "plan/risks") as elsewhere,
    ):
        await send_event(bob, "lock", section="intro")
        # Everyone in the document sees it, in this section and in the others.
        await elsewhere.wait_for(lambda: bool(events(elsewhere, "locked")))
        await carol.wait_for(lambda: bool(events(carol, "locked")))
        locked = events(elsewhere, "locked")[0]
        assert locked.get("section") == "intro"
        assert locked.get("owner") == bob_id
        assert locked.get("ownerName") == "Bob"
        assert isinstance(locked.get("token"), int)
        assert isinstance(locked.get("expiresAt"), str)
        room = server.collab.registry.room("plan/intro")
        assert room is not None
        assert room.locked_by == bob_id
        assert server_text(server, "plan/intro") == "hello"

        # Carol's edit is dropped and reported; the server's text is unchanged.
        await refused_write(carol, server, "plan/intro", "CAROL ")
        # The owner of the lock still writes.
        await bob.insert(len(str(bob.text)), " from bob")
        await wait_acked(bob, 2)
        assert server_text(server, "plan/intro") == "hello from bob"
        # The document's other sections are not locked.
        await elsewhere.insert(0, "risky")
        await wait_acked(elsewhere, 2)
        assert server_text(server, "plan/risks") == "risky"

        # A client that joins later gets the document's current locks.
        async with c.client(c.vic, "plan") as late:
            await late.wait_for(lambda: bool(events(late, "locks")))
            listed = events(late, "locks")[0].get("locks")
            assert [(lock["section"], lock["owner"]) for lock in listed] == [("intro", bob_id)]
            assert listed[0]["ownerName"] == "Bob"

        # Unlock: everyone is told why, and the section is writable again.
        await send_event(bob, "unlock", section="intro")
        await elsewhere.wait_for(lambda: bool(events(elsewhere, "unlocked")))
        unlocked = events(elsewhere, "unlocked")[0]
        assert (unlocked.get("section"), unlocked.get("owner")) == ("intro", bob_id)
        assert unlocked.get("reason") == "released"
        assert room.locked_by is None
    # Carol's rejected edit is still in her own document, so she writes from a fresh one.
    async with c.client(c.carol, "plan/intro") as carol_again:
        await carol_again.insert(0, "now ")
        await wait_acked(carol_again, 2)
        assert server_text(server, "plan/intro").startswith("now ")
        assert LOCKED_REASON not in carol_again.denied


async def test_refusals_over_the_socket(start_server: StartServer) -> None:
    c = await cast(start_server)
    async with (
        c.client(c.bob, "plan/intro") as bob,
        c.client(c.carol, "plan/intro") as carol,
        c.client(c.vic, "plan/intro") as vic,
    ):
        # A viewer cannot lock.
        await send_event(vic, "lock", section="intro")
        await vic.wait_for(lambda: bool(events(vic, "error")))
        error = events(vic, "error")[0]
        assert (error.get("code"), error.get("fatal")) == (4403, False)
        assert not vic.closed.is_set()

        await send_event(bob, "lock", section="intro")
        await carol.wait_for(lambda: bool(events(carol, "locked")))
        # Another editor is refused, and told who holds it.
        await send_event(carol, "lock", section="intro")
        await carol.wait_for(lambda: bool(events(carol, "error")))
        error = events(carol, "error")[0]
        assert (error.get("code"), error.get("fatal")) == (4409, False)
        assert error.get("holder")["owner"] == str(c.bob.id)
        # Nor may she release it.
        await send_event(carol, "unlock", section="intro")
        await carol.wait_for(lambda: len(events(carol, "error")) >= 2)
        assert events(carol, "error")[1].get("code") == 4403
        holder = await c.server.collab.coordinator.locks.holder("plan", "intro")
        assert holder is not None
        assert holder.owner == str(c.bob.id)
        # A bad section id is refused without closing anything.
        await send_event(bob, "lock", section="no such/section")
        await bob.wait_for(lambda: bool(events(bob, "error")))
        assert events(bob, "error")[0].get("code") == 4400
        assert not bob.closed.is_set()


async def test_the_owner_disconnecting_releases_the_lock(start_server: StartServer) -> None:
    c = await cast(start_server)
    async with c.client(c.carol, "plan/intro") as carol:
        bob = c.client(c.bob, "plan/risks")  # any room of the document will do
        await bob.connect()
        await asyncio.wait_for(bob.synced.wait(), 10)
        await send_event(bob, "lock", section="intro")
        await carol.wait_for(lambda: bool(events(carol, "locked")))
        # A second connection of the owner keeps the lock when the first closes.
        async with c.client(c.bob, "plan/intro") as bob_again:
            await bob.close()
            await bob_again.insert(0, "still mine ")
            await wait_acked(bob_again, 2)
            assert events(carol, "unlocked") == []
            holder = await c.server.collab.coordinator.locks.holder("plan", "intro")
            assert holder is not None
        await carol.wait_for(lambda: bool(events(carol, "unlocked")))
        assert events(carol, "unlocked")[0].get("reason") == "disconnected"
        assert await c.server.collab.coordinator.locks.holder("plan", "intro") is None
        room = c.server.collab.registry.room("plan/intro")
        assert room is not None
        assert room.locked_by is None


async def test_rest_locks_expire_and_socket_locks_are_renewed(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks_module, "LOCK_TTL", 1.5)
    c = await cast(start_server)
    locks = c.server.collab.coordinator.locks
    async with (
        c.client(c.carol, "plan/intro") as carol,
        c.client(c.bob, "plan/risks") as bob,
        httpx2.AsyncClient(base_url=c.server.http_url) as http,
    ):
        # A socket lock outlives several TTLs while its owner stays connected.
        await send_event(bob, "lock", section="risks")
        await carol.wait_for(lambda: bool(events(carol, "locked")))
        first = await locks.holder("plan", "risks")
        assert first is not None

        async def renewed_past_first_expiry() -> bool:
            current = await locks.holder("plan", "risks")
            assert current is not None, "the socket lock expired while its owner was connected"
            return current.token == first.token and current.expires_at > first.expires_at + 1.0

        await eventually(renewed_past_first_expiry, what="renewal of the socket lock")

        # A REST lock expires after its TTL; everyone sees it unlocked with the reason.
        response = await http.post("/api/documents/plan/sections/intro/lock", headers=c.auth(c.bob))
        assert response.status_code == 201
        await carol.wait_for(
            lambda: any(e.get("section") == "intro" for e in events(carol, "locked"))
        )
        await carol.wait_for(
            lambda: any(e.get("section") == "intro" for e in events(carol, "unlocked"))
        )
        expired = next(e for e in events(carol, "unlocked") if e.get("section") == "intro")
        assert expired.get("reason") == "expired"
        assert expired.get("owner") == str(c.bob.id)
        room = c.server.collab.registry.room("plan/intro")
        assert room is not None
        assert room.locked_by is None
        assert await locks.holder("plan", "intro") is None
        # The socket lock is still there, its token unchanged.
        current = await locks.holder("plan", "risks")
        assert current is not None
        assert current.token == first.token


async def test_rest_lock_listing_and_force_unlock(start_server: StartServer) -> None:
    c = await cast(start_server)
    path = "/api/documents/plan/sections/intro/lock"
    async with (
        c.client(c.carol, "plan/risks") as watcher,
        httpx2.AsyncClient(base_url=c.server.http_url) as http,
    ):
        # A viewer may not lock.
        assert (await http.post(path, headers=c.auth(c.vic))).status_code == 403
        taken = await http.post(path, headers=c.auth(c.bob))
        assert taken.status_code == 201
        lock = taken.json()
        assert (lock["documentId"], lock["sectionId"], lock["owner"]) == (
            "plan",
            "intro",
            str(c.bob.id),
        )
        assert lock["ownerName"] == "Bob"
        # POSTing again renews it: same token.
        again = await http.post(path, headers=c.auth(c.bob))
        assert again.status_code == 200
        assert again.json()["token"] == lock["token"]
        # Another editor: 409 with the holder; may not release it either.
        refused = await http.post(path, headers=c.auth(c.carol))
        assert refused.status_code == 409
        assert refused.json()["holder"]["owner"] == str(c.bob.id)
        assert (await http.delete(path, headers=c.auth(c.carol))).status_code == 403
        # Anyone who may view the document lists the locks.
        listed = await http.get("/api/documents/plan/locks", headers=c.auth(c.vic))
        assert listed.status_code == 200
        assert [(item["sectionId"], item["owner"]) for item in listed.json()["locks"]] == [
            ("intro", str(c.bob.id))
        ]
        # An admin forces it open; everyone sees why.
        assert (await http.delete(path, headers=c.auth(c.ada))).status_code == 204
        await watcher.wait_for(lambda: bool(events(watcher, "unlocked")))
        assert events(watcher, "unlocked")[0].get("reason") == "forced"
        assert (await http.delete(path, headers=c.auth(c.ada))).status_code == 404
        # The owner of the document (the admin right on it) may force too; the holder
        # releases their own.
        assert (await http.post(path, headers=c.auth(c.carol))).status_code == 201
        assert (await http.delete(path, headers=c.auth(c.owner))).status_code == 204
        assert (await http.post(path, headers=c.auth(c.bob))).status_code == 201
        assert (await http.delete(path, headers=c.auth(c.bob))).status_code == 204
        await watcher.wait_for(lambda: len(events(watcher, "unlocked")) >= 3)
        reasons = [e.get("reason") for e in events(watcher, "unlocked")]
        assert reasons == ["forced", "forced", "released"]
        listed = await http.get("/api/documents/plan/locks", headers=c.auth(c.vic))
        assert listed.json()["locks"] == []
        # A bad section id is 400; an unknown document 404.
        bad = await http.post("/api/documents/plan/sections/__snapshot/lock", headers=c.auth(c.bob))
        assert bad.status_code == 400
        unknown = await http.post("/api/documents/nope/sections/a/lock", headers=c.auth(c.ada))
        assert unknown.status_code == 404
        # Taking and releasing are audited.
        audit = await http.get("/api/audit?resource=plan&limit=100", headers=c.auth(c.ada))
        assert audit.status_code == 200
        actions = [(item["action"], item["status"]) for item in audit.json()["items"]]
        assert actions.count(("lock", "success")) == 4
        assert actions.count(("unlock", "success")) == 3
        assert ("unlock", "failure") in actions


async def test_a_lock_taken_on_one_node_is_enforced_on_another(
    redis_servers: StartRedis, start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (redis_servers first: its Redis then outlives the servers, which stop first)
    redis = redis_servers(aof=True)
    # Two servers in one process: each app has its own node id.
    node_a = await start_server(redis_url=redis.url)
    node_b = await start_server(redis_url=redis.url)
    assert node_a.collab.node_id != node_b.collab.node_id
    async with YClient(node_a.ws_url, "shared/intro", query="events=1") as alice:
        await alice.insert(0, "base")
        await wait_acked(alice, 2)
        async with YClient(node_b.ws_url, "shared/intro", query="events=1") as other:
            await other.wait_for(lambda: str(other.text) == "base")
            owner = node_a.collab.authn.dev_user
            assert owner is not None
            # Locked on node A: node B's connection to the section becomes read-only.
            await send_event(alice, "lock", section="intro")
            await other.wait_for(lambda: bool(events(other, "locked")))
            assert events(other, "locked")[0].get("owner") == str(owner.id)
            room_b = node_b.collab.registry.room("shared/intro")
            assert room_b is not None
            assert room_b.locked_by == str(owner.id)
            await refused_write(other, node_b, "shared/intro", "NOPE ")
            await alice.insert(4, " and more")
            await wait_acked(alice, 3)
            await other.wait_for(lambda: "and more" in str(other.text))
            assert server_text(node_b, "shared/intro") == "base and more"
            assert server_text(node_a, "shared/intro") == "base and more"

            # Each node lists the users of both (presence lives in the shared Redis too).
            other_user = node_b.collab.authn.dev_user
            assert other_user is not None
            async with httpx2.AsyncClient(base_url=node_b.http_url) as http:

                async def both_present() -> bool:
                    response = await http.get("/api/documents/shared/presence")
                    assert response.status_code == 200
                    users = {user["userId"] for user in response.json()["users"]}
                    return users == {str(owner.id), str(other_user.id)}

                await eventually(both_present, what="presence of both nodes' users")

            # Released on node A: writable on node B again.
            await send_event(alice, "unlock", section="intro")
            await other.wait_for(lambda: bool(events(other, "unlocked")))
            assert events(other, "unlocked")[0].get("reason") == "released"
            assert room_b.locked_by is None

    # A section locked while node B has no room of its document is read-only there from the
    # moment it loads (a client without events: only the room's load asks for the locks).
    async with YClient(node_a.ws_url, "solo/x", query="events=1") as holder:
        await send_event(holder, "lock", section="x")
        await holder.wait_for(lambda: bool(events(holder, "locked")))
        assert node_b.collab.registry.rooms_of("solo") == []
        async with YClient(node_b.ws_url, "solo/x") as late:
            room_x = node_b.collab.registry.room("solo/x")
            assert room_x is not None

            async def x_locked() -> bool:
                return room_x.locked_by == str(owner.id)

            await eventually(x_locked, what="the lock applied to a room loaded after it")
            await refused_write(late, node_b, "solo/x", "nope")
        # A client with events joining there is told the document's locks.
        async with YClient(node_b.ws_url, "solo", query="events=1") as told:
            await told.wait_for(lambda: bool(events(told, "locks")))
            listed = events(told, "locks")[0].get("locks")
            assert [(lock["section"], lock["owner"]) for lock in listed] == [("x", str(owner.id))]
