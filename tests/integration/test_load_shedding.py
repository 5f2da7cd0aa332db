"""Load shedding at the door: past ``max_joining`` sockets joining at once, an upgrade is
refused before any work with HTTP 503, a problem document and a Retry-After header; the
joins in flight are unaffected, and once they end new sockets join again."""

from __future__ import annotations

import asyncio
import json

import pytest

from loadtests import wire
from loadtests.client import YClient
from server.hooks import Hooks, Joining
from server.realtime.hub import Hub
from tests.conftest import StartServer

pytestmark = pytest.mark.timeout(30)


class HeldJoins:
    """An extension holding every join in ``on_connect`` until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0
        self.arrived = asyncio.Condition()

    def install(self, hooks: Hooks, hub: Hub) -> None:
        hooks.on_connect.subscribe(self.hold)

    async def hold(self, joining: Joining) -> None:
        async with self.arrived:
            self.waiting += 1
            self.arrived.notify_all()
        await self.release.wait()

    async def until_waiting(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: self.waiting >= count), 10)


async def refused_upgrade(url: str) -> wire.HandshakeError:
    with pytest.raises(wire.HandshakeError) as refused:
        await wire.connect(url, lambda data, when: None, 5)
    return refused.value


async def test_upgrades_past_the_joins_in_flight_are_shed_with_retry_after(
    start_server: StartServer,
) -> None:
    held = HeldJoins()
    server = await start_server(max_joining=2, extensions=[held.install])
    first = YClient(server.ws_url, "shed/a")
    second = YClient(server.ws_url, "shed/b")
    await first.connect()
    await second.connect()
    await held.until_waiting(2)
    assert server.collab.joins.stats() == {"joins_in_flight": 2, "joins_shed": 0}

    refused = await refused_upgrade(f"{server.ws_url}/shed/c")
    assert refused.status == 503
    assert refused.retry_after is not None
    assert refused.retry_after >= 1
    assert server.collab.joins.stats() == {"joins_in_flight": 2, "joins_shed": 1}

    held.release.set()
    for client in (first, second):
        await asyncio.wait_for(client.synced.wait(), 10)
    assert server.collab.joins.in_flight == 0
    async with YClient(server.ws_url, "shed/c") as late:
        await asyncio.wait_for(late.synced.wait(), 10)
        assert late.close_code is None
    for client in (first, second):
        await client.close()


async def test_the_refusal_is_a_problem_document(start_server: StartServer) -> None:
    held = HeldJoins()
    server = await start_server(max_joining=1, extensions=[held.install])
    first = YClient(server.ws_url, "shed/x")
    await first.connect()
    await held.until_waiting(1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"GET /ws/shed/y HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503")
    assert b"\r\nRetry-After: " in head
    problem = json.loads(body)
    assert problem["status"] == 503
    assert problem["title"] == "overloaded"
    assert problem["retryAfter"] >= 1
    held.release.set()
    await asyncio.wait_for(first.synced.wait(), 10)
    await first.close()
