"""Request heads that never finish, or are too large, do not hold sockets: a real server,
raw TCP connections."""

from __future__ import annotations

import asyncio
import base64
import os

import httpx2
import pytest

from server.realtime.http_head import MAX_REQUEST_LINE_BYTES
from tests.conftest import LiveServer, StartServer

HEAD_TIMEOUT = 0.5


def _upgrade_head(path: str, *, extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


async def _open(server: LiveServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _read_all(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (TimeoutError if it
    keeps it open past ``timeout``)."""
    async with asyncio.timeout(timeout):
        return await reader.read()


@pytest.fixture
async def server(start_server: StartServer) -> LiveServer:
    return await start_server(header_timeout_seconds=HEAD_TIMEOUT)


@pytest.mark.parametrize("sent", [b"", b"GET /ws/room HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr"])
async def test_an_unfinished_head_is_closed_after_the_timeout(
    server: LiveServer, sent: bytes
) -> None:
    connections = []
    for _ in range(20):
        reader, writer = await _open(server)
        writer.write(sent)
        await writer.drain()
        connections.append((reader, writer))
    started = asyncio.get_running_loop().time()
    for reader, writer in connections:
        answer = await _read_all(reader, timeout=HEAD_TIMEOUT * 10)
        assert answer.startswith(b"HTTP/1.1 408 ") if sent else answer == b""
        writer.close()
    # Closed by the deadline, not earlier (well within 10x of it either way).
    assert asyncio.get_running_loop().time() - started >= HEAD_TIMEOUT * 0.5


async def test_a_head_sent_slowly_past_the_deadline_is_closed(server: LiveServer) -> None:
    reader, writer = await _open(server)
    head = _upgrade_head("/ws/slow/loris")
    closed = False
    for index in range(len(head) - 1):  # one byte at a time, never the last one
        writer.write(head[index : index + 1])
        try:
            answer = await asyncio.wait_for(reader.read(), HEAD_TIMEOUT / 5)
        except TimeoutError:
            continue
        assert answer.startswith(b"HTTP/1.1 408 ")
        closed = True
        break
    writer.close()
    assert closed, "trickling bytes must not extend the deadline"


async def test_a_long_request_line_gets_414(server: LiveServer) -> None:
    reader, writer = await _open(server)
    writer.write(b"GET /ws/" + b"a" * (MAX_REQUEST_LINE_BYTES + 100))  # never ends
    answer = await _read_all(reader, timeout=HEAD_TIMEOUT / 2 * 10)
    assert answer.startswith(b"HTTP/1.1 414 ")
    assert b'"status": 414' in answer
    writer.close()


async def test_huge_headers_get_431(server: LiveServer) -> None:
    reader, writer = await _open(server)
    filler = "".join(f"X-Filler-{n}: {'v' * 1000}\r\n" for n in range(40))  # ~40 KB
    writer.write(_upgrade_head("/ws/big/head", extra=filler))
    answer = await _read_all(reader, timeout=HEAD_TIMEOUT * 10)
    assert answer.startswith(b"HTTP/1.1 431 ")
    writer.close()


async def test_headers_under_the_cap_in_time_still_work(server: LiveServer) -> None:
    reader, writer = await _open(server)
    filler = "".join(f"X-Filler-{n}: {'v' * 1000}\r\n" for n in range(6))  # 6 KB, allowed
    writer.write(_upgrade_head("/ws/normal/room", extra=filler))
    async with asyncio.timeout(HEAD_TIMEOUT * 10):
        status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 101 ")
    await reader.readuntil(b"\r\n\r\n")
    # An upgraded socket is no longer under the head deadline: frames come (the room's
    # sync step 1), no close.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_read_all(reader, timeout=60), HEAD_TIMEOUT * 3)
    assert not reader.at_eof()
    writer.close()
    async with httpx2.AsyncClient() as http:
        assert (await http.get(f"{server.http_url}/healthz")).status_code == 200


async def test_a_kept_alive_connection_gets_a_deadline_per_request(server: LiveServer) -> None:
    reader, writer = await _open(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    async with asyncio.timeout(HEAD_TIMEOUT * 10):
        status = await reader.readline()
    assert status.startswith(b"HTTP/1.1 200 ")
    writer.write(b"GET /healthz HTTP/1.1\r\nHo")  # the next head never finishes
    answer = await _read_all(reader, timeout=HEAD_TIMEOUT * 10)
    assert b"HTTP/1.1 408 " in answer
    writer.close()
