"""Rooms: one CRDT document in memory, the connections in it, and the way updates flow.

An accepted update goes: decode -> apply to the document -> append to the journal -> (once
durable) broadcast to every other connection. Broadcasts leave in journal order through one
pipeline per room, so nothing is ever shown to a client before it is durable, including the
sync step 2 a joining client receives.

An invalid update that pycrdt had half-applied before failing taints the document (yrs has no
rollback). The room then holds every incoming message, its owner rebuilds the document from
storage, and the held messages are replayed on the rebuilt document: the bad update leaves
no trace and the other clients only notice a short delay.

Awareness (the states clients publish, who owns each client id, the relay batched per loop
turn) is the room's :class:`~server.realtime.room_awareness.RoomAwareness`; the room fires
``on_awareness`` for what it accepts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

from crdt.document import CrdtDoc, RoomDoc, merge_updates
from crdt.errors import CrdtError, InvalidUpdate
from crdt.ids import RoomName
from crdt.origins import ClientOrigin, ServerOrigin
from crdt.section import section_content
from persistence.errors import DocumentFrozen, StorageError
from persistence.latency import FANOUT
from persistence.rooms.ports import RoomStore
from protocol.errors import MalformedMessage, ProtocolError
from protocol.events import AppEvent, decode_event
from protocol.ysync import (
    AppEventMessage,
    AuthPermissionDenied,
    AwarenessMessage,
    Limits,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    decode,
    encode,
    encode_update,
)
from server.errors import Overloaded
from server.hooks import AwarenessAccepted, Changed, Edited, Hooks
from server.realtime.connection import Connection, Frame, error_event
from server.realtime.room_awareness import RoomAwareness

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Step:
    """One entry of the room's ordered output pipeline: an update to broadcast once its
    journal write is durable, or an action to run once everything before it is."""

    durable: asyncio.Future[None] | None
    update: bytes | None = None
    sender: int | None = None
    action: Callable[[], None] | None = None
    ack: tuple[Connection, int] | None = None
    author: Connection | None = None  # the connection that sent the update, if any
    received: float = 0.0  # perf_counter() when a client's update arrived (0: not a client's)


def _send_ack(conn: Connection, updates: int) -> None:
    """Tell ``conn`` that the first ``updates`` update messages it sent are durable."""
    conn.send_event(AppEvent("ack", {"updates": updates}))


class Room:
    """The live state of one room. Every method is synchronous: the room never awaits."""

    def __init__(
        self,
        name: RoomName,
        doc: RoomDoc,
        store: RoomStore,
        *,
        limits: Limits,
        max_awareness_entries: int,
        on_failure: Callable[[Room, BaseException], None],
        on_tainted: Callable[[Room], None],
        hooks: Hooks | None = None,
        journal_length: int = 0,
        max_held_messages: int = 10_000,
        state_bytes: int = 0,
        size_guard: Callable[[Room, int], str | None] | None = None,
    ) -> None:
        self.name = name
        self.key = str(name)
        self.doc = doc
        self.connections: dict[int, Connection] = {}
        self.journal_length = journal_length
        # The encoded size of the document, estimated: exact when measured, plus the length
        # of every effective update since (see measure_state).
        self.state_bytes = state_bytes
        self._size_guard = size_guard
        self.updates_applied = 0
        self._frames_sent = 0  # by broadcast; the awareness counts its own
        self.failed: BaseException | None = None
        self._store = store
        self._limits = limits
        self._on_failure = on_failure
        self._on_tainted = on_tainted
        hooks = hooks or Hooks()
        self._hooks = hooks
        self._on_change = hooks.on_change
        self._changed = Changed(name)  # the one payload of every change of this room
        self._on_edit = hooks.on_edit
        # The user holding this section's lock (None: unlocked): everyone else is read-only.
        self.locked_by: str | None = None
        # The section's text, for the audit's edit counts (its length before and after each
        # update, inside the update's transaction: cheaper than observing the text, which
        # makes yrs build an event per edit).
        self._text = section_content(doc.doc) if hooks.on_edit and name.section_id else None
        self._held: list[tuple[Connection, bytes]] | None = None
        self._held_remote: list[bytes] = []
        self._max_held = max_held_messages
        self._awareness = RoomAwareness(self.connections, max_awareness_entries)
        self._pipeline: deque[_Step] = deque()
        self._drain_scheduled = False
        self.updates_merged = 0

    @property
    def frames_broadcast(self) -> int:
        """How many frames the room has broadcast (each encoded once), awareness included."""
        return self._frames_sent + self._awareness.frames_broadcast

    def __repr__(self) -> str:
        return f"<Room {self.key!r} connections={len(self.connections)}>"

    # -- membership -----------------------------------------------------------------------

    def join(self, conn: Connection) -> None:
        """Add a connection and start the sync: our step 1, then the known awareness states."""
        self.connections[conn.id] = conn
        conn.send_event(
            AppEvent(
                "joined", {"room": self.key, "connection": conn.id, "readOnly": conn.read_only}
            )
        )
        conn.send(Frame(encode(SyncStep1(self.doc.state_vector()))))
        if self._awareness.states:
            conn.send(self._awareness.frame())

    def leave(self, conn: Connection) -> None:
        """Remove a connection and broadcast the removal of the awareness states it owned."""
        if self.connections.pop(conn.id, None) is None:
            return
        # Whatever this connection published this turn goes out before its removal.
        removed = self._awareness.leave(conn)
        if removed and self._hooks.on_awareness:
            self._hooks.on_awareness.fire(AwarenessAccepted(self, conn, removed))

    # -- incoming messages ----------------------------------------------------------------

    def receive(self, conn: Connection, data: bytes) -> None:
        """Handle one binary frame from ``conn``.

        Raises ProtocolError or InvalidUpdate for bad input; the document, the other
        connections and the store are then untouched.
        """
        if self._held is not None:
            if len(self._held) >= self._max_held:
                raise Overloaded("room is being rebuilt; too many messages waiting")
            self._held.append((conn, data))
            return
        message = decode(data, self._limits)
        match message:
            case SyncStep1(state_vector=state_vector):
                reply = Frame(encode(SyncStep2(self.doc.diff(state_vector))))
                self._after_durable(lambda: conn.send(reply))
            case SyncStep2(update=update) | SyncUpdate(update=update):
                self._receive_update(conn, update)
            case AwarenessMessage(payload=payload):
                self._receive_awareness(conn, payload)
            case QueryAwareness():
                conn.send(self._awareness.frame())
            case AuthPermissionDenied():
                log.debug("conn %s room %s: ignoring auth message from client", conn.id, self.key)
            case AppEventMessage(payload=payload):
                self._receive_event(conn, payload)

    def _receive_update(self, conn: Connection, update: bytes) -> None:
        # Every update message counts, refused ones too: an ack settles a prefix of what the
        # connection sent (stored, or refused for good with the reason it was told), so the
        # client's count never drifts from ours.
        received = perf_counter()  # collab_fanout_seconds starts here: one read per update
        conn.updates_received += 1
        refusal = self._refusal(conn, len(update))
        if refusal is not None:
            if conn.app_events:
                settled = (conn, conn.updates_received)
                self._after_durable(lambda: _send_ack(*settled))
            return
        try:
            effective = self.doc.apply(update, ClientOrigin(conn.id), self._text)
        except InvalidUpdate:
            if self.doc.tainted:
                log.warning("room %s: invalid update left traces; rebuilding", self.key)
                self._held = []
                self._on_tainted(self)
            raise
        if effective is not None and self._on_edit:
            # The net change of this update: typing inserts or deletes; a replacement
            # counts its difference.
            change = self.doc.length_change if self._text is not None else 0
            self._on_edit.fire(Edited(conn, self.name, max(change, 0), max(-change, 0)))
        ack = (conn, conn.updates_received) if conn.app_events else None
        if effective is not None or self.doc.held_back:
            # What the client sent is journaled as sent: it holds the effective update, and
            # whatever yrs keeps pending for a missing dependency, which the effective update
            # lacks and which an acknowledgement must cover all the same. An effective update
            # other than what was sent holds edits the sender lacks (a held-back update it
            # completed): it goes to the sender too.
            self.state_bytes += len(update)
            sender = conn.id if effective == update else None
            self._ship(update, effective, sender=sender, ack=ack, author=conn, received=received)
        elif ack is not None:
            # Nothing new (a duplicate), but the client still learns it is safely stored.
            self._after_durable(lambda: _send_ack(*ack))

    def _refusal(self, conn: Connection, size: int) -> str | None:
        """Why an update from ``conn`` of ``size`` bytes is refused (None: it may be applied);
        the connection has been told (y-protocols permission denied)."""
        if conn.read_only:
            conn.send(Frame(encode(AuthPermissionDenied("read-only connection"))))
            return "read-only"
        locked_by = self.locked_by
        if locked_by is not None and (
            conn.principal is None or conn.principal.user_id != locked_by
        ):
            conn.send(Frame(encode(AuthPermissionDenied("section locked by another user"))))
            return "locked"
        if self._size_guard is not None:
            too_large = self._size_guard(self, size)
            if too_large is not None:
                self._refuse_too_large(conn, too_large)
                return too_large
        return None

    def _refuse_too_large(self, conn: Connection, reason: str) -> None:
        """Drop an update that would take the room or its document past the size caps; the
        connection stays open and is told (y-protocols permission denied, and an error event
        with code 4413 to clients that take events)."""
        log.warning("conn %s room %s: update refused: %s", conn.id, self.key, reason)
        conn.send(Frame(encode(AuthPermissionDenied(reason))))
        conn.send_event(error_event(4413, "document too large", reason, fatal=False))

    def measure_state(self) -> int:
        """Measure the document's encoded size exactly (one full encode), reset
        :attr:`state_bytes` to it and return it."""
        self.state_bytes = len(self.doc.diff())
        return self.state_bytes

    def apply_local(self, edit: Callable[[CrdtDoc], object], reason: str) -> bool:
        """Make a server-side edit (creation on join, REST, restore) and ship it like a
        client's: journal first, then broadcast to everyone. Returns whether it changed
        anything. Exceptions from ``edit`` propagate; the document must then be unchanged.
        """
        doc = self.doc.doc
        with doc.transaction(origin=ServerOrigin(reason)):
            edit(doc)
        effective = self.doc.local_changes()
        if effective is None:
            return False
        self.state_bytes += len(effective)
        self._ship(effective, effective)
        return True

    def _ship(
        self,
        journaled: bytes,
        shown: bytes | None,
        sender: int | None = None,
        ack: tuple[Connection, int] | None = None,
        author: Connection | None = None,
        received: float = 0.0,
    ) -> None:
        """Journal ``journaled``; once it is durable, in order, broadcast ``shown`` (to all but
        ``sender``; nothing when None) and acknowledge it to ``ack``'s connection.
        ``author``: the connection it came from (None for the server's own edits);
        ``received``: when its frame arrived (``perf_counter()``), for the fan-out latency."""
        if shown is not None:
            self.updates_applied += 1
        self.journal_length += 1
        durable = self._store.append(self.key, journaled)
        self._pipeline.append(
            _Step(durable, shown, sender, ack=ack, author=author, received=received)
        )
        self._on_change.fire(self._changed)
        if not durable.done():
            durable.add_done_callback(self._drain)
        elif not self._drain_scheduled:
            # Drain once at the end of this loop turn, so that the updates of every client
            # read in this turn leave as one merged frame.
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _receive_event(self, conn: Connection, payload: bytes) -> None:
        if not conn.app_events:
            raise MalformedMessage("application events need the ?events=1 query flag")
        event = decode_event(payload)
        if event.type == "ping":
            conn.send_event(AppEvent("pong", {"id": event.get("id")}))
        else:
            handler = self._hooks.on_event.get(event.type)
            if handler is None:
                conn.send_event(
                    error_event(
                        4400, "unknown event", f"unknown event type {event.type!r}", fatal=False
                    )
                )
            else:
                handler(self, conn, event)

    def apply_remote(self, update: bytes) -> None:
        """An update another node journaled (it is durable already): apply it and relay it
        to every local client, in order with what this room is still sending."""
        if self._held is not None:
            self._held_remote.append(update)  # rebuilding: applied once the doc is back
            return
        try:
            effective = self.doc.apply(update, ServerOrigin("remote"))
        except InvalidUpdate:
            log.error("room %s: an update from another node was rejected", self.key)
            if self.doc.tainted:
                self._held = []
                self._on_tainted(self)
            return
        if effective is None:
            return
        self.state_bytes += len(effective)
        self.updates_applied += 1
        self._pipeline.append(_Step(None, update=effective, sender=None))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _receive_awareness(self, conn: Connection, payload: bytes) -> None:
        """Keep and relay what :meth:`RoomAwareness.receive` accepts (it states what is
        raised), firing ``on_awareness`` before the relay."""
        accepted = self._awareness.receive(conn, payload)
        if not accepted:
            return
        if self._hooks.on_awareness:
            self._hooks.on_awareness.fire(AwarenessAccepted(self, conn, accepted))
        self._awareness.relay(conn.id, accepted)

    def apply_remote_awareness(self, payload: bytes) -> None:
        """Awareness relayed from another node (see :meth:`RoomAwareness.apply_remote`)."""
        self._awareness.apply_remote(payload)

    def replace_doc(self, doc: RoomDoc) -> None:
        """Swap in a rebuilt document (closing the tainted one) and replay the messages held
        meanwhile, in order."""
        tainted, self.doc = self.doc, doc
        tainted.close()
        if self._text is not None:
            self._text = section_content(doc.doc)
        held, self._held = self._held or [], None
        remote, self._held_remote = self._held_remote, []
        for update in remote:
            self.apply_remote(update)
        for conn, data in held:
            if conn.id not in self.connections:
                continue
            try:
                self.receive(conn, data)
            except (ProtocolError, CrdtError, Overloaded) as exc:
                conn.fail(exc)

    # -- output ---------------------------------------------------------------------------

    def broadcast(self, frame: Frame, exclude: int | None = None) -> None:
        """Send one frame to every connection but ``exclude``; encodes it at most once."""
        for conn_id, conn in self.connections.items():
            if conn_id != exclude:
                conn.send(frame)
        self._frames_sent += 1

    def _after_durable(self, action: Callable[[], None]) -> None:
        """Run ``action`` once everything appended so far is durable (at once if it is)."""
        if not self._pipeline:
            action()
        else:
            self._pipeline.append(_Step(None, action=action))

    def _drain(self, _: object = None) -> None:
        """Send, in order, everything at the head of the pipeline that is durable."""
        self._drain_scheduled = False
        pipeline = self._pipeline
        ready: list[_Step] = []
        while pipeline:
            step = pipeline[0]
            if step.durable is not None:
                if not step.durable.done():
                    break
                exc = step.durable.exception()
                if isinstance(exc, DocumentFrozen):
                    pipeline.popleft()
                    self._refused_frozen(step, exc)
                    continue
                if exc is not None:
                    self.fail(exc)
                    return
            pipeline.popleft()
            if step.update is not None:
                ready.append(step)
                continue
            if step.ack is not None:
                # Journaled, nothing to show yet (held back for a missing dependency): the
                # acknowledgement still leaves in order with the updates before it.
                self._broadcast_updates(ready)
                ready = []
                _send_ack(*step.ack)
                continue
            self._broadcast_updates(ready)
            ready = []
            if step.action is not None:
                step.action()
        self._broadcast_updates(ready)

    def _refused_frozen(self, step: _Step, exc: DocumentFrozen) -> None:
        """The journal refused an update: its document went into review (on another node,
        after this one applied the update). Nothing of it was shown or acknowledged; every
        connection turns read-only, the sender is closed (4409: its unacknowledged edits were
        not stored, it resyncs read-only), and the document is rebuilt from storage so the
        refused update leaves no trace."""
        log.info("room %s: an update was refused, the document is in review", self.key)
        for conn in list(self.connections.values()):
            if not conn.read_only:
                conn.read_only = True
                conn.send(
                    Frame(encode(AuthPermissionDenied("read-only: the document is in review")))
                )
        if step.author is not None:
            step.author.fail(exc)
        if self._held is None:
            self._held = []
            self._on_tainted(self)

    def _broadcast_updates(self, steps: list[_Step]) -> None:
        """One update goes to all but its sender; several are merged into one frame for all
        (the senders receive their own edits back, which CRDTs ignore) - one frame per
        recipient instead of one per update, the dominant cost of a busy room."""
        if not steps:
            return
        if len(steps) == 1:
            step = steps[0]
            assert step.update is not None
            self.broadcast(Frame(encode_update(step.update)), exclude=step.sender)
        else:
            merged = merge_updates(*(step.update for step in steps if step.update))
            self.updates_merged += len(steps)
            self.broadcast(Frame(encode_update(merged)))
        # The fan-out of these updates is written: one clock read for all of them.
        sent = perf_counter()
        for step in steps:
            if step.received:
                FANOUT.observe(sent - step.received)
            if step.ack is not None:
                _send_ack(*step.ack)

    def fail(self, exc: BaseException) -> None:
        """The journal refused a write: nothing more may be shown from this room's memory.

        Every client is closed (1011) and the room is dropped; clients keep their edits and
        send them again when they reconnect to a freshly loaded room.
        """
        if self.failed is not None:
            return
        self.failed = exc
        log.error("room %s: journal write failed, closing the room: %s", self.key, exc)
        self._pipeline.clear()
        for conn in list(self.connections.values()):
            conn.fail(exc if isinstance(exc, StorageError) else StorageError(str(exc)))
        self._on_failure(self, exc)

    async def flushed(self) -> None:
        """Wait until every queued journal write has completed (successfully or not)."""
        pending = [step.durable for step in self._pipeline if step.durable is not None]
        if pending:
            await asyncio.wait(pending)

    def full_state(self) -> bytes:
        """The document as one update for storage, including updates held back for missing
        dependencies (see :meth:`crdt.document.RoomDoc.full_state`)."""
        return self.doc.full_state()
