"""The WebSocket transport: uvicorn's sans-I/O websockets protocol plus a fan-out fast path.

ASGI makes every ``send`` an awaited coroutine per recipient. For fan-out that is the
dominant cost, so this protocol publishes an ASGI extension, ``collab.fanout``, in the
connection scope: a :class:`FanoutWriter` that writes a pre-encoded frame straight to the
transport, synchronously, and reports how many bytes are still buffered. A room encodes a
broadcast frame once (:func:`binary_frame`) and hands the same bytes to every recipient.

Without the extension (another ASGI server, Starlette's TestClient) the connection falls
back to a bounded queue drained by a writer task; see :mod:`server.connection`.
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Opcode

FANOUT_EXTENSION = "collab.fanout"


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

    def write(self, frame: bytes) -> bool:
        """Write an encoded frame; False if the connection is closing (nothing written)."""
        protocol = self._protocol
        transport = protocol.transport
        if protocol.close_sent or protocol.disconnected or transport.is_closing():
            return False
        transport.write(frame)
        return True

    def buffered_bytes(self) -> int:
        """Bytes written but not yet accepted by the kernel (the client's backlog)."""
        return self._protocol.transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake now, without waiting for the buffer to drain."""
        self._protocol.close_now(code, reason)


class FanoutProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, with the ``collab.fanout`` scope extension.

    Our frames never use extensions (permessage-deflate is off), are never fragmented and are
    written only between complete frames of the sans-I/O connection, so bypassing it for data
    frames keeps the stream valid.
    """

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][FANOUT_EXTENSION] = FanoutWriter(self)

    def close_now(self, code: int, reason: str) -> None:
        """Send a close frame without waiting for the write buffer to drain.

        ASGI's ``websocket.close`` waits until the transport is writable, which a client that
        stopped reading never lets happen. Here the close frame is queued behind what is
        buffered, the app is told the socket is gone, and the transport is closed after
        ``close_timeout`` if the peer never answers (RFC 6455 section 7.1.1).
        """
        if self.close_sent or self.disconnected or self.transport.is_closing():
            return
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    async def send(self, message: Any) -> None:
        await super().send(message)
        # uvicorn's sans-I/O protocol does not mark a denial response (the ASGI
        # websocket.http.response extension) as completing the handshake and then logs a
        # spurious "returned without completing handshake" error when the app returns.
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True
