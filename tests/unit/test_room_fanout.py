"""A room's fan-out, driven directly: what each connection's transport receives."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from crdt.document import RoomDoc
from crdt.ids import RoomName
from persistence.rooms.memory import MemoryRoomStore
from protocol import awareness as awareness_codec
from protocol.awareness import AwarenessEntry, AwarenessUpdate
from protocol.ysync import AwarenessMessage, Limits, decode, encode
from server.realtime.connection import Connection
from server.realtime.direct import FanoutWriter
from server.realtime.rooms import Room

_HEADER_BYTES = {**dict.fromkeys(range(126), 2), 126: 4, 127: 10}


class RecordingWriter:
    """Stands in for a transport: keeps every frame written to it."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, frame: bytes, max_buffered: int) -> bool:
        self.frames.append(frame)
        return True

    def close(self, code: int, reason: str) -> None:
        pass

    def messages(self) -> list[Any]:
        # Frames are RFC 6455 binary frames from a server (unmasked): 2 header bytes, then
        # 2 or 8 more for payloads of 126 bytes and up.
        return [decode(frame[_HEADER_BYTES[frame[1] & 0x7F] :]) for frame in self.frames]


def _connection(writer: RecordingWriter) -> Connection:
    return Connection("fan/out", max_buffered_bytes=1 << 20, fast=cast(FanoutWriter, writer))


def _awareness(client_id: int, clock: int, state: str) -> bytes:
    update = AwarenessUpdate((AwarenessEntry(client_id, clock, state),))
    return encode(AwarenessMessage(awareness_codec.encode(update)))


async def _next_turn() -> None:
    """Resolve once every callback already scheduled on the loop has run (FIFO order)."""
    done = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(done.set_result, None)
    await done


def _room() -> Room:
    return Room(
        RoomName("fan", "out"),
        RoomDoc(),
        MemoryRoomStore(),
        limits=Limits(),
        max_awareness_entries=64,
        on_failure=lambda room, exc: None,
        on_tainted=lambda room: None,
    )


async def test_cursor_moves_of_one_turn_leave_as_one_frame() -> None:
    room = _room()
    writers = [RecordingWriter() for _ in range(3)]
    conns = [_connection(writer) for writer in writers]
    for conn in conns:
        room.join(conn)
    for writer in writers:
        writer.frames.clear()
    room.receive(conns[0], _awareness(10, 1, '{"cursor":1}'))
    room.receive(conns[1], _awareness(11, 1, '{"cursor":2}'))
    room.receive(conns[0], _awareness(10, 2, '{"cursor":3}'))
    await _next_turn()
    [message] = writers[2].messages()
    assert isinstance(message, AwarenessMessage)
    entries = {e.client_id: e for e in awareness_codec.decode(message.payload).entries}
    # Without a principal the verified identity field is null (any client value replaced).
    assert entries[10].state == '{"cursor":3,"collab":null}'
    assert entries[11].state == '{"cursor":2,"collab":null}'


async def test_single_awareness_update_is_relayed_stamped_to_the_others() -> None:
    room = _room()
    writers = [RecordingWriter() for _ in range(2)]
    conns = [_connection(writer) for writer in writers]
    for conn in conns:
        room.join(conn)
    for writer in writers:
        writer.frames.clear()
    room.receive(conns[0], _awareness(10, 1, '{"cursor":1}'))
    await _next_turn()
    assert writers[0].frames == []
    assert [f[2:] for f in writers[1].frames] == [_awareness(10, 1, '{"cursor":1,"collab":null}')]


async def test_pending_awareness_goes_out_before_its_owners_removal() -> None:
    room = _room()
    writers = [RecordingWriter() for _ in range(2)]
    conns = [_connection(writer) for writer in writers]
    for conn in conns:
        room.join(conn)
    writers[1].frames.clear()
    room.receive(conns[0], _awareness(10, 1, '{"cursor":1}'))
    room.leave(conns[0])
    await _next_turn()
    states = [
        entry.state
        for message in writers[1].messages()
        for entry in awareness_codec.decode(message.payload).entries
    ]
    assert states == ['{"cursor":1,"collab":null}', "null"]
