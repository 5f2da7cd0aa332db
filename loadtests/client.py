"""A scripted y-websocket client built on :mod:`protocol` and pycrdt.

It speaks exactly what a browser's ``WebsocketProvider`` speaks: sync step 1 and 2 on
connect, incremental updates, awareness. Tests and the load tool use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pycrdt
import websockets
from websockets.asyncio.client import ClientConnection

from protocol import awareness as awareness_codec
from protocol.awareness import AwarenessEntry, AwarenessUpdate
from protocol.ysync import (
    AuthPermissionDenied,
    AwarenessMessage,
    Message,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    encode,
)


class YClient:
    """One connection to one room, with its own pycrdt document (root text ``content``)."""

    def __init__(
        self,
        base_url: str,
        room: str,
        *,
        query: str = "",
        token: str | None = None,
        headers: dict[str, str] | None = None,
        doc: pycrdt.Doc[Any] | None = None,
        source: str | None = None,
    ) -> None:
        """``doc``: continue with an existing document (a client reconnecting elsewhere
        keeps its edits and sends what the server lacks). ``source``: the local address to
        connect from (another loopback address stands for another machine)."""
        if token is not None:
            query = f"{query}&token={token}" if query else f"token={token}"
        self.url = f"{base_url}/{room}" + (f"?{query}" if query else "")
        self.headers = headers or {}
        self.source = source
        self.room = room
        self.doc: pycrdt.Doc[Any] = doc if doc is not None else pycrdt.Doc()
        self.text = self.doc.get("content", type=pycrdt.Text)
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.received: list[Message] = []
        self.awareness: dict[int, str] = {}
        self.denied: list[str] = []
        self.on_message: Callable[[Message], None] | None = None
        self._changed = asyncio.Condition()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._local: list[bytes] = []
        self._awareness_clock = 0
        self._remote = False
        # The document observed (callers may swap ``doc``) and the subscription to release.
        self._observed: tuple[pycrdt.Doc[Any], pycrdt.Subscription] | None = None
        self._observe()

    def _observe(self) -> None:
        self._observed = (self.doc, self.doc.observe(self._on_transaction))

    @property
    def client_id(self) -> int:
        return int(self.doc.client_id)

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if not self._remote:
            self._local.append(event.update)

    def _connect_options(self) -> dict[str, Any]:
        """Passed on to the event loop's ``create_connection``."""
        return {"local_addr": (self.source, 0)} if self.source else {}

    async def connect(self, timeout: float = 10.0) -> YClient:
        """Open the socket and send sync step 1; ``synced`` is set on the server's step 2."""
        if self._observed is None:
            self._observe()
        self._ws = await asyncio.wait_for(
            websockets.connect(
                self.url,
                max_size=None,
                compression=None,
                additional_headers=self.headers,
                **self._connect_options(),
            ),
            timeout,
        )
        self._reader = asyncio.create_task(self._read(), name=f"reader {self.url}")
        with contextlib.suppress(websockets.ConnectionClosed):
            # A server refusing the room may close before our step 1 goes out; the reader
            # records the close code.
            await self.send(SyncStep1(self.doc.get_state()))
        return self

    async def send(self, message: Message) -> None:
        assert self._ws is not None
        await self._ws.send(encode(message))

    async def send_raw(self, data: bytes | str) -> None:
        assert self._ws is not None
        await self._ws.send(data)

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for data in self._ws:
                assert isinstance(data, bytes)
                await self._handle(decode(data))
        except websockets.ConnectionClosed:
            pass
        finally:
            if self._ws.close_code is not None:
                self.close_code = self._ws.close_code
                self.close_reason = self._ws.close_reason or ""
            self.closed.set()
            async with self._changed:
                self._changed.notify_all()

    async def _handle(self, message: Message) -> None:
        self.received.append(message)
        if self.on_message is not None:
            self.on_message(message)
        match message:
            case SyncStep1(state_vector=state_vector):
                await self.send(SyncStep2(self.doc.get_update(state_vector)))
            case SyncStep2(update=update):
                self._apply(update)
                self.synced.set()
            case SyncUpdate(update=update):
                self._apply(update)
            case AwarenessMessage(payload=payload):
                for entry in awareness_codec.decode(payload).entries:
                    if entry.removed:
                        self.awareness.pop(entry.client_id, None)
                    else:
                        self.awareness[entry.client_id] = entry.state
            case AuthPermissionDenied(reason=reason):
                self.denied.append(reason)
            case _:
                pass
        async with self._changed:
            self._changed.notify_all()

    def _apply(self, update: bytes) -> None:
        self._remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._remote = False

    async def insert(self, index: int, chunk: str) -> None:
        """Insert text locally and send the update."""
        self.text.insert(index, chunk)
        await self.flush()

    async def delete(self, index: int, length: int) -> None:
        del self.text[index : index + length]
        await self.flush()

    async def flush(self) -> None:
        """Send the updates of local edits made directly on ``doc``/``text``."""
        local, self._local = self._local, []
        for update in local:
            await self.send(SyncUpdate(update))

    async def set_awareness(self, state: str) -> None:
        self._awareness_clock += 1
        entry = AwarenessEntry(self.client_id, self._awareness_clock, state)
        await self.send(AwarenessMessage(awareness_codec.encode(AwarenessUpdate((entry,)))))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checked after every received message."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate() or self.closed.is_set())
        if not predicate():
            raise AssertionError(f"connection closed ({self.close_code}) before the condition")

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def close(self) -> None:
        """Close the socket and release the document's observer (a pycrdt Doc with an
        observer is never freed); the document stays readable and can reconnect."""
        if self._observed is not None:
            doc, subscription = self._observed
            self._observed = None
            doc.unobserve(subscription)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def __aenter__(self) -> YClient:
        await self.connect()
        await asyncio.wait_for(self.synced.wait(), 10)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def now() -> float:
    return time.perf_counter()
