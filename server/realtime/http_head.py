"""The HTTP/1.1 side of the listener: uvicorn's h11 protocol with a deadline and a size cap
on the request head.

uvicorn reads a request head (request line and header fields) for as long as the client
takes to send it: a client that opens a connection and sends half a head, or nothing, holds
a socket and a file descriptor for ever, before any authentication. Here every request head
must be complete within ``head_timeout`` seconds of its first byte (of the connection, for
the first request): otherwise the connection is answered 408 (when something was sent) and
closed. A request line longer than :data:`MAX_REQUEST_LINE_BYTES` is answered 414, a head
longer than ``max_head_bytes`` 431, both with ``Connection: close``.

The checks cost one timer per connection until its head is complete and a ``find`` over
the bytes of the request line. A connection whose first request is a WebSocket opening
request for the rooms is handed to the direct path (:mod:`server.realtime.direct`) as soon
as its head is complete, without being parsed by h11; other upgrades switch to uvicorn's
WebSocket protocol (:class:`server.realtime.transport.FanoutProtocol`) as usual.
"""

from __future__ import annotations

import asyncio
import logging
import re
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.realtime.direct import (
    DIRECT_HANDLER,
    DirectHandler,
    accept_key,
    problem_response,
    upgrade,
)

# A request line longer than this is refused with 414. websockets parses the upgrade request
# again with the same per-line limit (``websockets.http11.MAX_LINE_LENGTH``).
MAX_REQUEST_LINE_BYTES: Final = 8192
# The blank line that ends a head (h11 accepts bare LF line ends too).
_HEAD_END: Final = re.compile(rb"\n\r?\n")
# A WebSocket opening request (RFC 6455 section 4.1) read by the direct path: a GET request
# line and field lines of a token name and a value of visible characters, spaces and tabs
# (RFC 9110 section 5), CRLF line ends, then the blank line. Anything else goes through h11.
_FIELD: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n"
_OPENING_HEAD: Final = re.compile(rb"GET (/[\x21-\x7e]*) HTTP/1\.1\r\n((?:" + _FIELD + rb")+)\r\n")
_GET: Final = b"GET /"

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

    # The connection's first request head, while it is incomplete and may be an opening
    # request for the direct path (None once it is complete or cannot be one).
    _first: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._first = b""
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._first is not None:
            data = self._first + data
            if _HEAD_END.search(data) is None and _may_open(data, self.max_head_bytes):
                self._first = data  # wait for the rest of the head
                self._head_bytes = len(data)  # a head unfinished at the deadline gets 408
                return
            self._first = None
            self._head_bytes = 0
            if self._upgraded_directly(data):
                return
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request on a kept-alive connection
        if self._head_timer is not None and self._too_large(data):
            return
        super().data_received(data)
        if self._head_timer is not None and (
            self.conn.their_state is not h11.IDLE or self.transport.is_closing()
        ):
            self._disarm()  # the head is complete (or the connection is done)

    def _upgraded_directly(self, data: bytes) -> bool:
        """Answer a connection whose first request is a plain WebSocket opening request for
        a path of the app's direct handler on the direct path (:mod:`server.realtime.direct`),
        without h11 or uvicorn's WebSocket protocol. False when it is anything else: h11 reads
        it then, as every other request."""
        handler: DirectHandler | None = self.app_state.get(DIRECT_HANDLER)
        opening = _OPENING_HEAD.match(data)
        if handler is None or opening is None or opening.end() > self.max_head_bytes:
            return False  # (a head past the cap is refused below: 431)
        target, fields = opening.group(1).decode("ascii"), opening.group(2)
        raw_path, _, query = target.partition("?")
        path = unquote(raw_path)
        if not handler.handles(path):
            return False
        headers: dict[str, str] = {}
        for line in fields.decode("latin-1").split("\r\n")[:-1]:
            name, _, value = line.partition(":")
            name, value = name.lower(), value.strip(" \t")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        accept = accept_key(headers)
        if accept is None:
            return False
        self._disarm()
        self.connections.discard(self)
        client = self.client[0] if self.client else None
        config = self.config
        upgrade(
            self.transport,
            handler,
            (path, query, headers, client, accept),
            data[opening.end() :],
            state=self.server_state,
            max_size=config.ws_max_size,
            ping_interval=config.ws_ping_interval,
            ping_timeout=config.ws_ping_timeout,
        )
        return True

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
        self.transport.write(_refusal(status))
        self.transport.close()


def _may_open(head: bytes, max_bytes: int) -> bool:
    """Whether ``head``, an incomplete first request head, may still become an opening
    request the direct path reads: a GET, within the size limits."""
    line_end = head.find(b"\n")
    return (
        head[:5] == _GET[: len(head)]
        and len(head) <= max_bytes
        and (line_end if line_end >= 0 else len(head)) <= MAX_REQUEST_LINE_BYTES
    )


def _refusal(status: HTTPStatus) -> bytes:
    """A complete HTTP/1.1 response carrying an RFC 9457 problem document, closing the
    connection."""
    problem = {"type": "about:blank", "title": status.phrase.lower(), "status": int(status)}
    return problem_response(int(status), problem)


def head_limited_protocol(head_timeout: float, max_head_bytes: int) -> type[HeadLimitedProtocol]:
    """A :class:`HeadLimitedProtocol` subclass with these limits, for uvicorn's ``http=``."""
    return type(
        "HeadLimitedProtocol",
        (HeadLimitedProtocol,),
        {"head_timeout": head_timeout, "max_head_bytes": max_head_bytes},
    )
