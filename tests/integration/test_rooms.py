"""The WebSocket rooms end to end, through a real uvicorn on a free port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pycrdt
import pytest

from crdt.document import CrdtDoc
from crdt.ids import parse_room_name
from loadtests.client import YClient
from loadtests.harness import ServerProcess
from protocol.events import decode_event
from protocol.ysync import AppEventMessage, QueryAwareness, SyncUpdate
from server.hooks import Loading
from tests.conftest import StartServer


async def test_update_reaches_the_other_clients_not_the_sender(start_server: StartServer) -> None:
    server = await start_server()
    async with (
        YClient(server.ws_url, "plan/intro") as alice,
        YClient(server.ws_url, "plan/intro") as bob,
        YClient(server.ws_url, "plan/intro") as carol,
    ):
        await alice.insert(0, "Vision: grow")
        await bob.wait_for(lambda: str(bob.text) == "Vision: grow")
        await carol.wait_for(lambda: str(carol.text) == "Vision: grow")
        await bob.insert(len(bob.text), " fast")
        await alice.wait_for(lambda: str(alice.text) == "Vision: grow fast")
        updates_to_alice = [m for m in alice.received if isinstance(m, SyncUpdate)]
        assert len(updates_to_alice) == 1, "the sender must not get its own update back"


async def test_concurrent_edits_converge(start_server: StartServer) -> None:
    server = await start_server()
    clients = [await YClient(server.ws_url, "plan/goals").__aenter__() for _ in range(4)]
    try:
        for round_ in range(25):
            for index, client in enumerate(clients):
                client.text.insert(len(client.text) // 2, f"{index}.{round_} ")
            await asyncio.gather(*(client.flush() for client in clients))
        expected_length = sum(len(f"{i}.{r} ") for i in range(4) for r in range(25))
        for client in clients:
            await client.wait_for(lambda c=client: len(c.text) == expected_length)  # type: ignore[misc]
        assert len({str(client.text) for client in clients}) == 1
    finally:
        for client in clients:
            await client.close()


async def test_late_joiner_gets_full_state(start_server: StartServer) -> None:
    server = await start_server()
    async with YClient(server.ws_url, "plan/market") as writer:
        await writer.insert(0, "TAM is large")
        async with YClient(server.ws_url, "plan/market") as reader:
            await reader.wait_for(lambda: str(reader.text) == "TAM is large")


async def test_rooms_are_isolated(start_server: StartServer) -> None:
    server = await start_server()
    async with (
        YClient(server.ws_url, "plan/a") as a1,
        YClient(server.ws_url, "plan/b") as b1,
        YClient(server.ws_url, "other") as c1,
    ):
        await a1.insert(0, "in a")
        async with YClient(server.ws_url, "plan/a") as a2:
            await a2.wait_for(lambda: str(a2.text) == "in a")
        assert str(b1.text) == ""
        assert str(c1.text) == ""


async def test_awareness_relayed_and_removed_when_owner_leaves(start_server: StartServer) -> None:
    server = await start_server()
    async with YClient(server.ws_url, "plan/team") as watcher:
        owner = await YClient(server.ws_url, "plan/team").__aenter__()
        await owner.set_awareness('{"user":{"name":"Ada"}}')
        await watcher.wait_for(lambda: owner.client_id in watcher.awareness)
        relayed = json.loads(watcher.awareness[owner.client_id])
        assert relayed["user"] == {"name": "Ada"}
        assert relayed["collab"]["name"] == "Local developer", "the verified identity"
        # A late joiner receives the known states on join.
        async with YClient(server.ws_url, "plan/team") as late:
            await late.wait_for(lambda: owner.client_id in late.awareness)
            await owner.close()
            await watcher.wait_for(lambda: owner.client_id not in watcher.awareness)
            await late.wait_for(lambda: owner.client_id not in late.awareness)


async def test_query_awareness_answers_with_known_states(start_server: StartServer) -> None:
    server = await start_server()
    async with (
        YClient(server.ws_url, "plan/q") as a,
        YClient(server.ws_url, "plan/q") as b,
    ):
        await a.set_awareness('{"cursor":1}')
        await b.wait_for(lambda: a.client_id in b.awareness)
        b.awareness.clear()
        await b.send(QueryAwareness())
        await b.wait_for(lambda: a.client_id in b.awareness)


async def test_awareness_for_another_connections_client_is_dropped(
    start_server: StartServer,
) -> None:
    """Echoes (y-websocket relays every change it sees) and spoofs are dropped, not relayed,
    and the sender stays connected."""
    server = await start_server()
    async with (
        YClient(server.ws_url, "plan/spoof") as victim,
        YClient(server.ws_url, "plan/spoof") as spoofer,
    ):
        await victim.set_awareness('{"user":"victim"}')
        await spoofer.wait_for(lambda: victim.client_id in spoofer.awareness)
        own_id = spoofer.client_id
        spoofer.doc = pycrdt.Doc(client_id=victim.client_id)
        await spoofer.set_awareness('{"user":"impostor"}')
        spoofer.doc = pycrdt.Doc(client_id=own_id)
        await spoofer.set_awareness('{"user":"spoofer"}')
        await victim.wait_for(lambda: own_id in victim.awareness)
        assert victim.awareness.get(victim.client_id) is None, "nothing about itself relayed"
        assert not spoofer.closed.is_set()
        async with YClient(server.ws_url, "plan/spoof") as observer:
            await observer.wait_for(lambda: own_id in observer.awareness)
            assert json.loads(observer.awareness[victim.client_id])["user"] == "victim"


async def test_content_survives_a_restart(start_server: StartServer, tmp_path) -> None:
    data_dir = tmp_path / "restart"
    server = await start_server(data_dir=data_dir, room_idle_seconds=60)
    async with YClient(server.ws_url, "plan/durable") as writer:
        await writer.insert(0, "kept across restarts")
        async with YClient(server.ws_url, "plan/durable") as peer:
            await peer.wait_for(lambda: str(peer.text) == "kept across restarts")
    second = await start_server(data_dir=data_dir)
    async with YClient(second.ws_url, "plan/durable") as reader:
        await reader.wait_for(lambda: str(reader.text) == "kept across restarts")


async def test_idle_room_unloads_and_reloads(start_server: StartServer) -> None:
    server = await start_server(room_idle_seconds=0.05)
    registry = server.collab.registry
    unloaded = asyncio.create_task(registry.wait_unloaded("plan/idle"))
    outline_unloaded = asyncio.create_task(registry.wait_unloaded("plan"))
    async with YClient(server.ws_url, "plan/idle") as writer:
        await writer.insert(0, "persisted")
        async with YClient(server.ws_url, "plan/idle") as peer:
            await peer.wait_for(lambda: str(peer.text) == "persisted")
    await asyncio.wait_for(unloaded, 10)
    # The outline stays while a section of its document is loaded, then goes too.
    await asyncio.wait_for(outline_unloaded, 10)
    assert registry.stats()["rooms"] == 0
    async with YClient(server.ws_url, "plan/idle") as reader:
        await reader.wait_for(lambda: str(reader.text) == "persisted")
    # The section room and its document's outline room, each loaded twice.
    assert registry.rooms_loaded == 4


async def test_many_simultaneous_joins_load_the_room_once(start_server: StartServer) -> None:
    server = await start_server()
    clients = [YClient(server.ws_url, "herd/s1") for _ in range(30)]
    await asyncio.gather(*(client.__aenter__() for client in clients))
    try:
        # One section room plus its document's outline room, each loaded once.
        assert server.collab.registry.rooms_loaded == 2
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def _held_load(server: Any, key: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the loads of room ``key`` at the before-load hook: (started, release)."""
    started, release = asyncio.Event(), asyncio.Event()

    async def hold(loading: Loading) -> None:
        if str(loading.room) == key:
            started.set()
            await release.wait()

    server.collab.hooks.before_load.subscribe(hold)
    return started, release


