"""Authentication and authorization of sockets and REST, end to end: the attack cases.

Every case must be refused with a clear status or close code, and change nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import httpx2
import jwt
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from loadtests.client import YClient
from persistence.relational import AuditQuery, UserChanges
from server.identity.tokens import AUDIENCE, ISSUER
from tests.conftest import LiveServer, StartServer


async def secure(start_server: StartServer, **overrides: Any) -> LiveServer:
    return await start_server(insecure_dev=False, **overrides)


async def upgrade_status(url: str, **kwargs: Any) -> int:
    """The HTTP status a refused upgrade gets (fails if the upgrade succeeds)."""
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url, compression=None, **kwargs):
            pass
    return refused.value.response.status_code


async def close_code(server: LiveServer, room: str, token: str, **kwargs: Any) -> int | None:
    """The close code of a socket the server accepts and then closes."""
    client = YClient(server.ws_url, room, token=token, **kwargs)
    await client.connect()
    try:
        return await client.wait_closed(10)
    finally:
        await client.close()


def unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def claims_for(user_id: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": user_id,
        "sid": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
        **extra,
    }


async def test_every_attack_case_is_refused(start_server: StartServer) -> None:
    server = await secure(start_server)
    owner = await server.add_user("owner@example.com", "analyst")
    stranger = await server.add_user("stranger@example.com", "analyst")
    owner_token = server.token(owner)
    room = "plan/intro"
    async with YClient(server.ws_url, room, token=owner_token) as writer:
        await writer.insert(0, "confidential")
    base = f"{server.ws_url}/{room}"
    user_id = str(stranger.id)

    # No token, forged signature, alg none, expired: refused before the upgrade.
    assert await upgrade_status(base) == 401
    forged = jwt.encode(claims_for(user_id), "x" * 48, algorithm="HS256")
    assert await upgrade_status(f"{base}?token={forged}") == 401
    assert await upgrade_status(f"{base}?token={unsigned(claims_for(user_id))}") == 401
    expired = server.collab.authn.tokens.issue(user_id, ttl=60, now=time.time() - 3600)
    assert await upgrade_status(f"{base}?token={expired}") == 401
    garbage = "not-a-token"
    assert await upgrade_status(f"{base}?token={garbage}") == 401
    # A token scoped to another document.
    scoped = server.token(owner, documents=["other-doc"])
    assert await upgrade_status(f"{base}?token={scoped}") == 403
    # A foreign Origin (cross-site WebSocket hijacking), even with a good token.
    assert await upgrade_status(f"{base}?token={owner_token}", origin="https://evil.example") == 403

    # A token for a user who does not exist: closed 4401 after the upgrade.
    ghost = server.collab.authn.tokens.issue(str(uuid.uuid4()), ttl=600)
    assert await close_code(server, room, ghost) == 4401
    # A stranger joining a document they cannot view: 4403.
    assert await close_code(server, room, server.token(stranger)) == 4403
    # A suspended user: 4403.
    await server.collab.relational.users.suspend(stranger.id)
    server.collab.authn.forget_user(user_id)
    assert await close_code(server, "anything/else", server.token(stranger)) == 4403

    # REST says the same things.
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/api/me")).status_code == 401
        response = await http.get("/api/me", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"
        none = unsigned(claims_for(user_id))
        assert (
            await http.get("/api/me", headers={"Authorization": f"Bearer {none}"})
        ).status_code == 401
        assert (
            await http.get("/api/me", headers={"Authorization": "Basic abc"})
        ).status_code == 401
        assert (await http.get(f"/api/me?token={owner_token}")).status_code == 200
        foreign = {"Authorization": f"Bearer {owner_token}", "Origin": "https://evil.example"}
        assert (await http.get("/api/me", headers=foreign)).status_code == 403

    # The refused joins are on the record, with why.
    await server.collab.audit.flush()
    refused = await server.collab.relational.audit.query(AuditQuery(action="join"))
    assert any(
        e.status == "failure" and e.user_id == stranger.id and e.error_message
        for e in refused.items
    )
    # Nothing of all that changed the document.
    async with YClient(server.ws_url, room, token=owner_token) as reader:
        assert str(reader.text) == "confidential"


async def test_a_viewer_is_read_only(start_server: StartServer) -> None:
    server = await secure(start_server)
    owner = await server.add_user("owner@example.com", "analyst")
    viewer = await server.add_user("viewer@example.com", "viewer")
    async with YClient(server.ws_url, "doc1/s", token=server.token(owner)) as writer:
        await writer.insert(0, "hello")
    await server.collab.content.update(
        "business_documents",
        "doc1",
        {"permissions": {"view": [str(viewer.id)], "edit": [], "comment": []}},
    )
    server.collab.access.forget("doc1")
    async with YClient(server.ws_url, "doc1/s", token=server.token(viewer)) as reader:
        assert str(reader.text) == "hello"
        await reader.wait_for(lambda: bool(reader.denied))  # told at join
        await reader.insert(0, "HACKED ")
        await reader.wait_for(lambda: len(reader.denied) >= 2)
        assert reader.close_code is None  # still connected, still reading
    async with YClient(server.ws_url, "doc1/s", token=server.token(owner)) as check:
        assert str(check.text) == "hello"


async def test_rights_changes_reach_open_connections(start_server: StartServer) -> None:
    server = await secure(start_server)
    owner = await server.add_user("owner@example.com", "analyst")
    editor = await server.add_user("editor@example.com", "analyst")
    async with YClient(server.ws_url, "doc2/s", token=server.token(owner)) as first:
        await first.insert(0, "x")
    grant = server.collab.relational.permissions.grant
    await grant(editor.id, "business_document", "doc2", "edit")
    client = YClient(server.ws_url, "doc2/s", token=server.token(editor), query="events=1")
    async with client:
        await client.insert(0, "a")
        async with YClient(server.ws_url, "doc2/s", token=server.token(owner)) as watcher:
            await watcher.wait_for(lambda: str(watcher.text) == "ax")
            # Demoted to viewer: read-only within 5 s, without reconnecting.
            started = time.monotonic()
            await grant(editor.id, "business_document", "doc2", "view")
            await client.wait_for(lambda: bool(client.denied), timeout=5)
            assert time.monotonic() - started < 5
            await client.insert(0, "b")
            await client.wait_for(lambda: len(client.denied) >= 2, timeout=5)
            assert str(watcher.text) == "ax"
            # Suspended: disconnected within 5 s.
            await server.collab.relational.users.update(editor.id, UserChanges(status="suspended"))
            assert await client.wait_closed(5) == 4403


async def test_rate_limits(start_server: StartServer) -> None:
    server = await secure(
        start_server,
        rate_messages_per_second=5,
        rate_requests_per_minute=3,
        rate_connects_per_minute=2,
    )
    user = await server.add_user("fast@example.com", "analyst")
    token = server.token(user)
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        headers = {"Authorization": f"Bearer {token}"}
        statuses = [(await http.get("/api/me", headers=headers)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = await http.get("/api/me", headers=headers)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["retryAfter"] > 0
    # A message flood closes the socket with 4429 and says when to retry.
    client = YClient(server.ws_url, "flood/s", token=token)
    await client.connect()
    await asyncio.wait_for(client.synced.wait(), 10)
    for index in range(60):
        try:
            await client.insert(index, "z")
        except websockets.ConnectionClosed:
            break
    assert await client.wait_closed(10) == 4429
    assert "retry in" in client.close_reason
    await client.close()
    # Connects over the limit (2 per minute; two used above) close with 4429.
    assert await close_code(server, "flood/s", token) == 4429


async def test_awareness_cannot_claim_another_identity(start_server: StartServer) -> None:
    server = await secure(start_server)
    alice = await server.add_user("alice@example.com", "analyst")
    bob = await server.add_user("bob@example.com", "admin")
    async with (
        YClient(server.ws_url, "aw/s", token=server.token(alice)) as mallory,
        YClient(server.ws_url, "aw/s", token=server.token(bob)) as watcher,
    ):
        spoof = json.dumps({"user": {"id": str(bob.id), "name": "Bob"}})
        honest = json.dumps({"user": {"id": str(alice.id), "name": "Alice"}})
        await mallory.set_awareness(spoof)
        await mallory.set_awareness(honest)
        await watcher.wait_for(lambda: mallory.client_id in watcher.awareness)
        relayed = json.loads(watcher.awareness[mallory.client_id])
        assert relayed["user"] == json.loads(honest)["user"]
        assert relayed["collab"]["userId"] == str(alice.id)


async def test_insecure_dev_needs_no_token_and_says_so(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_server(insecure_dev=True)
    assert "INSECURE DEVELOPMENT MODE" in caplog.text
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        me = (await http.get("/api/me")).json()
    assert me["email"] == "dev@localhost"
    assert me["role"] == "admin"


async def test_logout_ends_the_session(start_server: StartServer) -> None:
    server = await secure(start_server)
    user = await server.add_user("leaving@example.com", "analyst")
    token = server.token(user)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        opened = await http.post("/api/session", headers=headers)
        assert opened.status_code == 201
        cookie = opened.cookies[server.settings.session_cookie]
        assert "httponly" in opened.headers["set-cookie"].lower()
    jar = {server.settings.session_cookie: cookie}
    async with httpx2.AsyncClient(base_url=server.http_url, cookies=jar) as browser:
        assert (await browser.get("/api/me")).status_code == 200
    async with httpx2.AsyncClient(base_url=server.http_url) as http:
        assert (await http.delete("/api/session", headers=headers)).status_code == 204
        assert (await http.get("/api/me", headers=headers)).status_code == 401
    # The socket's token is genuine, so the upgrade happens; the ended session closes it.
    assert await close_code(server, "x/s", token) == 4401
