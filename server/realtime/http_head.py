"""The HTTP/1.1 side of the listener: uvicorn's h11 protocol with a deadline and a size cap
on the request head.

uvicorn reads a request head (request line and header fields) for as long as the client
takes to send it: a client that opens a connection and sends half a head, or nothing, holds
a socket and a file descriptor for ever, before any authentication. Here every request head
must be complete within ``head_timeout`` seconds of its first byte (of the connection, for
the first request): otherwise the connection is answered 408 (when something was sent) and
closed. A request line longer than :data:`MAX_REQUEST_LINE_BYTES` is answered 414, a head
longer than ``max_head_bytes`` 431, both with ``Connection: close``.

The checks cost one timer per connection until its head is complete (WebSocket upgrades
then switch to :class:`server.realtime.transport.FanoutProtocol`, which never sees this code) and a
``find`` over the bytes of the request line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from http import HTTPStatus
from typing import Any, Final

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# A request line longer than this is refused with 414. websockets parses the upgrade request
# again with the same per-line limit (``websockets.http11.MAX_LINE_LENGTH``).
MAX_REQUEST_LINE_BYTES: Final = 8192
# The blank line that ends a head (h11 accepts bare LF line ends too).
_HEAD_END: Final = re.compile(rb"\n\r?\n")

log = logging.getLogger(__name__)


class HeadLimitedProtocol(H11Protocol):
    """uvicorn's h11 protocol, refusing request heads that are too slow or too large.

    Use :func:`head_limited_protocol` to get a subclass with the limits bound; the class
    attributes here are the defaults.
    """

    head_timeout: float = 10.0
    max_head_bytes: int = 16 * 1024

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0  # bytes received since the current head began
    _line_bytes = 0  # bytes of its request line so far
    _line_done = False
    _tail = b""  # the last bytes of the previous chunk (a head's end may straddle chunks)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on a kept-alive connection
        if self._head_timer is not None and self._too_large(data):
            return
        super().data_received(data)
        if self._head_timer is not None and (
            self.conn.their_state is not h11.IDLE or self.transport.is_closing()
        ):
            self._disarm()  # the head is complete (or the connection is done)

    def _too_large(self, data: bytes) -> bool:
        """Count ``data`` into the head being read; refuse (414 / 431) and return True when
        the request line or the head passes its limit."""
        before = self._head_bytes
        self._head_bytes += len(data)
        if not self._line_done:
            end = data.find(b"\n")
            self._line_bytes += len(data) if end < 0 else end
            self._line_done = end >= 0
            if self._line_bytes > MAX_REQUEST_LINE_BYTES:
                self._refuse(HTTPStatus.REQUEST_URI_TOO_LONG)
                return True
        if self._head_bytes > self.max_head_bytes:
            # Over the cap unless the head ends in time and the rest is a body (or the
            # next request): look for its end, across the previous chunk's last bytes too.
            blank = _HEAD_END.search(self._tail + data)
            if blank is None or before - len(self._tail) + blank.end() > self.max_head_bytes:
                self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                return True
        self._tail = data[-3:]
        return False

    def send_400_response(self, msg: str) -> None:
        # h11 refuses a head past ``h11_max_incomplete_event_size`` (set to max_head_bytes
        # by server.cli) as a generic protocol error: answer that one with 431.
        if self._head_timer is not None and self._head_bytes > self.max_head_bytes:
            self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            return
        super().send_400_response(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    # -- the deadline ---------------------------------------------------------------------

    def _arm(self) -> None:
        self._head_bytes = self._line_bytes = 0
        self._line_done = False
        self._tail = b""
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        log.debug("closing a connection from %s: no complete request head in time", self.client)
        if self._head_bytes:
            self._refuse(HTTPStatus.REQUEST_TIMEOUT)
        else:
            self.transport.close()

    def _refuse(self, status: HTTPStatus) -> None:
        """Answer ``status`` (problem+json, ``Connection: close``) and close; the head read
        so far is dropped."""
        self._disarm()
        if self.transport.is_closing():
            return
        log.debug("refusing a request head from %s: %d", self.client, status)
        self.transport.write(problem_response(status))
        self.transport.close()


def problem_response(status: HTTPStatus) -> bytes:
    """A complete HTTP/1.1 response carrying an RFC 9457 problem document, closing the
    connection."""
    problem: dict[str, Any] = {
        "type": "about:blank",
        "title": status.phrase.lower(),
        "status": int(status),
    }
    body = json.dumps(problem).encode()
    head = (
        f"HTTP/1.1 {int(status)} {status.phrase}\r\n"
        "content-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def head_limited_protocol(head_timeout: float, max_head_bytes: int) -> type[HeadLimitedProtocol]:
    """A :class:`HeadLimitedProtocol` subclass with these limits, for uvicorn's ``http=``."""
    return type(
        "HeadLimitedProtocol",
        (HeadLimitedProtocol,),
        {"head_timeout": head_timeout, "max_head_bytes": max_head_bytes},
    )
