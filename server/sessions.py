"""Admission and sessions: what happens to a WebSocket from its upgrade to its close.

Both ways a socket can arrive share this module: the direct path of our uvicorn protocol
(:mod:`server.transport`, no ASGI task per connection) and the plain ASGI endpoint (other
ASGI servers, Starlette's TestClient). Admission decides before the upgrade (a bad room
name gets HTTP 400); a session then feeds each frame to the room, synchronously.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import parse_qs

from crdt.ids import InvalidRoomName, RoomName, parse_room_name
from persistence.errors import StorageError
from server.connection import Connection
from server.errors import CollabError, UnsupportedData, classify
from server.registry import RoomRegistry
from server.rooms import Room

log = logging.getLogger(__name__)

WS_PREFIX = "/ws/"


@dataclass(frozen=True, slots=True)
class Refusal:
    """An upgrade refused before it happens: the HTTP status and a problem title/detail."""

    status: int
    title: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Admission:
    """An upgrade accepted: the room to join and the connection's options."""

    room: RoomName
    app_events: bool


def admit(path: str, query_string: str, *, accepting: bool) -> Admission | Refusal:
    """Decide on an upgrade to ``path`` (already percent-decoded) before accepting it."""
    if not path.startswith(WS_PREFIX):
        return Refusal(404, "not found")
    try:
        room = parse_room_name(path[len(WS_PREFIX) :])
    except InvalidRoomName as exc:
        return Refusal(400, "invalid room name", str(exc))
    if not accepting:
        return Refusal(503, "server restarting")
    query = parse_qs(query_string)
    events = query.get("events", [""])[-1] in {"1", "true", "yes"}
    return Admission(room, events)


class Session:
    """A connection joined to its room."""

    __slots__ = ("conn", "registry", "room")

    def __init__(self, registry: RoomRegistry, room: Room, conn: Connection) -> None:
        self.registry = registry
        self.room = room
        self.conn = conn

    @classmethod
    async def open(cls, registry: RoomRegistry, name: RoomName, conn: Connection) -> Session | None:
        """Join the room; on failure the connection is closed with the error's code."""
        try:
            room = await registry.join(name, conn)
        except (CollabError, StorageError) as exc:
            conn.fail(exc)
            return None
        log.debug("conn %s joined room %s", conn.id, room.key)
        return cls(registry, room, conn)

    def on_frame(self, data: bytes | None) -> None:
        """Handle one complete message (``None`` for a text message). Never raises: bad input
        closes this connection with the code the error table gives."""
        conn = self.conn
        if conn.closing:
            return
        try:
            if data is None:
                raise UnsupportedData("text frames are not part of the y-websocket protocol")
            self.room.receive(conn, data)
        except Exception as exc:
            if classify(exc).http_status == 500:
                log.exception("conn %s room %s: unexpected error", conn.id, self.room.key)
            conn.fail(exc)
            return
        self.registry.maybe_compact(self.room)

    def on_close(self) -> None:
        """The socket is gone: leave the room (idempotent)."""
        self.registry.leave(self.room, self.conn)
