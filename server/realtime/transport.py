"""uvicorn's WebSocket protocol for the ASGI route, with two fixes.

The rooms' sockets normally take the direct path (:mod:`server.realtime.direct`), handed over
by the HTTP protocol before uvicorn's WebSocket protocol is made. What reaches this protocol
is every other WebSocket upgrade: opening requests the direct path does not read (an unusual
but valid head, an invalid handshake, whose error websockets answers) and, in tests,
servers without the direct handler. They take the ASGI route (the app's WebSocket endpoint), which
serves the rooms too.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger(__name__)


class FanoutProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol: logs why it closes on bad frames, lets the
    parsed handshake go once answered, and completes a denied handshake."""

    def handle_parser_exception(self) -> None:
        if self.conn.close_sent is not None:
            log.warning("closing %d: %s", self.conn.close_sent.code, self.conn.close_sent.reason)
        super().handle_parser_exception()

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
