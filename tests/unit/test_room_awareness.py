"""A room's awareness ownership, driven directly: echoes, takeovers and handovers."""

from __future__ import annotations

import json
from typing import cast

from protocol import awareness as awareness_codec
from protocol.events import decode_event
from protocol.ysync import AppEventMessage, AwarenessMessage
from server.identity.authentication import Principal
from server.realtime.connection import Connection
from server.realtime.rooms import Room
from server.realtime.transport import FanoutWriter
from tests.unit.test_room_fanout import RecordingWriter, _awareness, _next_turn, _room


def _user(name: str) -> Principal:
    return Principal(f"id-{name}", f"{name}@example.com", name.title(), "analyst", "s")


def _join(room: Room, principal: Principal) -> tuple[Connection, RecordingWriter]:
    writer = RecordingWriter()
    conn = Connection(
        "fan/out",
        max_buffered_bytes=1 << 20,
        fast=cast(FanoutWriter, writer),
        app_events=True,
        principal=principal,
    )
    room.join(conn)
    writer.frames.clear()
    return conn, writer


def _states(writer: RecordingWriter) -> dict[int, str]:
    states: dict[int, str] = {}
    for message in writer.messages():
        if isinstance(message, AwarenessMessage):
            for entry in awareness_codec.decode(message.payload).entries:
                states[entry.client_id] = entry.state
    return states


def _errors(writer: RecordingWriter) -> list[str]:
    events = [decode_event(m.payload) for m in writer.messages() if isinstance(m, AppEventMessage)]
    return [str(event.get("detail")) for event in events if event.type == "error"]


async def test_echoes_of_another_users_state_are_dropped_silently() -> None:
    room = _room()
    alice, _ = _join(room, _user("alice"))
    bob, bob_out = _join(room, _user("bob"))
    _, watcher_out = _join(room, _user("carol"))
    room.receive(alice, _awareness(10, 3, '{"cursor":1}'))
    await _next_turn()
    echo = _states(bob_out)[10]
    watcher_out.frames.clear()
    room.receive(bob, _awareness(10, 3, echo))  # y-websocket sends back what it received
    room.receive(bob, _awareness(10, 2, '{"cursor":0}'))  # an older one
    await _next_turn()
    assert _errors(bob_out) == []
    assert watcher_out.frames == []


async def test_a_newer_state_for_another_users_id_is_refused_with_an_error() -> None:
    room = _room()
    alice, _ = _join(room, _user("alice"))
    bob, bob_out = _join(room, _user("bob"))
    _, watcher_out = _join(room, _user("carol"))
    room.receive(alice, _awareness(10, 1, '{"cursor":1}'))
    room.leave(alice)
    await _next_turn()
    watcher_out.frames.clear()
    room.receive(bob, _awareness(10, 5, '{"cursor":9}'))
    room.receive(bob, _awareness(10, 6, "null"))  # a removal: silent
    await _next_turn()
    assert _errors(bob_out) == ["awareness client id 10 belongs to another user"]
    assert watcher_out.frames == []


async def test_the_same_users_new_connection_takes_the_id_over() -> None:
    room = _room()
    alice = _user("alice")
    old, _ = _join(room, alice)
    _, watcher_out = _join(room, _user("carol"))
    room.receive(old, _awareness(10, 4, '{"cursor":1}'))
    new, new_out = _join(room, alice)
    room.receive(new, _awareness(10, 4, '{"cursor":1}'))  # not newer: an echo
    room.receive(new, _awareness(10, 5, '{"cursor":2}'))
    await _next_turn()
    room.leave(old)  # the old connection no longer owns it: no removal
    await _next_turn()
    state = json.loads(_states(watcher_out)[10])
    assert state["cursor"] == 2
    assert state["collab"] == {"userId": "id-alice", "name": "Alice"}
    assert _errors(new_out) == []
