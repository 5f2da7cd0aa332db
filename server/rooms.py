"""Rooms: one CRDT document in memory, the connections in it, and the way updates flow.

An accepted update goes: decode -> apply to the document -> append to the journal -> (once
durable) broadcast to every other connection. Broadcasts leave in journal order through one
pipeline per room, so nothing is ever shown to a client before it is durable, including the
sync step 2 a joining client receives.

An invalid update that pycrdt had half-applied before failing taints the document (yrs has no
rollback). The room then holds every incoming message, its owner rebuilds the document from
storage, and the held messages are replayed on the rebuilt document: the bad update leaves
no trace and the other clients only notice a short delay.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pycrdt

from crdt.document import RoomDoc
from crdt.errors import CrdtError, InvalidUpdate
from crdt.ids import RoomName
from crdt.origins import ClientOrigin, ServerOrigin
from crdt.section import section_content
from persistence.errors import StorageError
from persistence.ports import RoomStore
from protocol import awareness as awareness_codec
from protocol.awareness import AwarenessEntry, AwarenessUpdate
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
from server.connection import Connection, Frame, error_event
from server.errors import Overloaded

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


def _send_ack(conn: Connection, updates: int) -> None:
    """Tell ``conn`` that the first ``updates`` update messages it sent are durable."""
    conn.send_event(AppEvent("ack", {"updates": updates}))


REMOTE_OWNER = -1  # the owner of awareness client ids published on other nodes


class RoomHooks(Protocol):
    """What the server adds to rooms: application events, awareness observers."""

    def on_event(self, room: Room, conn: Connection, event: AppEvent) -> bool:
        """Handle an application event (True), or let the room refuse it (False)."""

    def on_awareness(self, room: Room, conn: Connection, entries: list[AwarenessEntry]) -> None:
        """Awareness entries a local connection published, once accepted."""


_IDENTITY_KEYS = ("id", "userId", "email")


def _claims_own_identity(state: str, conn: Connection) -> bool:
    """Whether an awareness state's ``user`` field, if it names a user (``id``, ``userId``
    or ``email``), names the connection's own user. States without such a field (a name and
    a colour, as y-websocket demos send) pass: the server knows who each connection is."""
    principal = conn.principal
    if principal is None or '"user"' not in state:
        return True
    try:
        user = json.loads(state).get("user")
    except (ValueError, AttributeError):
        return True  # not a JSON object: it claims nothing
    if not isinstance(user, dict):
        return True
    own = {"id": principal.user_id, "userId": principal.user_id, "email": principal.email}
    return all(user.get(key) in (None, own[key]) for key in _IDENTITY_KEYS)


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
        on_change: Callable[[RoomName], None] | None = None,
        on_edit: Callable[[Connection, RoomName, int, int], None] | None = None,
        hooks: RoomHooks | None = None,
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
        self.frames_broadcast = 0
        self.failed: BaseException | None = None
        self._store = store
        self._limits = limits
        self._max_awareness_entries = max_awareness_entries
        self._on_failure = on_failure
        self._on_tainted = on_tainted
        self._on_change = on_change
        self._on_edit = on_edit
        self.hooks = hooks
        # The user holding this section's lock (None: unlocked): everyone else is read-only.
        self.locked_by: str | None = None
        # The section's text, for the audit's edit counts (its length before and after each
        # update, inside the update's transaction: cheaper than observing the text, which
        # makes yrs build an event per edit).
        self._text = section_content(doc.doc) if on_edit is not None and name.section_id else None
        self._held: list[tuple[Connection, bytes]] | None = None
        self._held_remote: list[bytes] = []
        self._max_held = max_held_messages
        self._awareness: dict[int, AwarenessEntry] = {}
        self._awareness_owner: dict[int, int] = {}
        self._awareness_out: list[tuple[int, bytes | None, list[AwarenessEntry]]] = []
        self._pipeline: deque[_Step] = deque()
        self._drain_scheduled = False
        self.updates_merged = 0

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
        if self._awareness:
            payload = awareness_codec.encode(AwarenessUpdate(tuple(self._awareness.values())))
            conn.send(Frame(encode(AwarenessMessage(payload))))

    def leave(self, conn: Connection) -> None:
        """Remove a connection and broadcast the removal of the awareness states it owned."""
        if self.connections.pop(conn.id, None) is None:
            return
        # Whatever this connection published this turn goes out before its removal.
        self._flush_awareness()
        removed = []
        for client_id, clock in conn.awareness_clocks.items():
            self._awareness_owner.pop(client_id, None)
            if self._awareness.pop(client_id, None) is not None:
                removed.append(AwarenessEntry(client_id, clock + 1, awareness_codec.REMOVED_STATE))
        if removed:
            payload = awareness_codec.encode(AwarenessUpdate(tuple(removed)))
            self.broadcast(Frame(encode(AwarenessMessage(payload))))
            if self.hooks is not None:
                self.hooks.on_awareness(self, conn, removed)

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
                self._receive_awareness(conn, payload, data)
            case QueryAwareness():
                payload = awareness_codec.encode(AwarenessUpdate(tuple(self._awareness.values())))
                conn.send(Frame(encode(AwarenessMessage(payload))))
            case AuthPermissionDenied():
                log.debug("conn %s room %s: ignoring auth message from client", conn.id, self.key)
            case AppEventMessage(payload=payload):
                self._receive_event(conn, payload)

    def _receive_update(self, conn: Connection, update: bytes) -> None:
        if conn.read_only:
            conn.send(Frame(encode(AuthPermissionDenied("read-only connection"))))
            return
        locked_by = self.locked_by
        if locked_by is not None and (
            conn.principal is None or conn.principal.user_id != locked_by
        ):
            conn.send(Frame(encode(AuthPermissionDenied("section locked by another user"))))
            return
        if self._size_guard is not None:
            refusal = self._size_guard(self, len(update))
            if refusal is not None:
                self._refuse_too_large(conn, refusal)
                return
        try:
            effective = self.doc.apply(update, ClientOrigin(conn.id), self._text)
        except InvalidUpdate:
            if self.doc.tainted:
                log.warning("room %s: invalid update left traces; rebuilding", self.key)
                self._held = []
                self._on_tainted(self)
            raise
        conn.updates_received += 1
        if self._on_edit is not None and effective is not None:
            # The net change of this update: typing inserts or deletes; a replacement
            # counts its difference.
            change = self.doc.length_change if self._text is not None else 0
            self._on_edit(conn, self.name, max(change, 0), max(-change, 0))
        ack = (conn, conn.updates_received) if conn.app_events else None
        if effective is not None:
            self.state_bytes += len(effective)
            self._ship(effective, sender=conn.id, ack=ack)
        elif ack is not None:
            # Nothing new (a duplicate), but the client still learns it is safely stored.
            self._after_durable(lambda: _send_ack(*ack))

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

    def apply_local(self, edit: Callable[[pycrdt.Doc[Any]], object], reason: str) -> bool:
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
        self._ship(effective, sender=None)
        return True

    def _ship(
        self, effective: bytes, sender: int | None, ack: tuple[Connection, int] | None = None
    ) -> None:
        """Journal an effective update, then broadcast it (and acknowledge it to its sender)
        once durable, in order."""
        self.updates_applied += 1
        self.journal_length += 1
        durable = self._store.append(self.key, effective)
        self._pipeline.append(_Step(durable, update=effective, sender=sender, ack=ack))
        if self._on_change is not None:
            self._on_change(self.name)
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
        elif self.hooks is None or not self.hooks.on_event(self, conn, event):
            conn.send_event(
                error_event(
                    4400, "unknown event", f"unknown event type {event.type!r}", fatal=False
                )
            )

    def _receive_awareness(self, conn: Connection, payload: bytes, data: bytes) -> None:
        """Keep and relay the awareness entries this connection may publish.

        y-websocket clients send every awareness change they see, their peers' included, so
        entries for a client id first published by another connection are echoes (or
        spoofing): dropped without closing anything. Stale clocks are dropped too, as
        y-protocols does.
        """
        update = awareness_codec.decode(payload, self._max_awareness_entries)
        owners = self._awareness_owner
        accepted: list[AwarenessEntry] = []
        for entry in update.entries:
            if owners.get(entry.client_id, conn.id) != conn.id:
                continue
            if (
                conn.read_only
                and conn.awareness_clocks
                and entry.client_id not in (conn.awareness_clocks)
            ):
                # A read-only connection publishes for one client id: its own.
                continue
            if not entry.removed and not _claims_own_identity(entry.state, conn):
                conn.send_event(
                    error_event(
                        4403,
                        "awareness refused",
                        "awareness may not claim another user's identity",
                        fatal=False,
                    )
                )
                continue
            if not self._keep_awareness(entry, conn.id):
                continue
            accepted.append(entry)
            if entry.removed:
                conn.awareness_clocks.pop(entry.client_id, None)
            else:
                conn.awareness_clocks[entry.client_id] = entry.clock
        if not accepted:
            return
        if self.hooks is not None:
            self.hooks.on_awareness(self, conn, accepted)
        # The frame was just decoded, so it is well formed: relayable as received.
        self._relay_awareness(
            conn.id, data if len(accepted) == len(update.entries) else None, accepted
        )

    def _keep_awareness(self, entry: AwarenessEntry, owner: int) -> bool:
        """Store (or remove) an entry published by ``owner``; False for a stale clock."""
        current = self._awareness.get(entry.client_id)
        if current is not None and entry.clock < current.clock:
            return False
        if entry.removed:
            self._awareness.pop(entry.client_id, None)
            self._awareness_owner.pop(entry.client_id, None)
        else:
            self._awareness[entry.client_id] = entry
            self._awareness_owner[entry.client_id] = owner
        return True

    def _relay_awareness(
        self, sender: int, raw: bytes | None, accepted: list[AwarenessEntry]
    ) -> None:
        self._awareness_out.append((sender, raw, accepted))
        if len(self._awareness_out) == 1:
            # Relay at the end of this loop turn: a cursor storm then costs one frame per
            # recipient per turn instead of one per cursor move.
            asyncio.get_running_loop().call_soon(self._flush_awareness)

    def _flush_awareness(self) -> None:
        """Relay the awareness accepted this turn: one update alone goes as received to all
        but its sender; several are merged (latest entry per client) into one frame for all
        (y-protocols ignores a client's own state coming back at the same clock)."""
        batch, self._awareness_out = self._awareness_out, []
        if not batch:
            return
        if len(batch) == 1:
            sender, raw, entries = batch[0]
            if raw is None:
                raw = encode(
                    AwarenessMessage(awareness_codec.encode(AwarenessUpdate(tuple(entries))))
                )
            self.broadcast(Frame(raw), exclude=sender)
            return
        latest: dict[int, AwarenessEntry] = {}
        for _, _, entries in batch:
            for entry in entries:
                latest[entry.client_id] = entry
        payload = awareness_codec.encode(AwarenessUpdate(tuple(latest.values())))
        self.broadcast(Frame(encode(AwarenessMessage(payload))))

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

    def apply_remote_awareness(self, payload: bytes) -> None:
        """Awareness relayed from another node: kept (for late joiners) and sent to every
        local client. Its client ids belong to that node: no local connection may use them."""
        update = awareness_codec.decode(payload, self._max_awareness_entries)
        accepted = [
            entry
            for entry in update.entries
            if self._awareness_owner.get(entry.client_id, REMOTE_OWNER) == REMOTE_OWNER
            and self._keep_awareness(entry, REMOTE_OWNER)
        ]
        if accepted:
            self._relay_awareness(REMOTE_OWNER, None, accepted)

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
        self.frames_broadcast += 1

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
                if exc is not None:
                    self.fail(exc)
                    return
            pipeline.popleft()
            if step.update is not None:
                ready.append(step)
                continue
            self._broadcast_updates(ready)
            ready = []
            if step.action is not None:
                step.action()
        self._broadcast_updates(ready)

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
            merged = pycrdt.merge_updates(*(step.update for step in steps if step.update))
            self.updates_merged += len(steps)
            self.broadcast(Frame(encode_update(merged)))
        for step in steps:
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
        return self.doc.diff()
