"""A Redis outage in service mode: signed-in users keep working on the rooms open on the
node; sessions that cannot be checked get 1013 (try again later) with a retry hint; no close
reason, error event or problem+json carries the driver's error text."""

from __future__ import annotations

import asyncio

import httpx2

from loadtests.client import YClient
from protocol.events import decode_event
from protocol.ysync import AppEventMessage
from tests.conftest import LiveServer, StartServer
from tests.services.redis import StartRedis

# Words of redis-py's and the adapter's error texts that a client must never see.
INTERNAL = ("redis", "connection refused", "error 111", "econnrefused", "127.0.0.1:")


def _clean(text: str) -> bool:
    return not any(word in text.lower() for word in INTERNAL)


async def _refusal(server: LiveServer, room: str, token: str) -> tuple[int | None, str, str]:
    """A socket the server closes: its code, reason, and the error event's detail."""
    details: list[str] = []

    def on_message(message: object) -> None:
        if isinstance(message, AppEventMessage):
            event = decode_event(message.payload)
            if event.type == "error":
                details.append(str(event.get("detail")))

    client = YClient(server.ws_url, room, token=token, query="events=1")
    client.on_message = on_message
    await client.connect()
    try:
        code = await client.wait_closed(20)
        return code, client.close_reason, " ".join(details)
    finally:
        await client.close()


async def test_signed_in_users_reconnect_through_a_redis_outage(
    start_server: StartServer, redis_servers: StartRedis
) -> None:
    redis = redis_servers(aof=True)
    server = await start_server(redis_url=redis.url, insecure_dev=False)
    alice = await server.add_user("alice@example.com", "analyst")
    bob = await server.add_user("bob@example.com", "analyst")
    alice_token = server.token(alice)
    async with YClient(server.ws_url, "plan/intro", token=alice_token) as kept:
        await kept.insert(0, "before the outage ")
        redis.kill()
        # Alice reconnects (a second tab, or after a network blip) to the open room: her
        # session was verified by this node, so she is let in and can edit.
        async with YClient(server.ws_url, "plan/intro", token=alice_token) as again:
            await again.wait_for(lambda: str(again.text).startswith("before the outage"), 20)
            await again.insert(len(again.text), "during it")
            await kept.wait_for(lambda: str(kept.text).endswith("during it"), 20)
        # Bob's session was never seen by this node: it cannot be decided now.
        code, reason, detail = await _refusal(server, "bob/s", server.token(bob))
        assert code == 1013
        assert "retry in 5 s" in reason
        assert _clean(reason), reason
        assert _clean(detail), detail
        # REST says the same, with Retry-After, and no driver text.
        async with httpx2.AsyncClient(base_url=server.http_url, timeout=30) as http:
            response = await http.get(
                "/api/me", headers={"Authorization": f"Bearer {server.token(bob)}"}
            )
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        assert _clean(response.text), response.text
    redis.restart()
    # Once Redis is back, Bob gets in.
    async with YClient(server.ws_url, "bob/s", token=server.token(bob)) as client:
        await asyncio.wait_for(client.synced.wait(), 20)


async def test_a_logout_on_this_node_holds_during_an_outage(
    start_server: StartServer, redis_servers: StartRedis
) -> None:
    redis = redis_servers(aof=True)
    server = await start_server(redis_url=redis.url, insecure_dev=False)
    alice = await server.add_user("alice@example.com", "analyst")
    token = server.token(alice)
    async with YClient(server.ws_url, "plan/intro", token=token):
        pass  # the session is verified and remembered
    redis.kill()
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=30) as http:
        logout = await http.delete("/api/session", headers={"Authorization": f"Bearer {token}"})
    assert logout.status_code == 503  # the store could not record it...
    assert _clean(logout.text), logout.text
    code, reason, _ = await _refusal(server, "plan/intro", token)
    assert code == 1013  # ...but this node no longer vouches for the session
    assert _clean(reason), reason
