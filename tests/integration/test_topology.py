"""The docker-compose topology without Docker: Debian's nginx running the repository's
``deploy/nginx.conf`` (rendered for this test's ports) in front of two ``collab serve``
nodes on one throwaway Redis and PostgreSQL.

A browser-like client, from another address (127.0.0.2), gets the editor's page and signs
in through the proxy (its Origin matches the Host nginx passes on), edits over WebSocket
through it, and its address
(not the proxy's) lands in the audit rows, through ``COLLAB_TRUSTED_PROXIES``. Killing one
node moves its clients to the other with nothing lost; a rolling restart (SIGTERM) says
not-ready first, then closes with 1012, and loses no acknowledged edit.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.client import YClient
from loadtests.harness import ServerProcess
from persistence.relational import AuditQuery, NewUser, User, migrate, open_relational
from server.identity.tokens import TokenService
from tests.integration.test_locks import eventually, wait_acked
from tests.services.nginx import Nginx
from tests.services.postgres import PostgresDatabases
from tests.services.redis import StartRedis

pytestmark = pytest.mark.slow

CLIENT_ADDRESS = "127.0.0.2"  # another machine, as far as the proxy can tell
WAIT = 20.0


@dataclass
class Topology:
    nodes: list[ServerProcess]
    nginx: Nginx
    postgres_url: str
    secret: str
    user: User

    @property
    def origin(self) -> str:
        return self.nginx.http_url

    def token(self, *, ttl: float = 3600) -> str:
        return TokenService(secret=self.secret).issue(str(self.user.id), ttl=ttl)

    def browser(self) -> httpx2.AsyncClient:
        """An HTTP client from CLIENT_ADDRESS, sending the Origin a browser on the page would."""
        return httpx2.AsyncClient(
            base_url=self.nginx.http_url,
            transport=httpx2.AsyncHTTPTransport(local_address=CLIENT_ADDRESS),
            headers={"Origin": self.origin},
            timeout=WAIT,
        )

    def socket(self, room: str, cookie: str, doc: object = None) -> YClient:
        return YClient(
            self.nginx.ws_url,
            room,
            query="events=1",
            headers={"Origin": self.origin, "Cookie": f"collab_session={cookie}"},
            doc=doc,  # type: ignore[arg-type]
            source=CLIENT_ADDRESS,
        )


async def _connections(node: ServerProcess) -> float:
    async with httpx2.AsyncClient(timeout=WAIT) as http:
        text = (await http.get(node.http_url + "/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "collab_connections":
            return float(family.samples[0].value)
    raise AssertionError("no collab_connections metric")


async def _node_of(topology: Topology) -> tuple[ServerProcess, ServerProcess]:
    """(the node holding at least one socket, the other one)."""
    first, second = topology.nodes
    if await _connections(first) > 0:
        return first, second
    return second, first


@pytest.fixture
async def topology(
    tmp_path: Path, redis_servers: StartRedis, postgres_databases: PostgresDatabases
) -> AsyncIterator[Topology]:
    redis = redis_servers(aof=True)
    url = await postgres_databases.create()
    await migrate(url)
    async with await open_relational(url) as stores:
        user = await stores.users.add(NewUser("ann@example.com", "Ann", "manager"))
    secret = secrets.token_urlsafe(48)
    data = tmp_path / "data"  # its SQLite content store stands in for the shared MongoDB
    nodes: list[ServerProcess] = []
    try:
        for name in ("node-1", "node-2"):
            env = {
                "COLLAB_INSECURE_DEV": "false",
                "COLLAB_REDIS_URL": redis.url,
                "COLLAB_POSTGRES_URL": url,
                "COLLAB_JWT_SECRET": secret,
                "COLLAB_NODE_NAME": name,
                "COLLAB_TRUSTED_PROXIES": '["127.0.0.1/32"]',
                "COLLAB_DRAIN_SECONDS": "1.5",
                "COLLAB_LOG_FORMAT": "json",
            }
            nodes.append(ServerProcess(data, env=env).start())
        with Nginx(tmp_path / "nginx", [node.port for node in nodes]) as nginx:
            yield Topology(nodes, nginx, url, secret, user)
    finally:
        for node in nodes:
            node.stop()
        await postgres_databases.drop(url)


async def _signed_in(topology: Topology) -> str:
    """Sign in as a browser does: trade the token for the session cookie."""
    token = topology.token()
    async with topology.browser() as http:
        page = await http.get("/")  # the web editor, through the proxy
        assert page.status_code == 200, page.text
        assert "text/html" in page.headers["content-type"]
        assert "/static/" in page.text  # its assets are referenced from the same origin
        assert (await http.get("/metrics")).status_code == 404  # not exposed by the proxy
        response = await http.post("/api/session", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 201, response.text
        cookie = response.cookies["collab_session"]
        http.cookies.clear()
        me = await http.get("/api/me", headers={"Cookie": f"collab_session={cookie}"})
        assert me.status_code == 200, me.text  # Origin matched the Host nginx passed on
        assert me.headers["x-request-id"]
    return cookie


async def _audited(topology: Topology, action: str) -> list[str | None]:
    async with await open_relational(topology.postgres_url) as stores:
        page = await stores.audit.query(AuditQuery(user_id=topology.user.id, action=action))
    return [row.ip_address for row in page.items]


def _has(client: YClient, text: str) -> Callable[[], bool]:
    return lambda: text in str(client.text)


async def test_a_client_through_nginx_edits_is_audited_and_survives_a_killed_node(
    topology: Topology,
) -> None:
    cookie = await _signed_in(topology)
    assert await _audited(topology, "login") == [CLIENT_ADDRESS]
    writer = topology.socket("plan/intro", cookie)
    await writer.connect()
    await asyncio.wait_for(writer.synced.wait(), WAIT)
    victim, survivor = await _node_of(topology)  # the writer's node: its only socket yet
    reader = topology.socket("plan/intro", cookie)
    await reader.connect()
    await asyncio.wait_for(reader.synced.wait(), WAIT)
    for n in range(10):
        await writer.insert(len(writer.text), f"<{n}>")
    await wait_acked(writer, 11)  # the sync step 2 answer plus ten edits
    await reader.wait_for(_has(reader, "<9>"), WAIT)
    acknowledged = str(writer.text)
    # The edit tally's row carries the client's address, not the proxy's.
    await eventually(
        lambda: _audit_has(topology, "edit", CLIENT_ADDRESS), WAIT, "an edit audit row"
    )
    victim.kill()
    await asyncio.wait_for(writer.closed.wait(), WAIT)
    # The client reconnects through the proxy with its document: it lands on the survivor.
    again = topology.socket("plan/intro", cookie, doc=writer.doc)
    await writer.close()
    await again.connect()
    await asyncio.wait_for(again.synced.wait(), WAIT)
    await again.insert(len(again.text), "<after>")
    fresh = topology.socket("plan/intro", cookie)
    await fresh.connect()
    await fresh.wait_for(_has(fresh, "<after>"), WAIT)
    assert str(fresh.text).startswith(acknowledged)
    assert await _connections(survivor) >= 2
    for client in (again, fresh, reader):
        await client.close()
    # The nodes log JSON (COLLAB_LOG_FORMAT=json): every log line parses, names its node,
    # and what a request logged names its request.
    records = [json.loads(line) for line in survivor.lines if line.startswith("{")]
    assert records, survivor.lines
    assert {record["node"] for record in records} == {survivor.env["COLLAB_NODE_NAME"]}
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)


async def _audit_has(topology: Topology, action: str, address: str) -> bool:
    return address in await _audited(topology, action)


async def test_a_rolling_restart_drains_then_moves_clients_with_nothing_lost(
    topology: Topology,
) -> None:
    cookie = await _signed_in(topology)
    clients = [topology.socket("rolling/s1", cookie) for _ in range(4)]
    for client in clients:
        await client.connect()
        await asyncio.wait_for(client.synced.wait(), WAIT)
    for index, client in enumerate(clients):
        await client.insert(len(client.text), f"[{index}]")
        await wait_acked(client, 2)
    restarting, staying = await _node_of(topology)
    assert restarting.process is not None
    on_restarting = int(await _connections(restarting))
    restarting.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # Readiness goes first: 503 (draining) while every socket is still open.
    async with httpx2.AsyncClient(timeout=WAIT) as http:

        async def draining() -> bool:
            response = await http.get(restarting.http_url + "/readyz")
            return response.status_code == 503 and response.json()["phase"] == "draining"

        await eventually(draining, 5.0, "readyz says draining")
    assert all(not client.closed.is_set() for client in clients)
    assert await _connections(restarting) == on_restarting
    # The draining node still serves its clients: edits made now are acknowledged and kept.
    for index, client in enumerate(clients):
        await client.insert(len(client.text), f"(d{index})")
        await wait_acked(client, 3)
    # Then the sockets close with 1012 (service restart).
    await eventually(
        lambda: _count_closed(clients, on_restarting), WAIT, "the restarting node's sockets"
    )
    closed = [client for client in clients if client.closed.is_set()]
    assert {client.close_code for client in closed} == {1012}
    assert time.monotonic() - signalled >= 1.4  # not before the drain delay
    # They reconnect through the proxy (to the other node) with their documents.
    moved = []
    for client in closed:
        again = topology.socket("rolling/s1", cookie, doc=client.doc)
        await client.close()
        await again.connect()
        await asyncio.wait_for(again.synced.wait(), WAIT)
        moved.append(again)
    code = await asyncio.to_thread(restarting.process.wait, 40)
    assert code == 0
    async with topology.socket("rolling/s1", cookie) as fresh:
        wanted = [f"[{i}]" for i in range(4)] + [f"(d{i})" for i in range(4)]
        await fresh.wait_for(lambda: all(w in str(fresh.text) for w in wanted), WAIT)
        # Every client is on the node that stayed (the restarted one is gone).
        assert await _connections(staying) == len(clients) + 1
    for client in [*moved, *(c for c in clients if not c.closed.is_set())]:
        await client.close()


async def _count_closed(clients: list[YClient], expected: int) -> bool:
    return sum(client.closed.is_set() for client in clients) >= expected
