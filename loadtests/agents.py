"""The scripted clients of a load run, speaking the y-websocket protocol through :mod:`protocol`.

Three roles, from cheapest to most realistic:

* :class:`PassiveListener` only reads which edits each update carries (client ids and
  clocks, :mod:`loadtests.updates`), timestamps them and keeps the raw bytes; at the end it
  applies them to a fresh document to prove it received everything. No CRDT work while the
  run lasts: this is what lets one generator core hold thousands of listeners.
* :class:`ApplyingListener` applies every update to its own pycrdt document, as a browser does.
* :class:`Writer` also types: it inserts one character per edit at its cursor and, if asked,
  publishes its cursor through awareness after each edit.

Every client answers the server's sync step 1 with the step 2 it is missing, as
``WebsocketProvider`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import string
import time
from typing import Any

import pycrdt
import websockets
from websockets.asyncio.client import ClientConnection

from loadtests.plan import Batch, ClientPlan, EditRecords, RoomText
from loadtests.updates import update_header, update_ranges
from protocol import awareness as awareness_codec
from protocol.awareness import AwarenessEntry, AwarenessUpdate
from protocol.errors import ProtocolError
from protocol.ysync import (
    AuthPermissionDenied,
    AwarenessMessage,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    encode,
    encode_update,
)

EMPTY_UPDATE = b"\x00\x00"
_ALPHABET = string.ascii_lowercase
MAX_FRAME_BYTES = 64 * 1024 * 1024
# A merged update names a run of clocks; our writers spend one clock per edit, so a run is
# that many edits. Longer runs are not edits of this run (bounded work per frame).
MAX_EDITS_PER_RANGE = 4096


class Recorder:
    """What the clients of one worker saw since the last batch: edits, frames, errors."""

    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.sends = EditRecords()
        self.deliveries = EditRecords()
        self.frames = 0
        self.frames_in_window = 0
        self.window: tuple[float, float] | None = None
        self.errors: dict[str, int] = {}
        self.connected = 0

    def frame(self, when: float) -> None:
        self.frames += 1
        window = self.window
        if window is not None and window[0] <= when <= window[1]:
            self.frames_in_window += 1

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def take(self) -> Batch:
        """The batch of everything recorded since the previous call."""
        batch = Batch(
            worker=self.worker,
            sent=time.monotonic(),
            connected=self.connected,
            sends=self.sends,
            deliveries=self.deliveries,
            frames=self.frames,
            errors=self.errors,
        )
        self.sends = EditRecords()
        self.deliveries = EditRecords()
        self.frames = 0
        self.errors = {}
        return batch


async def sleep_until(deadline: float) -> None:
    """Sleep until ``time.monotonic() >= deadline``.

    uvloop's timers have a millisecond resolution and may fire a little early, so one
    ``asyncio.sleep`` is not enough to be past a deadline.
    """
    for _ in range(100):
        delay = deadline - time.monotonic()
        if delay <= 0:
            return
        await asyncio.sleep(delay)


def text_digest(text: str) -> RoomText:
    return RoomText(hashlib.blake2b(text.encode(), digest_size=16).hexdigest(), len(text))


class Agent:
    """One WebSocket connection to one room. Subclasses decide what to do with updates."""

    def __init__(self, plan: ClientPlan, base_url: str, query: str, recorder: Recorder) -> None:
        self.plan = plan
        self.url = f"{base_url}/{plan.room_name}" + (f"?{query}" if query else "")
        self.recorder = recorder
        self.connected = False
        self.synced = asyncio.Event()
        self.caught_up = asyncio.Event()
        self._seen: dict[int, int] = {}
        self._missing: dict[int, int] | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def client_id(self) -> int | None:
        """The CRDT client id this agent edits as (None: it never edits)."""
        return None

    async def connect(self, timeout: float) -> float:
        """Open the socket and complete the sync handshake; return the seconds it took.

        Raises TimeoutError, OSError or websockets.InvalidHandshake; the caller classifies.
        """
        started = time.monotonic()
        async with asyncio.timeout(timeout):
            self._ws = await websockets.connect(
                self.url,
                compression=None,
                max_size=MAX_FRAME_BYTES,
                ping_interval=None,
                open_timeout=None,
                close_timeout=2,
            )
            self._reader = asyncio.create_task(self._read(), name=f"reader {self.plan.index}")
            await self._ws.send(encode(SyncStep1(self.state_vector())))
            await self.synced.wait()
        self.connected = True
        self.recorder.connected += 1
        return time.monotonic() - started

    async def _read(self) -> None:
        ws = self._ws
        assert ws is not None
        recorder = self.recorder
        try:
            async for data in ws:
                when = time.monotonic()
                recorder.frame(when)
                if isinstance(data, str):
                    recorder.error("text_frame")
                    continue
                await self._handle(data, when)
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.connected:
                self.connected = False
                recorder.connected -= 1
            if not self._closing:
                recorder.error(f"closed_by_server_{ws.close_code}")
            self.caught_up.set()

    async def _handle(self, data: bytes, when: float) -> None:
        try:
            message = decode(data)
        except ProtocolError:
            self.recorder.error("malformed_frame")
            return
        match message:
            case SyncUpdate(update=update):
                self._delivered(update, when)
            case SyncStep2(update=update):
                self._apply(update)
                self.synced.set()
            case SyncStep1(state_vector=state_vector):
                assert self._ws is not None
                await self._ws.send(encode(SyncStep2(self.missing_for(state_vector))))
            case AuthPermissionDenied():
                self.recorder.error("permission_denied")
            case AwarenessMessage():
                pass  # counted as a frame; cursors are not checked
            case _:
                self.recorder.error(f"unexpected_{type(message).__name__}")

    def _delivered(self, update: bytes, when: float) -> None:
        """Record every edit the update carries: one, or several if the server merged them.

        A server that merges updates may send a writer its own edits back (CRDTs ignore
        them); those are not deliveries.
        """
        try:
            ranges = update_ranges(update)
        except ProtocolError:
            self.recorder.error("malformed_update")
            return
        self._apply(update)
        own = self.client_id
        deliveries = self.recorder.deliveries
        room = self.plan.room
        for client, start, end in ranges:
            if client == own:
                continue
            for clock in range(start, min(end, start + MAX_EDITS_PER_RANGE)):
                deliveries.add(room, client, clock, when)
            self._saw(client, end - 1)

    def _saw(self, client: int, clock: int) -> None:
        seen = self._seen
        if seen.get(client, -1) < clock:
            seen[client] = clock
        missing = self._missing
        if missing is not None and missing.get(client, clock + 1) <= clock:
            del missing[client]
            if not missing:
                self.caught_up.set()

    def _apply(self, update: bytes) -> None:
        try:
            self.receive_update(update)
        except (ValueError, RuntimeError):
            # pycrdt's errors for bytes it cannot decode or integrate.
            self.recorder.error("invalid_update")

    def expect(self, last_clocks: dict[int, int]) -> None:
        """Set ``caught_up`` once each writer's edit at ``last_clocks[writer]`` has arrived.

        Its own edits are never sent back to a client, so its own id is left out. A closed
        client is caught up at once: it will receive nothing more.
        """
        seen = self._seen
        self._missing = missing = {
            client: clock
            for client, clock in last_clocks.items()
            if client != self.client_id and seen.get(client, -1) < clock
        }
        if not missing or not self.connected:
            self.caught_up.set()

    # -- what subclasses provide ----------------------------------------------------------

    def state_vector(self) -> bytes:
        return b"\x00"

    def missing_for(self, state_vector: bytes) -> bytes:
        return EMPTY_UPDATE

    def receive_update(self, update: bytes) -> None:
        raise NotImplementedError

    def final_text(self) -> str:
        raise NotImplementedError

    # -- sending and closing --------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        assert self._ws is not None
        await self._ws.send(data)

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(OSError, websockets.ConnectionClosed):
                await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class PassiveListener(Agent):
    """Names the edits of each update without applying it; rebuilds the text at the end."""

    def __init__(self, plan: ClientPlan, base_url: str, query: str, recorder: Recorder) -> None:
        super().__init__(plan, base_url, query, recorder)
        self._updates: list[bytes] = []

    def receive_update(self, update: bytes) -> None:
        self._updates.append(update)

    def final_text(self) -> str:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        with doc.transaction():
            for update in self._updates:
                doc.apply_update(update)
        return str(doc.get("content", type=pycrdt.Text))


class ApplyingListener(Agent):
    """Applies every update to its own document, as a browser tab would."""

    def __init__(self, plan: ClientPlan, base_url: str, query: str, recorder: Recorder) -> None:
        super().__init__(plan, base_url, query, recorder)
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc()
        self.text = self.doc.get("content", type=pycrdt.Text)

    def state_vector(self) -> bytes:
        state: bytes = self.doc.get_state()
        return state

    def missing_for(self, state_vector: bytes) -> bytes:
        update: bytes = self.doc.get_update(state_vector)
        return update

    def receive_update(self, update: bytes) -> None:
        self.doc.apply_update(update)

    def final_text(self) -> str:
        return str(self.text)


class Writer(ApplyingListener):
    """Types one character per edit at its own cursor; optionally publishes the cursor."""

    def __init__(self, plan: ClientPlan, base_url: str, query: str, recorder: Recorder) -> None:
        super().__init__(plan, base_url, query, recorder)
        self._local: list[bytes] = []
        self._remote = False
        self._cursor = 0
        self._awareness_clock = 0
        self._char = _ALPHABET[plan.index % len(_ALPHABET)]
        self.last_clock: int | None = None
        self.schedule_lag: list[float] = []
        self.doc.observe(self._on_transaction)

    @property
    def client_id(self) -> int:
        return int(self.doc.client_id)

    def _on_transaction(self, event: pycrdt.TransactionEvent) -> None:
        if not self._remote:
            self._local.append(event.update)

    def receive_update(self, update: bytes) -> None:
        self._remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._remote = False

    def place_cursor(self, fraction: float) -> None:
        self._cursor = int(len(self.text) * fraction)

    async def edit(self, cursor: bool) -> None:
        """Insert one character at the cursor, send the update, then the cursor if asked."""
        position = min(self._cursor, len(self.text))
        self.text.insert(position, self._char)
        self._cursor = position + 1
        update = self._local.pop()
        self._local.clear()
        edit = update_header(update)
        assert edit is not None, "a single insert always carries one struct"
        when = time.monotonic()
        await self.send(encode_update(update))
        self.recorder.sends.add(self.plan.room, edit[0], edit[1], when)
        self.last_clock = edit[1]
        if cursor:
            await self.send(self._awareness_frame(position + 1))

    def _awareness_frame(self, index: int) -> bytes:
        self._awareness_clock += 1
        state = json.dumps(
            {"user": {"name": f"writer-{self.plan.index}"}, "cursor": {"anchor": index}},
            separators=(",", ":"),
        )
        entry = AwarenessEntry(self.client_id, self._awareness_clock, state)
        payload = awareness_codec.encode(AwarenessUpdate((entry,)))
        return encode(AwarenessMessage(payload))

    async def type_until(self, t_start: float, t_end: float, rate: float, cursor: bool) -> None:
        """Edit at ``rate`` per second from ``t_start`` (plus a phase) until ``t_end``.

        Open loop: a late edit is sent at once and the schedule is kept, so a slow server
        shows up as latency, not as fewer edits. ``schedule_lag`` records how late each was.
        """
        interval = 1.0 / rate
        due = t_start + interval * ((self.plan.index * 0.618034) % 1.0)
        while due < t_end and self.connected:
            await sleep_until(due)
            now = time.monotonic()
            if now >= t_end:
                break  # the timer fired late: every edit stays inside the measured window
            self.schedule_lag.append(max(0.0, now - due))
            try:
                await self.edit(cursor)
            except websockets.ConnectionClosed:
                self.recorder.error("send_failed")
                return
            due += interval


def make_agent(plan: ClientPlan, base_url: str, query: str, recorder: Recorder) -> Agent:
    if plan.role == "writer":
        return Writer(plan, base_url, query, recorder)
    if plan.role == "applying":
        return ApplyingListener(plan, base_url, query, recorder)
    return PassiveListener(plan, base_url, query, recorder)
