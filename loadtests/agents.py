"""The scripted clients of a load run, speaking the y-websocket protocol through :mod:`protocol`.

Three roles, from cheapest to most realistic:

* :class:`PassiveListener` only reads which edits each update carries (client ids and
  clocks, :mod:`loadtests.updates`), timestamps them and keeps the raw bytes; at the end it
  applies them to a fresh document to prove it received everything. No CRDT work while the
  run lasts: this is what lets one generator core hold thousands of listeners.
* :class:`ApplyingListener` applies every update to its own pycrdt document, as a browser does.
* :class:`loadtests.writers.Writer` also types: it inserts one character per edit at its
  cursor and, if asked, publishes its cursor through awareness after each edit. In presence
  storms it publishes awareness only. A writer with ``apply_remote`` off keeps what it
  receives like a passive listener and applies it only at the end (its inserts then build on
  its own text only: still valid concurrent edits, at a fraction of the generator's CPU).

Every client answers the server's sync step 1 with the step 2 it is missing, as
``WebsocketProvider`` does. Clients talk through :mod:`loadtests.wire` (a frame parser that
costs a few microseconds per frame); a frame seen by many clients of a worker is decoded once
(:class:`FrameCache`), since the server sends the same bytes to every recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import string
import time
from dataclasses import dataclass
from typing import Any, Final

import pycrdt

from loadtests import wire
from loadtests.plan import Batch, ClientPlan, EditRecords, ReceivedRecords, RoomText
from loadtests.updates import update_ranges
from protocol import awareness as awareness_codec
from protocol.awareness import AwarenessEntry
from protocol.errors import ProtocolError
from protocol.ysync import (
    AuthPermissionDenied,
    AwarenessMessage,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    encode,
)

EMPTY_UPDATE = b"\x00\x00"
ALPHABET = string.ascii_lowercase
MAX_FRAME_BYTES = 64 * 1024 * 1024
# A merged update names a run of clocks; our writers spend one clock per edit, so a run is
# that many edits. Longer runs are not edits of this run (bounded work per frame).
MAX_EDITS_PER_RANGE = 4096
_CACHE_ENTRIES: Final = 50_000

EditKey = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Named:
    """A decoded broadcast frame: what it carries and the edits it names in its room.

    ``kind`` is ``"update"`` (``payload`` is the CRDT update) or ``"awareness"``
    (``entries`` are its awareness entries). ``keys`` name every ``(room, client, clock)``
    it carries; ``lasts`` the last clock per client.
    """

    kind: str
    payload: bytes
    keys: tuple[EditKey, ...]
    lasts: tuple[tuple[int, int], ...]
    entries: tuple[AwarenessEntry, ...] = ()


class FrameCache:
    """Decoded broadcast frames of one worker, keyed by their bytes (bounded)."""

    def __init__(self, track_awareness: bool) -> None:
        self.track_awareness = track_awareness
        self._named: dict[bytes, Named] = {}

    def lookup(self, frame: bytes, room: int, recorder: Recorder) -> Named | None:
        """What the broadcast ``frame`` carries; None if it is not a broadcast (or is bad)."""
        named = self._named.get(frame)
        if named is not None:
            return named
        return self._name(frame, room, recorder)

    def _name(self, frame: bytes, room: int, recorder: Recorder) -> Named | None:
        """Decode ``frame``; cache it if it is an update or awareness broadcast."""
        try:
            message = decode(frame)
        except ProtocolError:
            recorder.error("malformed_frame")
            return None
        named: Named | None = None
        if isinstance(message, SyncUpdate):
            try:
                ranges = update_ranges(message.update)
            except ProtocolError:
                recorder.error("malformed_update")
                return None
            keys = tuple(
                (room, client, clock)
                for client, start, end in ranges
                for clock in range(start, min(end, start + MAX_EDITS_PER_RANGE))
            )
            lasts = tuple((client, end - 1) for client, _, end in ranges)
            named = Named("update", message.update, keys, lasts)
        elif isinstance(message, AwarenessMessage):
            try:
                entries = awareness_codec.decode(message.payload).entries
            except ProtocolError:
                recorder.error("malformed_awareness")
                return None
            if self.track_awareness:
                keys = tuple((room, entry.client_id, entry.clock) for entry in entries)
                lasts = tuple((entry.client_id, entry.clock) for entry in entries)
            else:
                keys, lasts = (), ()
            named = Named("awareness", message.payload, keys, lasts, entries)
        else:
            return None
        if len(self._named) >= _CACHE_ENTRIES:
            self._named.clear()
        self._named[frame] = named
        return named


class Recorder:
    """What the clients of one worker saw since the last batch: edits, frames, errors."""

    def __init__(self, worker: int, *, track_awareness: bool = False) -> None:
        self.worker = worker
        self.sends = EditRecords()
        self.deliveries = EditRecords()
        self.received: dict[EditKey, list[float]] = {}
        self.frames = 0
        self.frames_in_window = 0
        self.window: tuple[float, float] | None = None
        self.errors: dict[str, int] = {}
        self.connected = 0
        self.cache = FrameCache(track_awareness)
        self.texts: dict[tuple[bytes, ...], str] = {}

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
            received=ReceivedRecords.of(self.received),
        )
        self.sends = EditRecords()
        self.deliveries = EditRecords()
        self.received = {}
        self.frames = 0
        self.errors = {}
        return batch

    def text_of(self, updates: list[bytes]) -> str:
        """The text of a document made of ``updates``; identical lists are applied once."""
        key = tuple(updates)
        text = self.texts.get(key)
        if text is None:
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            # Twice: a resynced listener received some broadcasts before the state that
            # precedes them, and pycrdt integrates such held-back updates only once they are
            # delivered again after the gap is filled (the xfail of
            # tests/unit/crdt/test_crdt_outline.py). Applying an update again is harmless.
            for _ in range(2):
                with doc.transaction():
                    for update in updates:
                        doc.apply_update(update)
            text = self.texts[key] = str(doc.get("content", type=pycrdt.Text))
        return text


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
        self.handshake_seconds = 0.0
        self.sync_seconds = 0.0
        self.awareness: dict[int, tuple[int, str]] = {}
        self._seen: dict[int, int] = {}
        self._missing: dict[int, int] | None = None
        self._ws: wire.WireProtocol | None = None
        self._closing = False
        self._resyncing = False
        self._waiter: tuple[int, int, asyncio.Future[None]] | None = None
        self._seen_at_drop: dict[int, int] = {}
        self._since_drop: set[tuple[int, int]] = set()

    @property
    def client_id(self) -> int | None:
        """The CRDT client id this agent edits as (None: it never edits)."""
        return None

    async def connect(self, timeout: float) -> float:
        """Open the socket and complete the sync handshake; return the seconds it took.

        Raises TimeoutError, OSError or wire.HandshakeError; the caller classifies.
        """
        started = time.monotonic()
        self.synced.clear()
        async with asyncio.timeout(timeout):
            ws = await wire.connect(self.url, self._on_message, timeout)
            opened = time.monotonic()
            self._ws = ws
            ws.closed.add_done_callback(self._on_closed)
            await ws.send(encode(SyncStep1(self.state_vector())))
            await self.synced.wait()
        done = time.monotonic()
        self.handshake_seconds = opened - started
        self.sync_seconds = done - opened
        self.connected = True
        self.recorder.connected += 1
        return done - started

    def _on_closed(self, closed: asyncio.Future[int]) -> None:
        if self.connected:
            self.connected = False
            self.recorder.connected -= 1
        if not self._closing:
            self.recorder.error(f"closed_by_server_{closed.result()}")
        self.caught_up.set()

    def _on_message(self, data: bytes | None, when: float) -> None:
        recorder = self.recorder
        recorder.frame(when)
        if data is None:
            recorder.error("text_frame")
            return
        named = recorder.cache.lookup(data, self.plan.room, recorder)
        if named is None:
            self._handle(data)
        elif named.kind == "update":
            self._apply(named.payload)
            self._credit(named, when)
        elif recorder.cache.track_awareness:
            self._awareness(named, when)

    def _handle(self, data: bytes) -> None:
        """Frames that are not broadcasts: the sync handshake, auth, odd messages."""
        try:
            message = decode(data)
        except ProtocolError:
            return  # counted by FrameCache.lookup
        match message:
            case SyncStep2(update=update):
                self._apply(update)
                if self._resyncing:
                    self._resynced(update)
                self.synced.set()
            case SyncStep1(state_vector=state_vector):
                if self._ws is not None:
                    with contextlib.suppress(wire.WireClosedError):
                        self._ws.send_now(encode(SyncStep2(self.missing_for(state_vector))))
            case AuthPermissionDenied():
                self.recorder.error("permission_denied")
            case _:
                self.recorder.error(f"unexpected_{type(message).__name__}")

    def _credit(self, named: Named, when: float) -> None:
        """Record every edit the frame carries: one, or several if the server merged them.

        A server that merges updates may send a writer its own edits back (CRDTs ignore
        them); those are not deliveries.
        """
        own = self.client_id
        received = self.recorder.received
        if self._resyncing:
            self._since_drop.update((key[1], key[2]) for key in named.keys)
        for key in named.keys:
            if key[1] == own:
                continue
            times = received.get(key)
            if times is None:
                received[key] = [when]
            else:
                times.append(when)
        for client, last in named.lasts:
            if client != own:
                self._saw(client, last)

    def _resynced(self, update: bytes) -> None:
        """After a reconnect, the step 2 carries what was missed: credit the edits that came
        after the drop and did not already arrive as updates (broadcasts can overtake it)."""
        self._resyncing = False
        try:
            ranges = update_ranges(update)
        except ProtocolError:
            self.recorder.error("malformed_update")
            return
        own = self.client_id
        room = self.plan.room
        when = time.monotonic()
        received = self.recorder.received
        before, self._seen_at_drop = self._seen_at_drop, {}
        since, self._since_drop = self._since_drop, set()
        for client, start, end in ranges:
            if client == own:
                continue
            first = max(start, before.get(client, -1) + 1)
            for clock in range(first, min(end, first + MAX_EDITS_PER_RANGE)):
                if (client, clock) not in since:
                    received.setdefault((room, client, clock), []).append(when)
            if end > first:
                self._saw(client, end - 1)

    def _awareness(self, named: Named, when: float) -> None:
        """An awareness entry supersedes every earlier clock of its client (y-protocols keeps
        only the latest state), so a server that merges a storm of cursor moves delivers all
        the moves up to that clock at once: credit them all."""
        received = self.recorder.received
        room = self.plan.room
        for entry in named.entries:
            client = entry.client_id
            if client == self.client_id:
                continue
            current = self.awareness.get(client)
            if current is None or current[0] <= entry.clock:
                self.awareness[client] = (entry.clock, entry.state)
            seen = self._seen.get(client)
            first = (
                entry.clock if seen is None else max(seen + 1, entry.clock - MAX_EDITS_PER_RANGE)
            )
            for clock in range(first, entry.clock + 1):
                received.setdefault((room, client, clock), []).append(when)
            self._saw(client, entry.clock)

    def _saw(self, client: int, clock: int) -> None:
        seen = self._seen
        if seen.get(client, -1) < clock:
            seen[client] = clock
        waiter = self._waiter
        if (
            waiter is not None
            and client == waiter[0]
            and clock >= waiter[1]
            and not waiter[2].done()
        ):
            waiter[2].set_result(None)
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

    async def wait_seen(self, client: int, clock: int) -> None:
        """Wait until an edit of ``client`` at ``clock`` or later has arrived (no timeout)."""
        if self._seen.get(client, -1) >= clock:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter = (client, clock, future)
        try:
            await future
        finally:
            self._waiter = None

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

    def awareness_text(self) -> str:
        """The awareness states this client ends with, as a canonical text: without the
        ``collab`` field a collab server adds to relayed states (its verified identity), which
        a client's own copy of its state lacks."""
        return canonical_awareness({client: state for client, (_, state) in self.awareness.items()})

    # -- reconnect storms -----------------------------------------------------------------

    def drop(self) -> None:
        """Lose the connection without a closing handshake, as a network failure does."""
        if self._ws is None:
            return
        self._closing = True
        self._seen_at_drop = dict(self._seen)
        if self.connected:
            self.connected = False
            self.recorder.connected -= 1
        self._ws.abort()

    async def come_back(self, timeout: float) -> float:
        """Reconnect and resync from this client's state; returns the seconds it took."""
        self._closing = False
        self._resyncing = True
        return await self.connect(timeout)

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
        """Send a binary message; raises wire.WireClosedError once the connection is gone."""
        if self._ws is None:
            raise wire.WireClosedError(1006)
        await self._ws.send(data)

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()


class PassiveListener(Agent):
    """Names the edits of each update without applying it; rebuilds the text at the end."""

    def __init__(self, plan: ClientPlan, base_url: str, query: str, recorder: Recorder) -> None:
        super().__init__(plan, base_url, query, recorder)
        self._updates: list[bytes] = []

    def receive_update(self, update: bytes) -> None:
        self._updates.append(update)

    def final_text(self) -> str:
        return self.recorder.text_of(self._updates)


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


def canonical_awareness(states: dict[int, str]) -> str:
    """Awareness states as a canonical text, each as its client wrote it."""
    return json.dumps(sorted((client, _client_part(state)) for client, state in states.items()))


def _client_part(state: str) -> str:
    """An awareness state as its client wrote it: the server-set ``collab`` field removed."""
    try:
        value = json.loads(state)
    except ValueError:
        return state
    if isinstance(value, dict):
        value.pop("collab", None)
    return json.dumps(value, sort_keys=True)
