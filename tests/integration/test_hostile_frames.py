"""Frame bombs against a real server process: a few bytes that claim hundreds of millions of
elements are closed with 1007 at once, for a viewer as for an editor, and the server keeps
answering ``/healthz`` meanwhile (before the fix, ten such frames froze it for 14.5 s)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from loadtests.client import YClient
from loadtests.harness import ServerProcess
from protocol.varint import encode_varbytes, encode_varuint

# The frames of the issue: sync step 1 whose state vector claims 900 million entries, and
# sync updates whose header (or delete set) claims 400 million clients or ranges.
STATE_VECTOR_BOMB = bytes.fromhex("00000780d293ad030101")
UPDATE_HEADER_BOMB = b"\x00\x02" + encode_varbytes(encode_varuint(400_000_000) + b"\x01\x01\x01")
DELETE_SET_BOMB = b"\x00\x02" + encode_varbytes(
    b"\x00\x01\x07" + encode_varuint(400_000_000) + b"\x01\x01"
)
ROOM = "hostile/s"
PER_KIND = 10
# Generous: the server answers in milliseconds; before the fix it was frozen for seconds.
HEALTH_TIMEOUT = 3.0
CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Hostile:
    server: ServerProcess
    tokens: dict[str, str]


def _collab(data_dir: Path, *args: str) -> str:
    command = [sys.executable, "-m", "server", *args, "--data-dir", str(data_dir)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """A secure server with an editor who owns ``hostile`` and a viewer granted to see it."""
    data_dir = tmp_path_factory.mktemp("hostile")
    tokens: dict[str, str] = {}
    ids: dict[str, str] = {}
    for who, role in (("editor", "analyst"), ("viewer", "viewer")):
        email = f"{who}@example.com"
        ids[who] = _collab(data_dir, "user", "add", "--email", email, "--name", who, "--role", role)
        ids[who] = ids[who].split("\t")[0]
        tokens[who] = _collab(data_dir, "token", "issue", "--user", email, "--ttl", "1h")
    with ServerProcess(data_dir, env={"COLLAB_INSECURE_DEV": "false"}) as server:
        body = {
            "documentId": "hostile",
            "title": "Hostile",
            "sections": [{"id": "s", "title": "S", "content": "hello"}],
            "permissions": {"view": [ids["viewer"]]},
        }
        headers = {"Authorization": f"Bearer {tokens['editor']}"}
        created = httpx2.post(f"{server.http_url}/api/documents", json=body, headers=headers)
        assert created.status_code == 201, created.text
        yield Hostile(server, tokens)


async def _probe_health(url: str, done: asyncio.Event) -> list[float]:
    """Ask /healthz back to back until ``done``; every answer must come within the bound."""
    latencies: list[float] = []
    async with httpx2.AsyncClient(timeout=HEALTH_TIMEOUT) as http:
        while not done.is_set():
            started = time.perf_counter()
            response = await http.get(f"{url}/healthz")
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
    return latencies


async def _bomb(hostile: Hostile, who: str, frames: list[bytes]) -> list[float]:
    clients = [
        YClient(hostile.server.ws_url, ROOM, token=hostile.tokens[who]) for _ in range(len(frames))
    ]
    for client in clients:
        await client.connect()
    await asyncio.gather(*(client.synced.wait() for client in clients))
    done = asyncio.Event()
    probe = asyncio.create_task(_probe_health(hostile.server.http_url, done))
    try:
        await asyncio.gather(
            *(client.send_raw(frame) for client, frame in zip(clients, frames, strict=True))
        )
        codes = await asyncio.gather(*(c.wait_closed(CLOSE_TIMEOUT) for c in clients))
    finally:
        done.set()
        latencies = await probe
    assert codes == [1007] * len(frames)
    assert all("invalid CRDT update" in client.close_reason for client in clients)
    return latencies


async def test_editor_bombs_are_closed_with_1007_while_healthz_answers(hostile: Hostile) -> None:
    frames = [STATE_VECTOR_BOMB, UPDATE_HEADER_BOMB, DELETE_SET_BOMB] * PER_KIND
    latencies = await _bomb(hostile, "editor", frames)
    assert latencies, "the probe asked /healthz at least once"


async def test_viewer_state_vector_bombs_are_closed_with_1007(hostile: Hostile) -> None:
    latencies = await _bomb(hostile, "viewer", [STATE_VECTOR_BOMB] * PER_KIND)
    assert latencies


async def test_viewer_update_bombs_are_dropped_unread(hostile: Hostile) -> None:
    """A viewer's updates never reach the CRDT core: the bomb is refused as any update of a
    read-only connection is, and the connection stays usable."""
    async with YClient(hostile.server.ws_url, ROOM, token=hostile.tokens["viewer"]) as viewer:
        await viewer.synced.wait()
        await viewer.send_raw(UPDATE_HEADER_BOMB)
        await viewer.wait_for(lambda: bool(viewer.denied))
        assert not viewer.closed.is_set()
        async with httpx2.AsyncClient(timeout=HEALTH_TIMEOUT) as http:
            assert (await http.get(f"{hostile.server.http_url}/healthz")).status_code == 200
        await viewer.send_raw(STATE_VECTOR_BOMB)
        assert await viewer.wait_closed(CLOSE_TIMEOUT) == 1007
