"""One user cannot hold more than ``max_sockets_per_user`` open sockets on a node."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from loadtests.client import YClient
from tests.conftest import LiveServer, StartServer

CAP = 3


async def _open_synced(server: LiveServer, room: str, token: str) -> YClient:
    client = YClient(server.ws_url, room, token=token)
    await client.connect()
    await asyncio.wait_for(client.synced.wait(), 10)
    return client


async def _refused_code(server: LiveServer, room: str, token: str) -> tuple[int | None, str]:
    client = YClient(server.ws_url, room, token=token)
    await client.connect()
    try:
        return await client.wait_closed(10), client.close_reason
    finally:
        await client.close()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds (a server-side count: re-checked every 10 ms)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition did not hold in time"
        await asyncio.sleep(0.01)


async def test_the_socket_past_the_cap_is_refused_and_a_close_frees_a_slot(
    start_server: StartServer,
) -> None:
    server = await start_server(insecure_dev=False, max_sockets_per_user=CAP)
    alice = await server.add_user("alice@example.com", "analyst")
    bob = await server.add_user("bob@example.com", "analyst")
    alice_token, bob_token = server.token(alice), server.token(bob)
    async with contextlib.AsyncExitStack() as stack:
        held = [await _open_synced(server, f"cap/s{n}", alice_token) for n in range(CAP)]
        for client in held:
            stack.push_async_callback(client.close)
        code, reason = await _refused_code(server, "cap/s9", alice_token)
        assert code == 4430
        assert "too many open sockets" in reason
        # Another user is not affected.
        other = await _open_synced(server, "bobs/s0", bob_token)
        stack.push_async_callback(other.close)
        # The refused socket took no slot; closing a held one frees one.
        await held[0].close()
        await _until(lambda: len(server.collab.hub.by_user.get(str(alice.id), ())) == CAP - 1)
        again = await _open_synced(server, "cap/s0", alice_token)
        stack.push_async_callback(again.close)
        code, _ = await _refused_code(server, "cap/s9", alice_token)
        assert code == 4430


async def test_sockets_opened_at_once_do_not_pass_the_cap(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False, max_sockets_per_user=CAP)
    alice = await server.add_user("alice@example.com", "analyst")
    token = server.token(alice)
    clients = [YClient(server.ws_url, f"burst/s{n}", token=token) for n in range(CAP * 3)]
    try:
        await asyncio.gather(*(client.connect() for client in clients))

        async def outcome(client: YClient) -> str:
            synced = asyncio.ensure_future(client.synced.wait())
            closed = asyncio.ensure_future(client.wait_closed(10))
            done, pending = await asyncio.wait(
                {synced, closed}, timeout=10, return_when="FIRST_COMPLETED"
            )
            for task in pending:
                task.cancel()
            return "open" if synced in done else f"closed {closed.result()}"

        outcomes = await asyncio.gather(*(outcome(client) for client in clients))
        assert outcomes.count("open") == CAP
        assert outcomes.count("closed 4430") == CAP * 2
    finally:
        await asyncio.gather(*(client.close() for client in clients))
