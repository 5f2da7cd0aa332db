"""A minimal WebSocket client (RFC 6455) for the load tool's scripted clients.

The ``websockets`` library costs tens of microseconds per received frame once its asyncio
machinery is counted (a task wake-up, a queue, a future per ``recv``). A generator core must
receive hundreds of thousands of frames per second to saturate a good server, so the load
tool's agents use this instead: an :class:`asyncio.Protocol` that parses every complete frame
of a ``data_received`` chunk in one pass and hands each binary message to a plain callback,
with one timestamp per chunk (every frame of a chunk arrived together).

What it does not do, because no y-websocket server needs it from a load generator: no
extensions (no permessage-deflate), no subprotocols, no TLS (loopback only), no text
messages (reported to the callback as ``None`` payloads so the caller counts them).
Fragmented messages are reassembled. Pings are answered. The closing handshake follows
section 7: a server's close frame is echoed and the transport is closed.

Client frames are masked (section 5.3) with a fresh random key, applied with the C helper of
``websockets`` when it is compiled.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
import urllib.parse
from collections.abc import Callable
from typing import Final

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the pure-Python fallback of websockets
    from websockets.utils import apply_mask

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_OP_CONTINUATION: Final = 0x0
_OP_TEXT: Final = 0x1
_OP_BINARY: Final = 0x2
_OP_CLOSE: Final = 0x8
_OP_PING: Final = 0x9
_OP_PONG: Final = 0xA
_MAX_HEADER_BYTES: Final = 16 * 1024
_WRITE_HIGH_WATER: Final = 256 * 1024

OnMessage = Callable[[bytes | None, float], None]
"""``(payload, monotonic time of receipt)``; the payload is None for a text message."""


class WireError(Exception):
    """Base of this module's errors."""


class HandshakeError(WireError):
    """The server refused the upgrade; ``status`` is its HTTP status (0: not HTTP at all);
    ``retry_after`` the seconds of its Retry-After header (a shed upgrade), if any."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class WireClosedError(WireError):
    """The connection is closed; ``code`` is the close code received (1006: none)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"connection closed with code {code}")
        self.code = code


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 section 5.2)."""
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    mask = os.urandom(4)
    return header + mask + apply_mask(payload, mask)


class WireProtocol(asyncio.Protocol):
    """One client connection: handshake, then frames to ``on_message``."""

    def __init__(self, request: bytes, key: bytes, on_message: OnMessage) -> None:
        self._request = request
        self._accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._open = False
        self._close_sent = False
        self._writable = asyncio.Event()
        self._writable.set()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)  # type: ignore[attr-defined]
        transport.write(self._request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self._open:
            self._frames(self._buffer + data if self._buffer else data, time.monotonic())
        else:
            self._handshake(self._buffer + data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        self._writable.set()
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionResetError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code if self.close_code is not None else 1006)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- reading --------------------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > _MAX_HEADER_BYTES:
                self._fail_handshake(HandshakeError(0, "response headers too large"))
            else:
                self._buffer = data
            return
        head, rest = data[:end].decode("latin-1"), data[end + 4 :]
        status_line, *lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            wait = headers.get("retry-after", "")
            retry_after = float(wait) if wait.isdigit() else None
            self._fail_handshake(
                HandshakeError(status, f"server answered {status_line!r}", retry_after)
            )
            return
        if headers.get("sec-websocket-accept", "").encode() != self._accept:
            self._fail_handshake(HandshakeError(101, "wrong Sec-WebSocket-Accept"))
            return
        self._open = True
        self._buffer = b""
        self.opened.set_result(None)
        if rest:
            self._frames(rest, time.monotonic())

    def _fail_handshake(self, exc: HandshakeError) -> None:
        self._buffer = b""
        if not self.opened.done():
            self.opened.set_exception(exc)
        assert self.transport is not None
        self.transport.abort()

    def _frames(self, buf: bytes, when: float) -> None:
        """Every complete frame of ``buf`` in order; the incomplete tail waits for more."""
        pos = 0
        size = len(buf)
        on_message = self.on_message
        while size - pos >= 2:
            first = buf[pos]
            length = buf[pos + 1]
            head = pos + 2
            if length & 0x80:
                self._protocol_error()  # servers never mask (section 5.1)
                return
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = pos + 10
            end = head + length
            if end > size:
                break
            pos = end
            opcode = first & 0x0F
            if first == 0x82:  # FIN + binary: by far the most common frame
                on_message(buf[head:end], when)
            elif opcode >= _OP_CLOSE:
                self._control(opcode, buf[head:end])
            else:
                self._data(first, opcode, buf[head:end], when)
            if not self._open:
                return
        self._buffer = buf[pos:] if pos < size else b""

    def _data(self, first: int, opcode: int, payload: bytes, when: float) -> None:
        if opcode != _OP_CONTINUATION:
            self._fragment_opcode = opcode
            self._fragments = []
        self._fragments.append(payload)
        if first & 0x80:
            message = b"".join(self._fragments)
            self._fragments = []
            self.on_message(message if self._fragment_opcode == _OP_BINARY else None, when)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == _OP_PING:
            self._write(_frame(_OP_PONG, payload))
        elif opcode == _OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close_code = code
            if not self._close_sent:
                self._close_sent = True
                self._write(_frame(_OP_CLOSE, payload[:2]))
            self._open = False
            assert self.transport is not None
            self.transport.close()

    def _protocol_error(self) -> None:
        self.close_code = 1002
        self._open = False
        assert self.transport is not None
        self.transport.abort()

    # -- writing --------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def send_now(self, payload: bytes) -> None:
        """Queue a binary message; raises WireClosedError if the connection is closed."""
        if not self._open or self._close_sent:
            raise WireClosedError(self.close_code or 1006)
        self._write(_frame(_OP_BINARY, payload))

    async def send(self, payload: bytes) -> None:
        """Queue a binary message, then wait while the client's write buffer is full."""
        self.send_now(payload)
        if not self._writable.is_set():
            await self._writable.wait()

    def write_buffer_bytes(self) -> int:
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    async def close(self, code: int = 1000, timeout: float = 2.0) -> None:
        """Closing handshake (section 7.1.2); the transport is aborted after ``timeout``."""
        if self.transport is None:
            return
        if self._open and not self._close_sent:
            self._close_sent = True
            self._write(_frame(_OP_CLOSE, code.to_bytes(2, "big")))
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            self.transport.abort()
            await self.closed

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (a network failure)."""
        self._open = False
        if self.transport is not None:
            self.transport.abort()


async def connect(url: str, on_message: OnMessage, timeout: float) -> WireProtocol:
    """Open ``ws://host:port/path?query`` and complete the opening handshake.

    Raises OSError (refused, unreachable), TimeoutError, HandshakeError.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise HandshakeError(0, f"{url!r}: only ws:// URLs are supported by the load clients")
    host = parts.hostname
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16))
    host_header = f"[{host}]" if ":" in host else host
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host_header}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, protocol = await loop.create_connection(
            lambda: WireProtocol(request, key, on_message), host, port
        )
        try:
            await protocol.opened
        except BaseException:
            protocol.abort()
            raise
    return protocol
