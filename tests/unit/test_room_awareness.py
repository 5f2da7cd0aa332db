"""A room's awareness ownership, driven directly: echoes, takeovers and handovers."""

from __future__ import annotations

import gc
import json
import weakref
from typing import cast

from protocol import awareness as awareness_codec
from protocol.events import decode_event
from protocol.ysync import AppEventMessage, AwarenessMessage
from server.identity.authentication import Principal
from server.realtime.connection import Connection
from server.realtime.direct import FanoutWriter
from server.realtime.rooms import Room
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


async def test_an_echo_arriving_after_a_removal_does_not_bring_the_state_back() -> None:
    """One user, three tabs (as in insecure-dev, where everyone is the same user): A leaves
    while B's echo of A's last state is still on its way; the removal wins, as in
    y-protocols, whether the echo lands in the same turn or later."""
    room = _room()
    someone = _user("alice")
    a, _ = _join(room, someone)
    b, _ = _join(room, someone)
    _, watcher_out = _join(room, _user("carol"))
    room.receive(b, _awareness(20, 1, '{"user":{"name":"B"}}'))
    room.receive(a, _awareness(10, 3, '{"cursor":7}'))
    await _next_turn()
    room.receive(a, _awareness(10, 3, "null"))  # A's provider says goodbye at its clock
    room.receive(b, _awareness(10, 3, '{"cursor":7}'))  # B's echo, same turn
    room.leave(a)
    await _next_turn()
    room.receive(b, _awareness(10, 3, '{"cursor":7}'))  # another echo, a turn later
    await _next_turn()
    assert 10 not in _states(watcher_out) or _states(watcher_out)[10] == "null"
    late, late_out = _join(room, _user("dave"))
    assert 10 not in _states(late_out)
    room.leave(late)


async def test_a_client_reconnecting_with_its_id_and_clock_is_shown_again() -> None:
    room = _room()
    alice = _user("alice")
    first, _ = _join(room, alice)
    room.receive(first, _awareness(10, 3, '{"cursor":7}'))
    room.leave(first)
    await _next_turn()
    _, watcher_out = _join(room, _user("carol"))
    again, _ = _join(room, alice)
    room.receive(again, _awareness(10, 3, '{"cursor":7}'))  # y-websocket resends, same clock
    await _next_turn()
    assert json.loads(_states(watcher_out)[10])["cursor"] == 7


async def test_a_dropped_room_is_freed_without_the_cycle_collector() -> None:
    """The room's awareness holds no reference back to the room: once dropped, the room
    (and its document) is freed at once, not at the next collection."""
    room = _room()
    alice, _ = _join(room, _user("alice"))
    _join(room, _user("bob"))
    room.receive(alice, _awareness(10, 1, '{"cursor":1}'))
    await _next_turn()
    assert room.frames_broadcast == 1  # the awareness relay counts as a broadcast
    room.leave(alice)
    assert room.frames_broadcast == 2  # and so does the removal
    dropped = weakref.ref(room)
    gc.disable()
    try:
        del room
        assert dropped() is None
    finally:
        gc.enable()
