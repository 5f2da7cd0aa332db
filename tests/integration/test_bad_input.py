"""Every kind of bad input closes only the offending connection, with a clear code and a log
line; the room, the other clients and the stored document are untouched."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx2
import pycrdt
import pytest
import websockets

from loadtests.client import YClient
from protocol.varint import encode_varbytes
from tests.conftest import StartServer

# An update that decodes but fails half-way through integration (found by fuzzing pycrdt):
# yrs raises RuntimeError after having integrated some of its structs.
HALF_APPLIED_UPDATE = bytes.fromhex(
    "01079b91ec91bcd6f00200040107636f6e74656e74026865819b91ec91bcd6f0020102849b91ec91bcd6f002"
    "03076f20776f723d642801016d0161017c3f8000000701036172720128009b91ec91bcd6f002010178017c3f"
    "800000889b91ec91bcd6f0020c01770173019b91ec91bcd6f002010202"
)

BAD_FRAMES: dict[str, tuple[bytes | str, int]] = {
    "garbage": (b"\xff\xfe\xfd\xfc", 1002),
    "truncated varint": (b"\x00\x02\x85", 1002),
    "unknown message type": (b"\x07\x00", 1002),
    "unknown sync type": (b"\x00\x09\x00", 1002),
    "trailing bytes": (b"\x03\x00", 1002),
    "malformed awareness": (b"\x01" + encode_varbytes(b"\x05\x01"), 1002),
    "invalid update": (b"\x00\x02" + encode_varbytes(b"\x01\x02garbage"), 1007),
    "half-applied update": (b"\x00\x02" + encode_varbytes(HALF_APPLIED_UPDATE), 1007),
    "invalid state vector": (b"\x00\x00" + encode_varbytes(b"\xff\xff"), 1007),
    "text frame": ("hello", 1003),
}


@pytest.mark.parametrize("kind", sorted(BAD_FRAMES))
async def test_bad_frame_closes_only_the_sender(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    frame, expected_code = BAD_FRAMES[kind]
    server = await start_server()
    room = "bad/input"
    async with YClient(server.ws_url, room) as good, YClient(server.ws_url, room) as bad:
        await good.insert(0, "before")
        await bad.wait_for(lambda: str(bad.text) == "before")
        with caplog.at_level(logging.WARNING, logger="server"):
            await bad.send_raw(frame)
            assert await bad.wait_closed() == expected_code
        assert bad.close_reason, "the close frame must say what was wrong"
        assert any(f"closing {expected_code}" in r.getMessage() for r in caplog.records)
        # The room still works for everyone else, and its document is unchanged.
        await good.insert(len(good.text), " after")
        async with YClient(server.ws_url, room) as fresh:
            await fresh.wait_for(lambda: str(fresh.text) == "before after")
        assert str(good.text) == "before after"
    stored = await server.collab.store.load(room)
    replica: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    for update in stored.updates():
        replica.apply_update(update)
    assert str(replica.get("content", type=pycrdt.Text)) == "before after"


async def test_oversized_frame_is_refused_with_1009(start_server: StartServer) -> None:
    server = await start_server(max_message_bytes=64 * 1024)
    async with YClient(server.ws_url, "bad/big") as good, YClient(server.ws_url, "bad/big") as bad:
        await bad.send_raw(b"\x00\x02" + encode_varbytes(b"x" * 100_000))
        assert await bad.wait_closed() == 1009
        await good.insert(0, "still fine")
        async with YClient(server.ws_url, "bad/big") as fresh:
            await fresh.wait_for(lambda: str(fresh.text) == "still fine")


@pytest.mark.parametrize("room", ["", "a/b/c", "bad name", "x" * 65, "doc/", "/sec", "d%00s"])
async def test_invalid_room_name_is_refused_before_upgrade(
    start_server: StartServer, room: str
) -> None:
    server = await start_server()
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{server.ws_url}/{room}"):
            pass
    assert refused.value.response.status_code in {400, 403, 404}


async def test_invalid_room_name_gets_problem_json(start_server: StartServer) -> None:
    server = await start_server()
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    async with httpx2.AsyncClient() as http:
        response = await http.get(f"{server.http_url}/ws/bad%20name", headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["title"] == "invalid room name"


async def test_slow_client_is_disconnected_and_room_keeps_going(
    start_server: StartServer,
) -> None:
    # Up to 8 MB go into the room: lift the size caps, this is about a slow reader.
    server = await start_server(
        max_buffered_bytes=64 * 1024, max_section_bytes=1 << 26, max_document_bytes=1 << 26
    )
    room = "bad/slow"
    # max_queue=1 and never reading: the kernel buffers fill, then the server's buffer.
    slow = await websockets.connect(f"{server.ws_url}/{room}", max_queue=1, max_size=None)
    try:
        async with YClient(server.ws_url, room) as writer, YClient(server.ws_url, room) as peer:
            chunk = "x" * 20_000
            for _ in range(400):
                await writer.insert(0, chunk)
                await peer.wait_for(lambda: len(peer.text) == len(writer.text))
                if server.collab.registry.stats()["connections"] == 2:
                    break
            assert server.collab.registry.stats()["connections"] == 2, "slow client still there"
            await writer.insert(0, "!")
            await peer.wait_for(lambda: str(peer.text).startswith("!"))
        assert await _close_code_after_draining(slow) == 1013
    finally:
        await slow.close()


async def _close_code_after_draining(ws: websockets.ClientConnection) -> int | None:
    """Read (and drop) every frame until the server's close; return its code."""
    try:
        while True:
            await ws.recv()
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_compression_is_not_negotiated(start_server: StartServer) -> None:
    """permessage-deflate stays off, so no compression bomb can get past the size limit."""
    server = await start_server()
    async with websockets.connect(f"{server.ws_url}/bad/deflate", compression="deflate") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


async def test_unreadable_stored_room_refuses_to_open_and_is_not_overwritten(
    start_server: StartServer, tmp_path: Path
) -> None:
    data_dir = tmp_path / "corrupt"
    server = await start_server(data_dir=data_dir)
    await server.collab.store.compact("doc/sec", b"\x01\x02 not a CRDT state")
    client = await YClient(server.ws_url, "doc/sec").connect()
    assert await client.wait_closed() == 1011
    assert "room unavailable" in client.close_reason
    stored = await server.collab.store.load("doc/sec")
    assert stored.snapshot == b"\x01\x02 not a CRDT state"
    assert stored.journal == ()
