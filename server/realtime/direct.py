"""The direct WebSocket path: RFC 6455 for the rooms' sockets, from the opening request on.

ASGI costs, per connection, a task, a receive queue and a stack of middleware frames, and per
frame a queue hand-off and a task switch; per recipient of a broadcast, an awaited ``send``.
uvicorn's own upgrade costs, per connection, an h11 parse of the request, a second parse by
websockets' sans-I/O protocol and its handshake checks: about 300 us of Python per join,
paid by every client of a reconnect herd. This path skips all of it. When the app registers a
:class:`DirectHandler` in its lifespan state under :data:`DIRECT_HANDLER`, the HTTP protocol
(:mod:`server.realtime.http_head`) hands a plain opening request for one of the handler's
paths to :func:`upgrade`, which admits it, answers 101 and turns the connection into a
:class:`DirectProtocol`: every complete message goes to the handler's session synchronously,
and broadcasts are written with :class:`FanoutWriter`: a frame encoded once
(:func:`binary_frame`) goes straight to every recipient's transport, with no task and no await
per recipient. Every other request (another path, a request this path does not read as a
plain opening handshake) takes uvicorn's route, which answers its errors.

What the protocol does (server side of RFC 6455, no extension, no subprotocol): client frames
must be masked (5.3), reserved bits clear, control frames short and unfragmented (5.5);
fragmented messages are reassembled up to ``max_size`` bytes (else 1009); pings are answered;
the server pings every ``ping_interval`` seconds and closes 1011 when no pong comes within
``ping_timeout``; the closing handshake follows section 7 (a close frame is answered with
the same code, then the TCP connection is closed; a close we send is followed by an abort if
the client has not answered within 10 s). A broken rule closes with 1002 (1007 for a close
reason that is not UTF-8), logged at warning level.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import hashlib
import json
import logging
import math
import os
import struct
import time
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any, Final, Protocol, cast

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the pure-Python fallback of websockets
    from websockets.utils import apply_mask

from server.ops import counters

DIRECT_HANDLER: Final = "collab.direct_websocket"
# Messages a client may send while its room is still loading.
MAX_PENDING_FRAMES: Final = 256
# Seconds a closing handshake we started may take before the TCP connection is aborted.
CLOSE_TIMEOUT: Final = 10.0

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
_MAX_CONTROL: Final = 125
# Close codes a peer may send (RFC 6455 section 7.4, the IANA registry; 3000-4999 private).
_PEER_CLOSE_CODES: Final = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

log = logging.getLogger(__name__)


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


# -- frames -------------------------------------------------------------------------------


class FrameError(Exception):
    """The client broke RFC 6455's framing rules: close with ``code`` (1002 protocol error,
    1007 bad close reason, 1009 message too big) and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def binary_frame(payload: bytes) -> bytes:
    """Encode one unmasked, unfragmented binary frame (RFC 6455 section 5.2).

    Servers never mask (section 5.1), so the bytes are the same for every recipient.
    """
    return server_frame(OP_BINARY, payload)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked frame with FIN set: ``opcode`` and ``payload`` (any length)."""
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        header = struct.pack("!BB", first, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 126, size)
    else:
        header = struct.pack("!BBQ", first, 127, size)
    return header + payload


class FrameReader:
    """Client frames out of a byte stream, unmasked, fragmented messages reassembled.

    :meth:`feed` takes the bytes as they arrive and returns what they complete, in order:
    ``(OP_BINARY or OP_TEXT, message)`` for messages and ``(OP_CLOSE / OP_PING / OP_PONG,
    payload)`` for control frames. It raises :class:`FrameError` for a frame that breaks the
    rules (section 5): reserved bits set, an unmasked frame, an unknown opcode, a long or
    fragmented control frame, a continuation without a message or a message inside another
    (1002), a message past ``max_size`` bytes (1009, as soon as a frame header says so). After
    an error the reader is not used again.
    """

    __slots__ = ("_buffer", "_max_size", "_opcode", "_parts", "_size")

    def __init__(self, max_size: int) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self._opcode: int | None = None  # of the fragmented message being read
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        out: list[tuple[int, bytes]] = []
        end = len(buffer)
        pos = 0
        while end - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            if first & 0x70:
                raise FrameError(1002, "reserved bits set: no extension was negotiated")
            if not second & 0x80:
                raise FrameError(1002, "client frames must be masked")
            fin, opcode, length = first & 0x80, first & 0x0F, second & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            self._check(fin, opcode, length)
            start = pos + head + 4
            if end - start < length:
                break
            mask = bytes(buffer[start - 4 : start])
            payload = apply_mask(bytes(buffer[start : start + length]), mask)
            pos = start + length
            if opcode >= OP_CLOSE or (fin and opcode):
                out.append((opcode, payload))
            else:
                if opcode:
                    self._opcode = opcode
                self._parts.append(payload)
                self._size += length
                if fin:
                    assert self._opcode is not None
                    out.append((self._opcode, b"".join(self._parts)))
                    self._opcode, self._parts, self._size = None, [], 0
        del buffer[:pos]
        return out

    def _check(self, fin: int, opcode: int, length: int) -> None:
        if opcode >= OP_CLOSE:
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise FrameError(1002, f"unknown opcode {opcode}")
            if not fin:
                raise FrameError(1002, "fragmented control frame")
            if length > _MAX_CONTROL:
                raise FrameError(1002, "control frame longer than 125 bytes")
            return
        if opcode not in (OP_CONTINUATION, OP_TEXT, OP_BINARY):
            raise FrameError(1002, f"unknown opcode {opcode}")
        if opcode == OP_CONTINUATION and self._opcode is None:
            raise FrameError(1002, "continuation frame without a message")
        if opcode != OP_CONTINUATION and self._opcode is not None:
            raise FrameError(1002, "new message before the fragmented one ended")
        if self._size + length > self._max_size:
            raise FrameError(1009, f"message larger than {self._max_size} bytes")


def parse_close(payload: bytes) -> tuple[int, str]:
    """The code and reason of a close frame's payload (1005 for an empty one, section 7.1.5).

    Raises :class:`FrameError`: a one-byte payload or a code peers may not send (1002), a
    reason that is not UTF-8 (1007).
    """
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise FrameError(1002, "close frame with a one-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if code not in _PEER_CLOSE_CODES and not 3000 <= code <= 4999:
        raise FrameError(1002, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(1007, "close reason is not UTF-8") from None
    return code, reason


def close_payload(code: int, reason: str) -> bytes:
    """A close frame's payload: the code and the reason, cut to fit in 125 bytes."""
    encoded = reason.encode()[: _MAX_CONTROL - 2]
    return code.to_bytes(2, "big") + encoded.decode(errors="ignore").encode()