def _insert(text: str) -> Callable[[CrdtDoc], object]:
    return lambda doc: doc.get("content", type=pycrdt.Text).insert(0, text)


async def test_a_joiner_cancelled_while_the_room_loads_does_not_fail_the_others(
    start_server: StartServer,
) -> None:
    server = await start_server()
    registry = server.collab.registry
    started, release = await _held_load(server, "held/s")
    name = parse_room_name("held/s")
    first = asyncio.create_task(registry.edit(name, _insert("a"), "test"))
    await started.wait()
    second = asyncio.create_task(registry.edit(name, _insert("b"), "test"))
    await asyncio.sleep(0)  # the second waits on the first one's load
    first.cancel()  # the first joiner ran the load: the second runs it again
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await asyncio.wait_for(second, 10) is True
    assert registry.rooms_loaded == 2  # the section and its outline, once each
    room = registry.room("held/s")
    assert room is not None
    assert str(room.doc.doc.get("content", type=pycrdt.Text)) == "b"


async def test_a_load_whose_only_joiner_left_is_abandoned(start_server: StartServer) -> None:
    server = await start_server()
    registry = server.collab.registry
    started, _ = await _held_load(server, "gone/s")
    joiner = asyncio.create_task(registry.edit(parse_room_name("gone/s"), _insert("x"), "test"))
    await started.wait()
    joiner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await joiner
    # Nothing half-loaded stays behind, and the next joiner loads the room afresh.
    assert not registry.is_loading("gone/s")
    assert registry.room("gone/s") is None
    assert registry.rooms_loaded == 0


