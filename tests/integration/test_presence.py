"""Presence and cursors: the REST listing across sections, the presence events (joined, moved,
left), throttled cursor writes, and a crashed node's users disappearing within the TTL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest

from loadtests.client import YClient
from persistence.coordinator.memory import MemoryCoordinator
from protocol.events import AppEvent, decode_event
from protocol.ysync import AppEventMessage
from server.presence.tracker import PresenceChange, PresenceTracker
from tests.conftest import LiveServer, StartServer


def presence_events(client: YClient) -> list[AppEvent]:
    decoded = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    return [event for event in decoded if event.type == "presence"]


def seen(client: YClient, action: str, user: str, section: str | None) -> bool:
    return any(
        (e.get("action"), e.get("user"), e.get("section")) == (action, user, section)
        for e in presence_events(client)
    )


def awareness(cursor: Any, name: str) -> str:
    return json.dumps({"user": {"name": name, "color": "#30bced"}, "cursor": cursor})


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` holds (re-checked every few milliseconds), or fail."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.02)


async def presence_of(server: LiveServer, http: httpx2.AsyncClient, token: str) -> dict[str, Any]:
    response = await http.get(
        "/api/documents/deck/presence", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_presence_listing_and_events_across_sections(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    owner = await server.add_user("owner@example.com", "analyst", "Olivia")
    bob = await server.add_user("bob@example.com", "analyst", "Bob")
    stranger = await server.add_user("stranger@example.com", "analyst", "Sam")
    owner_id, bob_id = str(owner.id), str(bob.id)
    owner_token, bob_token = server.token(owner), server.token(bob)
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        created = await http.post(
            "/api/documents",
            headers={"Authorization": f"Bearer {owner_token}"},
            json={
                "documentId": "deck",
                "title": "Deck",
                "permissions": {"edit": [bob_id]},
                "sections": [
                    {"id": "a", "title": "A", "content": "alpha"},
                    {"id": "b", "title": "B", "content": ""},
                ],
            },
        )
        assert created.status_code == 201, created.text
        ws = server.ws_url
        async with YClient(ws, "deck", token=owner_token, query="events=1") as watcher:
            await watcher.wait_for(lambda: seen(watcher, "joined", owner_id, None))
            bob_a = YClient(ws, "deck/a", token=bob_token)
            await bob_a.connect()
            await watcher.wait_for(lambda: seen(watcher, "joined", bob_id, "a"))
            event = next(e for e in presence_events(watcher) if e.get("user") == bob_id)
            assert event.get("name") == "Bob"
            await bob_a.set_awareness(awareness({"anchor": 1, "head": 3}, "Bob"))
            # The owner opens a section besides the outline: a move.
            async with YClient(ws, "deck/b", token=owner_token) as owner_b:
                await watcher.wait_for(lambda: seen(watcher, "moved", owner_id, "b"))
                await owner_b.set_awareness(awareness({"anchor": 0, "head": 0}, "Olivia"))

                async def both_cursors_listed() -> bool:
                    body = await presence_of(server, http, owner_token)
                    cursors = {
                        (user["userId"], section["sectionId"]): section["cursor"]
                        for user in body["users"]
                        for section in user["sections"]
                    }
                    return cursors == {
                        (bob_id, "a"): {"anchor": 1, "head": 3},
                        (owner_id, None): None,
                        (owner_id, "b"): {"anchor": 0, "head": 0},
                    }

                await eventually(both_cursors_listed, what="both users and cursors listed")
                body = await presence_of(server, http, owner_token)
                users = {user["userId"]: user for user in body["users"]}
                assert users[bob_id]["name"] == "Bob"
                assert users[owner_id]["name"] == "Olivia"
                assert users[owner_id]["connections"] == 2
                assert isinstance(users[bob_id]["since"], str)
                # Someone who may not view the document sees nothing of it.
                hidden = await http.get(
                    "/api/documents/deck/presence",
                    headers={"Authorization": f"Bearer {server.token(stranger)}"},
                )
                assert hidden.status_code == 404

                # Bob opens section b too: he moved. Closing a: he is still in the document.
                async with YClient(ws, "deck/b", token=bob_token) as bob_b:
                    await watcher.wait_for(lambda: seen(watcher, "moved", bob_id, "b"))
                    await bob_a.close()

                    async def bob_only_in_b() -> bool:
                        body = await presence_of(server, http, owner_token)
                        sections = [
                            section["sectionId"]
                            for user in body["users"]
                            if user["userId"] == bob_id
                            for section in user["sections"]
                        ]
                        return sections == ["b"]

                    await eventually(bob_only_in_b, what="bob's connection to a gone")
                    assert not seen(watcher, "left", bob_id, "a")
                    await bob_b.set_awareness(awareness({"anchor": 2, "head": 2}, "Bob"))
                # His last connection closed: he left, and his cursors went with him.
                await watcher.wait_for(lambda: seen(watcher, "left", bob_id, "b"))
                body = await presence_of(server, http, owner_token)
                assert [user["userId"] for user in body["users"]] == [owner_id]
                cursors = await server.collab.coordinator.cursors.of_document("deck")
                assert {cursor.user_id for cursor in cursors} == {owner_id}


async def test_cursor_moves_are_coalesced(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await start_server()
    cursors = server.collab.coordinator.cursors
    writes: list[Any] = []
    original = cursors.set

    async def counting_set(
        document_id: str, section_id: str | None, user_id: str, value: Any
    ) -> bool:
        writes.append(value)
        return await original(document_id, section_id, user_id, value)

    monkeypatch.setattr(cursors, "set", counting_set)
    moves = 40
    async with YClient(server.ws_url, "storm/a") as client:
        for position in range(1, moves + 1):
            await client.set_awareness(awareness({"anchor": position, "head": position}, "Dev"))
        user = server.collab.authn.dev_user
        assert user is not None

        async def last_move_stored() -> bool:
            cursor = await cursors.get("storm", "a", str(user.id))
            return cursor is not None and cursor.value == {"anchor": moves, "head": moves}

        await eventually(last_move_stored, what="the last cursor move stored")
    # A burst of moves costs a few writes, not one per move.
    assert 1 <= len(writes) <= moves // 4
    assert writes[-1] == {"anchor": moves, "head": moves}


class FakeClock:
    """Unix seconds that move only when told."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def test_a_crashed_nodes_users_disappear_within_the_ttl() -> None:
    clock = FakeClock()
    coordinator = MemoryCoordinator(clock=clock)
    changes: list[PresenceChange] = []
    ttl = 15.0
    node_a = PresenceTracker(coordinator, "node-a", ttl=ttl, on_change=changes.append, clock=clock)
    node_b = PresenceTracker(coordinator, "node-b", ttl=ttl, on_change=changes.append, clock=clock)
    node_a.joined("1", "doc", "intro", "ann", "Ann")
    node_b.joined("2", "doc", "risks", "ben", "Ben")
    await node_a.drain()
    await node_b.drain()
    node_b.awareness("2", awareness({"anchor": 4, "head": 4}, "Ben"))
    await node_b.flush_cursors()
    members = await coordinator.presence.members("doc")
    assert [(m.user_id, m.section_id, m.node_id) for m in members] == [
        ("ann", "intro", "node-a"),
        ("ben", "risks", "node-b"),
    ]
    assert [(c.action, c.user_id) for c in changes] == [("joined", "ann"), ("joined", "ben")]
    assert [c.user_id for c in await coordinator.cursors.of_document("doc")] == ["ben"]

    # Node B crashes (it stops heartbeating); node A keeps beating.
    clock.advance(ttl * 2 / 3)
    assert await node_a.heartbeat_once()
    assert len(await coordinator.presence.members("doc")) == 2  # not yet: within its TTL
    clock.advance(ttl * 2 / 3)
    assert await node_a.heartbeat_once()
    members = await coordinator.presence.members("doc")
    assert [(m.user_id, m.node_id) for m in members] == [("ann", "node-a")]
    assert await coordinator.cursors.of_document("doc") == []

    # Node A stalls past its TTL: its entries go too, and its next heartbeat joins its
    # connections again.
    clock.advance(ttl + 1)
    assert await coordinator.presence.members("doc") == []
    assert not await node_a.heartbeat_once()
    await node_a.drain()
    members = await coordinator.presence.members("doc")
    assert [(m.user_id, m.node_id) for m in members] == [("ann", "node-a")]
    # A join after a stall re-joins the node's other connections first.
    clock.advance(ttl + 1)
    node_a.joined("3", "doc", None, "cy", "Cy")
    await node_a.drain()
    members = await coordinator.presence.members("doc")
    assert sorted(m.user_id for m in members) == ["ann", "cy"]
    # Leaving: the last connection of a user is reported once.
    node_a.left("1")
    await node_a.drain()
    assert changes[-1] == PresenceChange("left", "doc", "intro", "ann", "Ann")
    assert [m.user_id for m in await coordinator.presence.members("doc")] == ["cy"]


async def test_one_users_many_sockets_are_one_presence() -> None:
    """A user with hundreds of sockets in a document (a load test's one user) joins once,
    moves when a socket opens a section none of theirs is in, and leaves with the last."""
    coordinator = MemoryCoordinator(clock=FakeClock())
    changes: list[PresenceChange] = []
    node = PresenceTracker(coordinator, "node", on_change=changes.append)
    for n in range(300):
        node.joined(str(n), "doc", "intro", "ann", "Ann")
    node.joined("300", "doc", "risks", "ann", "Ann")
    node.joined("301", "doc", "risks", "ann", "Ann")
    await node.drain()
    assert [(c.action, c.section_id) for c in changes] == [("joined", "intro"), ("moved", "risks")]
    assert len(await coordinator.presence.members("doc")) == 302
    for n in range(301):
        node.left(str(n))
    await node.drain()
    assert [c.action for c in changes] == ["joined", "moved"]  # one socket is left
    node.left("301")
    await node.drain()
    assert [c.action for c in changes] == ["joined", "moved", "left"]
    assert await coordinator.presence.members("doc") == []
