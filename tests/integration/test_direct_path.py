"""The direct path over a real socket: which requests take it, what it answers, how it closes,
and a herd's first joins creating their document once."""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import pytest

from protocol.ysync import SyncStep1, SyncStep2, decode, encode
from server.hooks import Hooks, PermissionChange
from server.ops import counters
from server.realtime.hub import Hub
from tests.conftest import LiveServer, StartServer
from tests.unit.test_direct_frames import client_frame

TIMEOUT = 10.0
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def opening(path: str, *, version: str = "13", extra: str = "") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
        f"Sec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


class Raw:
    """A hand-driven client socket: bytes out, server frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def head(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload); servers never mask nor fragment here."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(size), TIMEOUT)

    async def until(self, opcode: int) -> bytes:
        while True:
            got, payload = await self.frame()
            if got == opcode:
                return payload

    async def sync_step_2(self) -> None:
        while True:
            _, payload = await self.frame()
            if payload and isinstance(decode(payload), SyncStep2):
                return


async def connect(server: LiveServer, *pieces: bytes) -> Raw:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
    return Raw(reader, writer)


async def test_an_opening_request_in_pieces_takes_the_direct_path(
    start_server: StartServer,
) -> None:
    server = await start_server()
    request = opening("/ws/pieces/s")
    raw = await connect(server, request[:3], request[3:40], request[40:])
    assert (await raw.head()).startswith(b"HTTP/1.1 101 ")
    raw.writer.write(client_frame(0x2, encode(SyncStep1(b"\x00"))))
    await raw.sync_step_2()
    assert [conn.direct for conn in server.collab.hub.connections] == [True]
    raw.writer.close()


async def test_a_fragmented_message_and_a_ping_are_handled(start_server: StartServer) -> None:
    server = await start_server()
    raw = await connect(server, opening("/ws/fragments/s"))
    await raw.head()
    step = encode(SyncStep1(b"\x00"))
    raw.writer.write(
        client_frame(0x2, step[:1], fin=False)
        + client_frame(0x9, b"are you there")
        + client_frame(0x0, step[1:])
    )
    assert await raw.until(0xA) == b"are you there"
    await raw.sync_step_2()
    raw.writer.close()


async def test_a_client_close_is_echoed_and_counted(start_server: StartServer) -> None:
    server = await start_server()
    raw = await connect(server, opening("/ws/closing/s"))
    await raw.head()
    before = counters.client_closes[4321]
    raw.writer.write(client_frame(0x8, (4321).to_bytes(2, "big") + b"bye"))
    assert await raw.until(0x8) == (4321).to_bytes(2, "big")
    assert await asyncio.wait_for(raw.reader.read(), TIMEOUT) == b""  # then the TCP close
    assert counters.client_closes[4321] == before + 1
    raw.writer.close()


async def test_an_unmasked_frame_fails_the_connection_with_1002(start_server: StartServer) -> None:
    server = await start_server()
    raw = await connect(server, opening("/ws/unmasked/s"))
    await raw.head()
    raw.writer.write(client_frame(0x2, encode(SyncStep1(b"\x00")), masked=False))
    payload = await raw.until(0x8)
    assert int.from_bytes(payload[:2], "big") == 1002
    assert b"masked" in payload
    assert await asyncio.wait_for(raw.reader.read(), TIMEOUT) == b""
    # The room was left: the server holds no connection.
    assert not server.collab.hub.connections
    raw.writer.close()


async def test_an_invalid_handshake_gets_uvicorns_answer(start_server: StartServer) -> None:
    """Not a plain opening request (version 8): the direct path leaves it to uvicorn's route,
    whose WebSocket library refuses it (400) naming the version."""
    server = await start_server()
    raw = await connect(server, opening("/ws/old/s", version="8"))
    head = await raw.head()
    assert head.startswith(b"HTTP/1.1 400 ")
    body = await asyncio.wait_for(raw.reader.read(), TIMEOUT)
    assert b"Sec-WebSocket-Version" in body
    raw.writer.close()


async def test_an_unusual_but_valid_head_still_reaches_the_room(start_server: StartServer) -> None:
    """Bare LF line ends: h11 reads it and the ASGI route serves the room."""
    server = await start_server()
    raw = await connect(server, opening("/ws/lf/s").replace(b"\r\n", b"\n"))
    assert (await raw.head()).startswith(b"HTTP/1.1 101 ")
    raw.writer.write(client_frame(0x2, encode(SyncStep1(b"\x00"))))
    await raw.sync_step_2()
    assert [conn.direct for conn in server.collab.hub.connections] == [False]
    raw.writer.close()


async def test_a_refused_upgrade_is_problem_json(start_server: StartServer) -> None:
    server = await start_server(insecure_dev=False)
    raw = await connect(server, opening("/ws/secret/s"))
    head = await raw.head()
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b"application/problem+json" in head
    raw.writer.close()


async def test_a_herd_on_a_new_document_creates_it_once(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thirty first joins at once share one creation (each used to render and insert a
    record of its own, all but one then conflicting)."""
    created: list[PermissionChange] = []

    def install(hooks: Hooks, hub: Hub) -> object:
        return hooks.on_permission_change.subscribe(
            lambda change: created.append(change) if change.created else None
        )

    server = await start_server(extensions=[install])
    workflow = server.collab.workflow
    creations: list[str] = []
    create = workflow.create

    async def counted(document_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        creations.append(document_id)
        return await create(document_id, *args, **kwargs)

    monkeypatch.setattr(workflow, "create", counted)

    async def join(section: int) -> Raw:
        raw = await connect(server, opening(f"/ws/herd-{os.getpid()}/s{section % 5}"))
        await raw.head()
        raw.writer.write(client_frame(0x2, encode(SyncStep1(b"\x00"))))
        await raw.sync_step_2()
        return raw

    joined = await asyncio.gather(*(join(n) for n in range(30)))
    assert creations == [f"herd-{os.getpid()}"]
    assert len(created) == 1
    assert created[0].document_id == f"herd-{os.getpid()}"
    for raw in joined:
        raw.writer.close()
