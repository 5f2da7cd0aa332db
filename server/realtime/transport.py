"""The WebSocket transport: uvicorn's sans-I/O websockets protocol, with a direct path.

ASGI costs, per connection, a task, a receive queue and a stack of middleware frames, and per
frame a queue hand-off and a task switch; per recipient of a broadcast, an awaited ``send``.
For the collaboration sockets this protocol skips all of it: when the app registers a
:class:`DirectHandler` in its lifespan state under :data:`DIRECT_HANDLER`, upgrades to the
paths it handles are answered here, every complete message is handed to the handler's session
synchronously, and broadcasts are written with :class:`FanoutWriter`: a frame encoded once
(:func:`binary_frame`) goes straight to every recipient's transport, with no task and no await
per recipient. Other paths (and every path when no handler is registered) take the ordinary
ASGI route, so the protocol stays a drop-in uvicorn ``ws`` implementation.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any, Final, Protocol
from urllib.parse import unquote

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Request, Response

from server.ops import counters

DIRECT_HANDLER: Final = "collab.direct_websocket"
# Messages a client may send while its room is still loading.
MAX_PENDING_FRAMES: Final = 256

log = logging.getLogger(__name__)


def binary_frame(payload: bytes) -> bytes:
    """Encode one unmasked, unfragmented binary frame (RFC 6455 section 5.2).

    Servers never mask (section 5.1), so the bytes are the same for every recipient.
    """
    size = len(payload)
    first = 0x80 | Opcode.BINARY  # FIN + opcode
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


class FanoutWriter:
    """Synchronous writes of pre-encoded frames to one connection's transport."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: FanoutProtocol) -> None:
        self._protocol = protocol

    def write(self, frame: bytes, max_buffered: int) -> bool:
        """Write an encoded frame, unless the client is more than ``max_buffered`` bytes
        behind: then nothing is written and False returned. A closing connection drops it.

        The buffer is measured only once the transport has asked us to pause (its high-water
        mark is passed): on the hot path that is one attribute read, not a call.
        """
        protocol = self._protocol
        if protocol.close_sent or protocol.disconnected:
            return True
        transport = protocol.transport
        if protocol.paused and transport.get_write_buffer_size() > max_buffered:
            return False
        if not transport.is_closing():
            transport.write(frame)
        return True

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake now, without waiting for the buffer to drain."""
        self._protocol.close_now(code, reason)


class DirectSession(Protocol):
    """What the direct path feeds: one complete message at a time, then the close."""

    def on_frame(self, data: bytes | None) -> None:
        """A complete binary message, or None for a text message. Must not raise."""

    def on_close(self) -> None:
        """The socket is gone (closed by either side, or lost)."""


class DirectHandler(Protocol):
    """The app's side of the direct path, found in the lifespan state."""

    def handles(self, path: str) -> bool:
        """Whether upgrades to ``path`` (percent-decoded) take the direct path."""

    def admit(
        self, path: str, query: str, headers: dict[str, str], client: str | None
    ) -> tuple[int, dict[str, Any]] | object:
        """Before the upgrade (no I/O): an HTTP status and problem+json body to refuse it,
        or an admission ticket handed to :meth:`open`. ``headers`` are keyed in lower case;
        ``client`` is the peer's address."""

    def open(self, ticket: Any, writer: FanoutWriter) -> Awaitable[DirectSession | None]:
        """After the upgrade: join and return the session (None: it closed the socket)."""


class FanoutProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, with the direct path for the handler's paths.

    Our data frames never use extensions (permessage-deflate is off), are never fragmented
    and are written only between complete frames of the sans-I/O connection, so bypassing it
    for data frames keeps the stream valid.
    """

    _direct: DirectSession | None = None
    _direct_pending: list[bytes | None] | None = None
    paused = False  # the transport passed its high-water mark (see FanoutWriter.write)
    _client_closed = False  # counted in counters.client_closes

    def pause_writing(self) -> None:
        self.paused = True
        super().pause_writing()

    def resume_writing(self) -> None:
        self.paused = False
        super().resume_writing()

    # -- the upgrade ----------------------------------------------------------------------

    def handle_connect(self, event: Request) -> None:
        handler: DirectHandler | None = self.app_state.get(DIRECT_HANDLER)
        raw_path, _, query = event.path.partition("?")
        path = unquote(raw_path)
        if handler is None or not handler.handles(path):
            super().handle_connect(event)
            return
        response = self.conn.accept(event)
        if response.status_code != 101:  # not a valid WebSocket handshake
            self._respond_and_close(response)
            return
        headers: dict[str, str] = {}
        for name, value in event.headers.raw_items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        client = self.client[0] if self.client else None
        ticket = handler.admit(path, query, headers, client)
        if isinstance(ticket, tuple):
            status, problem = ticket
            self._respond_and_close(_problem_response(status, problem))
            return
        self.handshake_initiated = self.handshake_complete = True
        self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.start_keepalive()
        self._direct_pending = []
        task = self.loop.create_task(self._open_direct(handler, path, ticket))
        # uvicorn owns these tasks: it waits for them, then cancels them, at shutdown.
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _respond_and_close(self, response: Response) -> None:
        self.handshake_initiated = self.handshake_complete = self.close_sent = True
        self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()

    async def _open_direct(self, handler: DirectHandler, path: str, ticket: object) -> None:
        try:
            session = await handler.open(ticket, FanoutWriter(self))
        except Exception:
            log.exception("opening %s failed", path)
            self.close_now(1011, "internal error")
            return
        pending, self._direct_pending = self._direct_pending or [], None
        if session is None:
            return
        self._direct = session
        for data in pending:
            session.on_frame(data)
        if self.disconnected:
            session.on_close()

    # -- frames ---------------------------------------------------------------------------

    def send_receive_event_to_app(self) -> None:
        if self._direct is None and self._direct_pending is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        message = bytes(data) if self.curr_msg_data_type == "bytes" else None
        if self.close_sent:
            return
        if self._direct is not None:
            self._direct.on_frame(message)
        elif self._direct_pending is not None:
            # Still joining: keep the frames in order (the client's sync step 1 is first),
            # but not without bound while a room takes its time to load.
            if len(self._direct_pending) >= MAX_PENDING_FRAMES:
                log.warning("closing 1013: %d messages before the room opened", MAX_PENDING_FRAMES)
                self.close_now(1013, "overloaded: too many messages before the room opened")
                return
            self._direct_pending.append(message)

    def handle_text(self, event: Any) -> None:
        if self._direct is None and self._direct_pending is None:
            super().handle_text(event)
            return
        # Not decoded as UTF-8: a text frame is refused whatever it holds.
        self.curr_msg_data_type = "text"
        self.frames = [event.data]
        if event.fin:
            self.send_receive_event_to_app()

    def handle_close(self, event: Any) -> None:
        self._count_client_close()
        super().handle_close(event)

    def _count_client_close(self) -> None:
        """A direct socket the client closes (its close frame came first, or the link was
        lost with no close frame either way) is counted by its code; the closes we start
        (ours, or the sans-I/O connection's on a protocol error) are counted elsewhere."""
        if self._client_closed or (self._direct is None and self._direct_pending is None):
            return  # counted already, or the ASGI route (its endpoint counts)
        conn = self.conn
        if conn.close_rcvd_then_sent:
            code: int | None = conn.close_rcvd.code if conn.close_rcvd is not None else None
        elif conn.close_sent is None and conn.close_rcvd is None and not self.close_sent:
            code = None  # lost: 1006
        else:
            return
        self._client_closed = True
        counters.client_closed(code)

    def handle_parser_exception(self) -> None:
        if self.conn.close_sent is not None:
            log.warning("closing %d: %s", self.conn.close_sent.code, self.conn.close_sent.reason)
        super().handle_parser_exception()

    def connection_lost(self, exc: Exception | None) -> None:
        self._count_client_close()
        super().connection_lost(exc)
        # The session (and through it the room) is let go of: the protocol object may live on
        # in reference cycles until a full collection, its room must not.
        session, self._direct = self._direct, None
        if session is not None:
            session.on_close()

    # -- closing --------------------------------------------------------------------------

    def close_now(self, code: int, reason: str) -> None:
        """Send a close frame without waiting for the write buffer to drain.

        ASGI's ``websocket.close`` waits until the transport is writable, which a client that
        stopped reading never lets happen. Here the close frame is queued behind what is
        buffered, the app is told the socket is gone, and the transport is aborted after
        ``close_timeout`` if the peer never answers (RFC 6455 section 7.1.1).
        """
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self._direct is None and self._direct_pending is None:
            self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    # -- the ASGI route -------------------------------------------------------------------

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # The parsed handshake is not needed once answered; with thousands of idle
            # connections its header objects are a good part of each one's memory.
            self.request = self.response = None  # type: ignore[assignment]
        # uvicorn's sans-I/O protocol does not mark a denial response (the ASGI
        # websocket.http.response extension) as completing the handshake and then logs a
        # spurious "returned without completing handshake" error when the app returns.
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True


def _problem_response(status: int, problem: dict[str, Any]) -> Response:
    body = json.dumps(problem).encode()
    fields = [
        ("Content-Type", "application/problem+json"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    retry_after = problem.get("retryAfter")
    if isinstance(retry_after, int | float):  # a shed upgrade (503): when to come back
        fields.append(("Retry-After", str(max(1, math.ceil(retry_after)))))
    headers = Headers(fields)
    return Response(status, HTTPStatus(status).phrase, headers, body)