async def test_compaction_keeps_content(start_server: StartServer) -> None:
    server = await start_server(compact_after_updates=10, room_idle_seconds=60)
    async with YClient(server.ws_url, "plan/compact") as writer:
        for i in range(40):
            await writer.insert(len(writer.text), str(i % 10))
        async with YClient(server.ws_url, "plan/compact") as reader:
            await reader.wait_for(lambda: len(reader.text) == 40)
    stored = await server.collab.store.load("plan/compact")
    assert stored.snapshot is not None
    assert len(stored.journal) < 40


async def test_healthz(start_server: StartServer) -> None:
    server = await start_server()
    async with httpx2.AsyncClient() as http:
        response = await http.get(server.http_url + "/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_joining_a_new_section_appends_it_to_the_outline(start_server: StartServer) -> None:
    server = await start_server()
    async with YClient(server.ws_url, "strategy") as outline_client:
        async with (
            YClient(server.ws_url, "strategy/vision"),
            YClient(server.ws_url, "strategy/risks"),
        ):
            sections = outline_client.doc.get("sections", type=pycrdt.Map)
            await outline_client.wait_for(lambda: {"vision", "risks"} <= set(sections.keys()))
        meta = outline_client.doc.get("meta", type=pycrdt.Map)
        assert "createdAt" in meta


async def test_creation_on_join_can_be_turned_off(start_server: StartServer, tmp_path) -> None:
    data_dir = tmp_path / "no-create"
    first = await start_server(data_dir=data_dir)
    async with YClient(first.ws_url, "existing/intro") as writer:
        await writer.insert(0, "hello")
    second = await start_server(data_dir=data_dir, create_on_join=False)
    async with YClient(second.ws_url, "existing/intro") as reader:
        await reader.wait_for(lambda: str(reader.text) == "hello")
    for room in ("missing", "missing/intro", "existing/other"):
        refused = await YClient(second.ws_url, room).connect()
        assert await refused.wait_closed() == 4404
        assert "does not exist" in refused.close_reason


async def test_dead_socket_is_dropped_by_keepalive(start_server: StartServer) -> None:
    """A peer that completes the handshake, then never answers pings, is dropped."""
    server = await start_server(ping_interval=0.2, ping_timeout=0.2, room_idle_seconds=0)
    unloaded = asyncio.create_task(server.collab.registry.wait_unloaded("dead/socket"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /ws/dead/socket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    status = await reader.readline()
    assert b"101" in status
    try:
        # The room empties (and unloads) only once the server gave up on the silent peer.
        await asyncio.wait_for(unloaded, 10)
        assert server.collab.registry.stats()["connections"] == 0
    finally:
        writer.close()


async def test_healthz_totals_survive_room_unloads(start_server: StartServer) -> None:
    server = await start_server(room_idle_seconds=0)
    registry = server.collab.registry
    unloaded = asyncio.create_task(registry.wait_unloaded("count/s"))
    async with YClient(server.ws_url, "count/s") as writer:
        await writer.insert(0, "a")
        async with YClient(server.ws_url, "count/s") as peer:
            await peer.wait_for(lambda: str(peer.text) == "a")
    await asyncio.wait_for(unloaded, 10)
    async with httpx2.AsyncClient() as http:
        stats = (await http.get(server.http_url + "/healthz")).json()
    assert stats["rooms"] == 0
    # The section's edit and the outline's creation entries, both rooms now unloaded.
    assert stats["updates_applied_total"] >= 2
    assert stats["frames_broadcast_total"] >= 1


async def test_rooms_unloading_at_once_unload_once(tmp_path: Path) -> None:
    """With no grace period and a compaction per update, sections and their outlines unload
    while other unloads are under way: each room is unloaded once and the server keeps
    serving (a room unloaded twice used to crash the server's task group: 503 to all)."""
    env = {"COLLAB_ROOM_IDLE_SECONDS": "0", "COLLAB_COMPACT_AFTER_UPDATES": "1"}
    with ServerProcess(tmp_path / "data", env=env) as server:
        for room in ("burst/a", "other/b", "burst/a", "other/b", "burst/c", "burst/a"):
            async with YClient(server.ws_url, room, query="events=1") as client:
                await client.insert(0, "x")
                await client.wait_for(lambda c=client: _acked(c) >= 2)  # type: ignore[misc]
        async with httpx2.AsyncClient(base_url=server.http_url) as http:
            assert (await http.get("/healthz")).status_code == 200
        assert not [line for line in server.lines if "Traceback" in line]


def _acked(client: YClient) -> int:
    events = [decode_event(m.payload) for m in client.received if isinstance(m, AppEventMessage)]
    return max((int(e.get("updates")) for e in events if e.type == "ack"), default=0)
