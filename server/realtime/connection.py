"""One client socket, as its room sees it: frames go out, and it can be closed.

Sending never awaits the client. On the direct path a frame is written to the socket's
transport at once (:class:`server.realtime.direct.FanoutWriter`) and the transport's buffer is
the outbox; on any other ASGI server frames go through a queue drained by a writer task. Either
way, a client whose backlog passes ``max_buffered_bytes`` is closed with 1013 and resyncs when
it reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from protocol.events import AppEvent, encode_event
from protocol.ysync import AppEventMessage, encode
from server.errors import UNEXPECTED, ServerShuttingDown, SlowConsumer, classify, close_reason
from server.identity.authentication import Principal
from server.ops import counters
from server.realtime.direct import FanoutWriter, binary_frame

log = logging.getLogger(__name__)
_traffic = counters.traffic

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class _Close:
    code: int
    reason: str


class Frame:
    """A message to send: its y-protocols bytes, and the WebSocket frame built at most once."""

    __slots__ = ("_wire", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._wire: bytes | None = None

    @property
    def wire(self) -> bytes:
        if self._wire is None:
            self._wire = binary_frame(self.payload)
        return self._wire


def error_event(code: int, title: str, detail: str, *, fatal: bool) -> AppEvent:
    """The ``error`` application event (see docs/protocol.md)."""
    return AppEvent("error", {"code": code, "title": title, "detail": detail, "fatal": fatal})


class Connection:
    """A client of one room. Created by the endpoint, registered with the room on join."""

    # Thousands of these are alive at once: slots keep each one small.
    __slots__ = (
        "_closing",
        "_fast",
        "_max_buffered",
        "_outbox",
        "_queued_bytes",
        "_websocket",
        "app_events",
        "awareness_clocks",
        "id",
        "on_close",
        "principal",
        "read_only",
        "right",
        "room_name",
        "updates_received",
    )

    def __init__(
        self,
        room_name: str,
        *,
        max_buffered_bytes: int,
        fast: FanoutWriter | None = None,
        websocket: WebSocket | None = None,
        app_events: bool = False,
        read_only: bool = False,
        principal: Principal | None = None,
    ) -> None:
        """Give ``fast`` (direct path) or ``websocket`` (ASGI fallback, drained by
        :meth:`run_writer`)."""
        if fast is None and websocket is None:
            raise ValueError("a connection needs a fan-out writer or a websocket")
        self.id = next(_ids)
        self.room_name = room_name
        self.app_events = app_events
        self.read_only = read_only
        self.principal = principal
        self.right = 0  # the server.identity.rights.Right the connection was last granted
        self.awareness_clocks: dict[int, int] = {}
        self.updates_received = 0
        self._websocket = websocket
        self._max_buffered = max_buffered_bytes
        self._fast = fast
        # Only the fallback path queues; with the fan-out extension the transport buffers.
        self._outbox: asyncio.Queue[bytes | _Close] | None = (
            asyncio.Queue() if self._fast is None else None
        )
        self._queued_bytes = 0
        self._closing: _Close | None = None
        self.on_close: Callable[[Connection], None] | None = None

    @property
    def closing(self) -> bool:
        return self._closing is not None

    @property
    def direct(self) -> bool:
        """Whether the socket is on the direct path (else the ASGI route)."""
        return self._fast is not None

    def __repr__(self) -> str:
        return f"<Connection {self.id} room={self.room_name!r}>"

    def send(self, frame: Frame) -> None:
        """Queue a frame for this client without waiting; closes a client too far behind."""
        if self._closing is not None:
            return
        fast = self._fast
        if fast is not None:
            if not fast.write(frame.wire, self._max_buffered):
                self.fail(SlowConsumer(f"more than {self._max_buffered} bytes unsent"))
                return
            _traffic.bytes_out += len(frame.payload)
            return
        assert self._outbox is not None
        self._queued_bytes += len(frame.payload)
        if self._queued_bytes > self._max_buffered:
            self.fail(SlowConsumer(f"more than {self._max_buffered} bytes unsent"))
            return
        _traffic.bytes_out += len(frame.payload)
        self._outbox.put_nowait(frame.payload)

    def send_event(self, event: AppEvent) -> None:
        """Send an application event, if this client asked for them (``?events=1``)."""
        if self.app_events:
            self.send(Frame(encode(AppEventMessage(encode_event(event)))))

    def fail(self, exc: BaseException) -> None:
        """Close this connection because of ``exc``, with the code the error table gives.

        A client that takes application events first gets an ``error`` event saying why.
        """
        kind = classify(exc)
        reason = close_reason(exc)
        counters.refused(exc)
        if kind is UNEXPECTED:
            log.error("conn %s room %s: internal error", self.id, self.room_name, exc_info=exc)
        elif isinstance(exc, ServerShuttingDown):
            log.info("conn %s room %s: closing %d: %s", self.id, self.room_name, 1012, exc)
        else:
            log.warning(
                "conn %s room %s: closing %d: %s", self.id, self.room_name, kind.close_code, exc
            )
        if not isinstance(exc, SlowConsumer):
            self.send_event(error_event(kind.close_code, kind.title, reason, fatal=True))
        self.close(kind.close_code, reason)

    def close(self, code: int, reason: str = "", *, gone: bool = False) -> None:
        """Close the socket with ``code``; the connection leaves its room at once. Idempotent.
        ``gone``: the client closed it already (counted as the client's close, not ours)."""
        if self._closing is not None:
            return
        self._closing = _Close(code, reason)
        if not gone:
            counters.closes[code] += 1
        # Fired once, then dropped: the close chain holds the room, and a closed connection
        # may live on in a reference cycle with its transport until a full collection.
        on_close, self.on_close = self.on_close, None
        if on_close is not None:
            on_close(self)
        if self._fast is not None:
            self._fast.close(code, reason)
            return
        assert self._outbox is not None
        # Drop the backlog: a closing client resyncs from scratch anyway.
        while not self._outbox.empty():
            self._outbox.get_nowait()
        self._outbox.put_nowait(self._closing)

    async def run_writer(self) -> None:
        """Drain the outbox until a close is requested; then close the socket."""
        websocket = self._websocket
        assert self._outbox is not None
        assert websocket is not None
        try:
            while True:
                item = await self._outbox.get()
                if isinstance(item, _Close):
                    await websocket.close(item.code, item.reason)
                    return
                self._queued_bytes -= len(item)
                await websocket.send_bytes(item)
        except (OSError, RuntimeError, WebSocketDisconnect) as exc:
            # The peer is gone; the reader sees the disconnect and ends the connection.
            log.debug("conn %s room %s: writer stopped: %r", self.id, self.room_name, exc)