# -- the opening handshake ----------------------------------------------------------------


def accept_key(headers: dict[str, str]) -> str | None:
    """``Sec-WebSocket-Accept`` for a plain opening request (section 4.2.1): a Host, an
    Upgrade of ``websocket``, an ``upgrade`` token in Connection, a key of 16 bytes in
    base64, version 13 (lower-case keys, repeated fields joined with ", "). None for
    anything else: uvicorn's route then answers it, with websockets' error responses.
    Offered extensions and subprotocols are declined by not naming them in the response.
    """
    key = headers.get("sec-websocket-key")
    if (
        key is None
        or "host" not in headers
        or headers.get("upgrade", "").lower() != "websocket"
        or headers.get("sec-websocket-version") != "13"
        or "upgrade"
        not in (token.strip().lower() for token in headers.get("connection", "").split(","))
    ):
        return None
    try:
        if len(base64.b64decode(key.encode(), validate=True)) != 16:
            return None
    except (binascii.Error, UnicodeEncodeError):
        return None
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


_date: list[Any] = [0, ""]  # the second and its HTTP date, for the Date header


def switching_protocols(accept: str) -> bytes:
    """The 101 response (the Date header computed once a second)."""
    now = int(time.time())
    if _date[0] != now:
        _date[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        f"Date: {_date[1]}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode()


def problem_response(status: int, problem: dict[str, Any]) -> bytes:
    """A refusal of the upgrade: ``status`` with a problem+json body, closing the
    connection; a shed upgrade (503) says when to come back (Retry-After)."""
    body = json.dumps(problem).encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: application/problem+json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    retry_after = problem.get("retryAfter")
    if isinstance(retry_after, int | float):
        lines.append(f"Retry-After: {max(1, math.ceil(retry_after))}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class UvicornState(Protocol):
    """What :func:`upgrade` needs of uvicorn's server state: the open connections (closed at
    shutdown) and the tasks it waits for."""

    connections: set[Any]
    tasks: set[asyncio.Task[None]]


def upgrade(
    transport: asyncio.Transport,
    handler: DirectHandler,
    request: tuple[str, str, dict[str, str], str | None, str],
    rest: bytes,
    *,
    state: UvicornState,
    max_size: int,
    ping_interval: float | None,
    ping_timeout: float | None,
) -> None:
    """Admit the opening ``request`` (path, query, lower-case headers, client address,
    accept key) and answer it: refused (problem+json, closed), or 101 with the transport
    handed to a new :class:`DirectProtocol`, fed ``rest`` (bytes that followed the head)."""
    path, query, headers, client, accept = request
    ticket = handler.admit(path, query, headers, client)
    if isinstance(ticket, tuple):
        status, problem = ticket
        transport.write(problem_response(status, problem))
        transport.close()
        return
    protocol = DirectProtocol(state, max_size, ping_interval, ping_timeout)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    transport.write(switching_protocols(accept))
    protocol.open(handler, path, ticket)
    if rest:
        protocol.data_received(rest)


# -- the connection -----------------------------------------------------------------------


class DirectProtocol(asyncio.Protocol):
    """One room socket after its 101: frames in, to its session; fan-out frames out."""

    def __init__(
        self,
        state: UvicornState,
        max_size: int,
        ping_interval: float | None,
        ping_timeout: float | None,
    ) -> None:
        self._state = state
        self._reader = FrameReader(max_size)
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        self.session: DirectSession | None = None
        self._pending: list[bytes | None] | None = []  # messages before the session opened
        self.paused = False  # the transport passed its high-water mark (FanoutWriter.write)
        self.close_sent = False
        self.disconnected = False
        self._timer: asyncio.TimerHandle | None = None  # the next ping, or its deadline
        self._ping_payload: bytes | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._client_closed = False  # counted in counters.client_closes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._state.connections.add(self)
        self._schedule_ping()

    def open(self, handler: DirectHandler, path: str, ticket: object) -> None:
        task = self.loop.create_task(self._open(handler, path, ticket))
        # uvicorn owns these tasks: it waits for them, then cancels them, at shutdown.
        self._state.tasks.add(task)
        task.add_done_callback(self._state.tasks.discard)

    async def _open(self, handler: DirectHandler, path: str, ticket: object) -> None:
        try:
            session = await handler.open(ticket, FanoutWriter(self))
        except Exception:
            log.exception("opening %s failed", path)
            self.close_now(1011, "internal error")
            return
        pending, self._pending = self._pending or [], None
        if session is None:
            return
        self.session = session
        for data in pending:
            session.on_frame(data)
        if self.disconnected:
            self.session = None
            session.on_close()

    # -- reading --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._reader.feed(data)
        except FrameError as exc:
            # Section 7.1.7: fail the connection: a close frame, then the TCP connection
            # closed (what follows a broken frame cannot be read as frames anyway).
            log.warning("closing %d: %s", exc.code, exc.reason)
            self._fail(exc.code, exc.reason)
            return
        for opcode, payload in frames:
            if opcode in (OP_BINARY, OP_TEXT):
                self._message(payload if opcode == OP_BINARY else None)
            elif opcode == OP_PING:
                if not self.close_sent:
                    self.transport.write(server_frame(OP_PONG, payload))
            elif opcode == OP_PONG:
                self._pong(payload)
            else:
                self._closed_by_peer(payload)
                return

    def _message(self, message: bytes | None) -> None:
        if self.close_sent:
            return
        if self.session is not None:
            self.session.on_frame(message)
        elif self._pending is not None:
            # Still joining: keep the messages in order (the client's sync step 1 is first),
            # but not without bound while a room takes its time to load.
            if len(self._pending) >= MAX_PENDING_FRAMES:
                log.warning("closing 1013: %d messages before the room opened", MAX_PENDING_FRAMES)
                self.close_now(1013, "overloaded: too many messages before the room opened")
                return
            self._pending.append(message)

    def _closed_by_peer(self, payload: bytes) -> None:
        try:
            code, _ = parse_close(payload)
        except FrameError as exc:
            log.warning("closing %d: %s", exc.code, exc.reason)
            code, payload = exc.code, close_payload(exc.code, exc.reason)
        if not self.close_sent:
            # The client closed first (counted here; the closes we start are counted where
            # they are decided). Section 5.5.1: answer with the code received.
            counters.client_closed(code)
            self._client_closed = True
            self.close_sent = True
            self.transport.write(server_frame(OP_CLOSE, b"" if code == 1005 else payload[:2]))
        self.transport.close()

    # -- keepalive ------------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        if self._ping_interval:
            self._timer = self.loop.call_later(self._ping_interval, self._ping)

    def _ping(self) -> None:
        self._timer = None
        if self.close_sent or self.transport.is_closing():
            return
        self._ping_payload = os.urandom(4)
        self.transport.write(server_frame(OP_PING, self._ping_payload))
        if self._ping_timeout:
            self._timer = self.loop.call_later(self._ping_timeout, self._ping_timed_out)
        else:
            self._schedule_ping()

    def _pong(self, payload: bytes) -> None:
        if self._ping_payload is None or payload != self._ping_payload:
            return  # unsolicited, or for an older ping
        self._ping_payload = None
        if self._timer is not None and self._ping_timeout:
            self._timer.cancel()
            self._schedule_ping()

    def _ping_timed_out(self) -> None:
        self._timer = None
        log.info("closing 1011: keepalive ping timeout")
        self._fail(1011, "keepalive ping timeout")

    # -- writing and closing --------------------------------------------------------------

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def close_now(self, code: int, reason: str) -> None:
        """Send a close frame without waiting for the write buffer to drain; the transport
        is aborted after :data:`CLOSE_TIMEOUT` if the peer never answers (section 7.1.1)."""
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.close_sent = True
        self.transport.write(server_frame(OP_CLOSE, close_payload(code, reason)))
        self._close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.abort)

    def _fail(self, code: int, reason: str) -> None:
        """Close without waiting for the peer (section 7.1.7): a close frame unless one was
        sent, then the TCP connection, aborted after :data:`CLOSE_TIMEOUT` if the buffer
        never drains."""
        if self.disconnected or self.transport.is_closing():
            return
        if not self.close_sent:
            self.close_sent = True
            self.transport.write(server_frame(OP_CLOSE, close_payload(code, reason)))
        self.transport.close()
        if self._close_timer is None:
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.abort)

    def shutdown(self) -> None:
        """uvicorn's shutdown: close 1012 and let the transport go once its buffer is out."""
        self._fail(1012, "server restarting")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.close_sent and not self._client_closed:
            counters.client_closed(None)  # lost without a close frame either way: 1006
        self.disconnected = True
        self._state.connections.discard(self)
        for timer in (self._timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._close_timer = None
        # The session (and through it the room) is let go of: the protocol object may live on
        # in reference cycles until a full collection, its room must not.
        session, self.session = self.session, None
        if session is not None:
            session.on_close()


class FanoutWriter:
    """Synchronous writes of pre-encoded frames to one connection's transport."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: DirectProtocol) -> None:
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
