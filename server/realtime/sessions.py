"""Admission and sessions: what happens to a WebSocket from its upgrade to its close.

Both ways a socket can arrive share this module: the direct path of our own WebSocket
protocol (:mod:`server.realtime.direct`, no ASGI task per connection) and the plain ASGI
endpoint (other ASGI servers, Starlette's TestClient). Admission decides before the upgrade
(a bad room name gets HTTP 400); a session then feeds each frame to the room, synchronously.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

from crdt.ids import InvalidRoomName, RoomName, parse_room_name
from persistence.errors import StorageError
from server.errors import AuthError, CollabError, RateLimited, UnsupportedData, classify
from server.identity.authentication import Authenticator, origin_allowed
from server.identity.tokens import Identity
from server.ops.context import REQUEST_ID_HEADER, accept_request_id
from server.ops.counters import traffic as _traffic
from server.realtime.connection import Connection
from server.realtime.limits import MessageLimiter
from server.realtime.registry import RoomRegistry
from server.realtime.rooms import Room
from server.realtime.shedding import JoinGate

log = logging.getLogger(__name__)

WS_PREFIX = "/ws/"


@dataclass(frozen=True, slots=True)
class Refusal:
    """An upgrade refused before it happens: the HTTP status and a problem title/detail."""

    status: int
    title: str
    detail: str = ""
    retry_after: float | None = None

    def body(self) -> dict[str, object]:
        """The RFC 9457 problem document (with ``retryAfter`` when waiting helps)."""
        body: dict[str, object] = {"type": "about:blank", "title": self.title}
        body["status"] = self.status
        if self.detail:
            body["detail"] = self.detail
        if self.retry_after is not None:
            body["retryAfter"] = round(self.retry_after, 1)
        return body

    def headers(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds, rounded up) when waiting helps."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


@dataclass(frozen=True, slots=True)
class Admission:
    """An upgrade accepted: the room to join, the connection's options, and who asks (the
    verified token; None in insecure-dev mode without one)."""

    room: RoomName
    app_events: bool
    identity: Identity | None = None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None  # the upgrade's X-Request-ID (or a new one)


def admit(
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    *,
    accepting: bool,
    authn: Authenticator,
    allowed_origins: Sequence[str],
    client: str | None = None,
    gate: JoinGate | None = None,
) -> Admission | Refusal:
    """Decide on an upgrade to ``path`` (already percent-decoded) before accepting it, with
    no I/O: the room name, the Origin, the token's signature, expiry and scope. The user
    and their rights are checked once the socket is open (:meth:`Collab.open_session`).
    ``headers`` are keyed in lower case.

    With a ``gate``, an upgrade that passes every check is counted in it (the caller must
    ``gate.leave()`` once the join ends), or refused with 503 and a jittered Retry-After
    when too many joins are in flight already."""
    if not path.startswith(WS_PREFIX):
        return Refusal(404, "not found")
    try:
        room = parse_room_name(path[len(WS_PREFIX) :])
    except InvalidRoomName as exc:
        return Refusal(400, "invalid room name", str(exc))
    if not accepting:
        return Refusal(503, "server restarting")
    origin = headers.get("origin")
    if not origin_allowed(origin, headers.get("host"), allowed_origins):
        log.warning("refusing upgrade to %s: Origin %r is not allowed", path, origin)
        return Refusal(403, "origin not allowed", f"Origin {origin!r} may not open sockets here")
    try:
        identity = authn.identify(headers, query_string)
    except AuthError as exc:
        log.info("refusing upgrade to %s from %s: %s", path, client, exc)
        return Refusal(401, "unauthenticated", str(exc))
    if identity is not None and not identity.may_open(room.document_id):
        return Refusal(403, "forbidden", "the token is scoped to other documents")
    query = parse_qs(query_string)
    events = query.get("events", [""])[-1] in {"1", "true", "yes"}
    if gate is not None and (wait := gate.enter()) is not None:
        log.info(
            "shedding the upgrade to %s from %s: %d joins in flight", path, client, gate.in_flight
        )
        return Refusal(
            503,
            "overloaded",
            "too many connections are opening at once; retry after the Retry-After seconds "
            "(with jitter, see docs/protocol.md)",
            retry_after=wait,
        )
    request_id = accept_request_id(headers.get(REQUEST_ID_HEADER))
    return Admission(room, events, identity, client, headers.get("user-agent"), request_id)


class Session:
    """A connection joined to its room.

    Made in the task that opened the socket, it keeps that task's log context (connection,
    user, document, room, the upgrade's request id: :mod:`server.ops.context`) and handles
    each frame in it: on the direct path frames arrive in the transport's callbacks, which
    run in no task of the socket's. One ``Context.run`` per frame received, nothing per
    frame sent."""

    __slots__ = ("_context", "conn", "limiter", "registry", "room", "user_id")

    def __init__(
        self,
        registry: RoomRegistry,
        room: Room,
        conn: Connection,
        limiter: MessageLimiter | None = None,
    ) -> None:
        self.registry = registry
        self.room = room
        self.conn = conn
        self.limiter = limiter
        self.user_id = conn.principal.user_id if conn.principal is not None else ""
        self._context = contextvars.copy_context()

    @classmethod
    async def open(
        cls,
        registry: RoomRegistry,
        name: RoomName,
        conn: Connection,
        limiter: MessageLimiter | None = None,
    ) -> Session | None:
        """Join the room; on failure the connection is closed with the error's code."""
        try:
            room = await registry.join(name, conn)
        except (CollabError, StorageError) as exc:
            conn.fail(exc)
            return None
        log.debug("conn %s joined room %s", conn.id, room.key)
        return cls(registry, room, conn, limiter)

    def on_frame(self, data: bytes | None) -> None:
        """Handle one complete message (``None`` for a text message), in the socket's log
        context. Never raises: bad input closes this connection with the code the error
        table gives."""
        _traffic.frames_in += 1
        if data is not None:
            _traffic.bytes_in += len(data)
        self._context.run(self._handle, data)

    def _handle(self, data: bytes | None) -> None:
        conn = self.conn
        if conn.closing:
            return
        try:
            if self.limiter is not None:
                wait = self.limiter.hit(self.user_id)
                if wait:
                    raise RateLimited(f"too many messages; retry in {wait:.0f} s", wait)
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
        """The socket is gone (the peer closed it, or it broke): leave the room and run the
        connection's close chain, as a close by the server does. Idempotent."""
        self.registry.leave(self.room, self.conn)
        # A no-op on the wire (the socket is already gone), and not counted as our close.
        self.conn.close(1000, "", gone=True)
