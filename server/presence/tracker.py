"""Presence and cursors: who is in each document, in which section, and where their cursor is.

Presence follows the connections. Each connection that joins a room is recorded in the
coordinator's presence registry (``collab:{documentId}:users``) under this node's id, and
removed when it closes. One heartbeat per node, every ``ttl / 3`` seconds, keeps every entry
of the node alive: a node that dies takes its users with it at most ``ttl`` seconds later, on
every other node. A heartbeat that finds the node's liveness lapsed (the node stalled) joins
every live connection again.

Cursors come from the y-protocols awareness the connections publish. The awareness observer
runs on every cursor move, so it only notes the connection's latest state (O(1)); a flusher
writes the cursors of the connections that moved at most once per ``CURSOR_INTERVAL``,
parsing each state once per write, and skips values that did not change. The coordinator
drops a user's cursor with their last connection in the section.

Joins and leaves go to the coordinator through one ordered queue, so that a connection that
joins and leaves at once never leaves an entry behind. Clients that take application events
get ``presence`` events when a user joins the document, moves to another section, or leaves
it (their last connection, on any node), on every node (``Collab.emit``).

:class:`PresenceTracker` is the node's side of the coordinator (no Collab in it, so tests
drive it with an in-process coordinator and a fake clock); :func:`install` wires it to the
app's observers. ``GET /api/documents/{id}/presence`` is in :mod:`server.api.presence`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from persistence.coordinator.ports import Coordinator
from persistence.errors import StorageError
from protocol.errors import ProtocolError
from protocol.events import AppEvent
from protocol.jsontext import parse_json
from server.hooks import AwarenessAccepted, Disconnected, Hooks, Joined
from server.realtime.awareness import MAX_STATE_BYTES, MAX_STATE_DEPTH
from server.realtime.hub import Hub

log = logging.getLogger(__name__)

# Seconds a node's entries outlive its last heartbeat (tests patch it before starting a server).
PRESENCE_TTL = 15.0
# At most one cursor write per connection per this many seconds.
CURSOR_INTERVAL = 0.25
# Cursor writes sent to the coordinator at once.
CURSOR_BATCH = 32

Action = Literal["joined", "left", "moved"]


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """A user joined the document, moved to another section, or left it."""

    action: Action
    document_id: str
    section_id: str | None
    user_id: str
    name: str


@dataclass(slots=True)
class _Member:
    """One local connection as presence knows it."""

    document_id: str
    section_id: str | None
    user_id: str
    name: str
    joined: bool = False  # its coordinator entry is written


def cursor_of(state: str | None) -> Any:
    """The ``cursor`` of an awareness state (a JSON string), None when it carries none or
    is not bounded JSON (rooms refuse such states; this guards the cursor writer anyway, so
    one connection's state can never stop the others' cursors). Never raises."""
    if state is None or '"cursor"' not in state:
        return None
    try:
        value = parse_json(state, max_depth=MAX_STATE_DEPTH, max_bytes=MAX_STATE_BYTES)
    except ProtocolError:
        return None
    return value.get("cursor") if isinstance(value, dict) else None


@dataclass(slots=True)
class _Here:
    """One user's connections to one document on this node, and how many are in each
    section (so that a join learns in O(1) whether the user is already there)."""

    connections: dict[str, str | None] = field(default_factory=dict)
    sections: Counter[str | None] = field(default_factory=Counter)

    def add(self, connection_id: str, section_id: str | None) -> None:
        self.remove(connection_id)
        self.connections[connection_id] = section_id
        self.sections[section_id] += 1

    def remove(self, connection_id: str) -> bool:
        """Forget the connection; whether it was here."""
        if connection_id not in self.connections:
            return False
        section_id = self.connections.pop(connection_id)
        self.sections[section_id] -= 1
        if not self.sections[section_id]:
            del self.sections[section_id]
        return True


class PresenceTracker:
    """This node's presence and cursors in the coordinator.

    The synchronous methods (:meth:`joined`, :meth:`left`, :meth:`awareness`) never await:
    they queue work that :meth:`run` does (or :meth:`drain` and :meth:`flush_cursors`, for
    tests that drive it step by step). ``clock`` must tick like the coordinator's.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        node_id: str,
        *,
        ttl: float = PRESENCE_TTL,
        cursor_interval: float = CURSOR_INTERVAL,
        on_change: Callable[[PresenceChange], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._presence = coordinator.presence
        self._cursors = coordinator.cursors
        self.node_id = node_id
        self.ttl = ttl
        self._cursor_interval = cursor_interval
        self._on_change = on_change
        self._clock = clock
        self.members: dict[str, _Member] = {}
        # (document, user) -> their connections here, as of the operations done so far.
        self._present: dict[tuple[str, str], _Here] = {}
        self._ops: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._states: dict[str, str | None] = {}
        self._dirty: dict[str, None] = {}
        self._written: dict[str, str] = {}
        self._cursor_wakeup = asyncio.Event()
        self._refreshed = -math.inf
        self._stale = False
        self.stopping = False

    # -- the hot side: synchronous, O(1) ---------------------------------------------------

    def joined(
        self,
        connection_id: str,
        document_id: str,
        section_id: str | None,
        user_id: str,
        name: str,
    ) -> None:
        """A local connection joined a room of the document."""
        member = _Member(document_id, section_id, user_id, name)
        self.members[connection_id] = member
        self._ops.put_nowait(lambda: self._join(connection_id, member))

    def left(self, connection_id: str) -> None:
        """A local connection closed."""
        member = self.members.pop(connection_id, None)
        self._states.pop(connection_id, None)
        self._dirty.pop(connection_id, None)
        self._written.pop(connection_id, None)
        if member is not None and not self.stopping:
            self._ops.put_nowait(lambda: self._leave(connection_id, member))

    def awareness(self, connection_id: str, state: str | None) -> None:
        """The connection's latest awareness state (None: removed); written later."""
        if connection_id not in self.members:
            return
        self._states[connection_id] = state
        if connection_id not in self._dirty:
            self._dirty[connection_id] = None
            self._cursor_wakeup.set()

    def names(self) -> dict[str, str]:
        """The names of the users with local connections."""
        return {member.user_id: member.name for member in self.members.values()}

    # -- the ordered queue ----------------------------------------------------------------

    async def drain(self) -> None:
        """Do every queued join and leave now, in order."""
        while not self._ops.empty():
            await self._run_op(self._ops.get_nowait())

    async def _run_op(self, op: Callable[[], Awaitable[None]]) -> None:
        try:
            await op()
        except StorageError as exc:
            log.warning("presence: coordinator unavailable: %s", exc)

    async def _join(self, connection_id: str, member: _Member) -> None:
        if self.members.get(connection_id) is not member:
            return  # it closed before its turn: nothing to write
        if math.isfinite(self._refreshed) and self._refreshed + self.ttl * 2 / 3 < self._clock():
            # The heartbeat is late: a join would revive a lapsed node silently and its
            # other entries would be gone, so beat first and re-join them if so.
            await self._beat(rejoin_inline=True)
        try:
            await self._presence.join(
                member.document_id,
                member.section_id,
                member.user_id,
                self.node_id,
                connection_id,
                self.ttl,
            )
        except StorageError:
            self._stale = True  # the next heartbeat joins everyone again
            raise
        self._refreshed = self._clock()
        member.joined = True
        key = (member.document_id, member.user_id)
        here = self._present.setdefault(key, _Here())
        others = bool(here.connections)
        in_section = member.section_id in here.sections
        here.add(connection_id, member.section_id)
        if others:
            if not in_section:
                self._report("moved", member)
            return
        remote = [
            entry
            for entry in await self._presence.members(member.document_id)
            if entry.user_id == member.user_id and entry.node_id != self.node_id
        ]
        if not remote:
            self._report("joined", member)
        elif member.section_id not in {entry.section_id for entry in remote}:
            self._report("moved", member)

    async def _leave(self, connection_id: str, member: _Member) -> None:
        key = (member.document_id, member.user_id)
        here = self._present.get(key)
        was_joined = here is not None and here.remove(connection_id)  # False: join skipped
        if here is not None and not here.connections:
            del self._present[key]
        await self._presence.leave(member.document_id, self.node_id, connection_id)
        if (here is not None and here.connections) or not was_joined:
            return
        entries = await self._presence.members(member.document_id)
        if not any(entry.user_id == member.user_id for entry in entries):
            self._report("left", member)

    async def _rejoin_all(self) -> None:
        """Join every live connection again (the node's entries were dropped)."""
        for connection_id, member in list(self.members.items()):
            if self.members.get(connection_id) is not member:
                continue
            await self._presence.join(
                member.document_id,
                member.section_id,
                member.user_id,
                self.node_id,
                connection_id,
                self.ttl,
            )
            member.joined = True
        self._stale = False
        # Their cursors went with the entries: write them again.
        self._written.clear()
        for connection_id in self._states:
            self._dirty[connection_id] = None
        if self._dirty:
            self._cursor_wakeup.set()

    def _report(self, action: Action, member: _Member) -> None:
        if self._on_change is None:
            return
        change = PresenceChange(
            action, member.document_id, member.section_id, member.user_id, member.name
        )
        try:
            self._on_change(change)
        except Exception:
            log.exception("presence: reporting %s failed", change)

    # -- the heartbeat --------------------------------------------------------------------

    async def heartbeat_once(self) -> bool:
        """One heartbeat; a lapsed node queues a re-join of its connections. Returns whether
        the node was alive."""
        return await self._beat(rejoin_inline=False)

    async def _beat(self, *, rejoin_inline: bool) -> bool:
        known = math.isfinite(self._refreshed)  # not the node's first contact
        alive = await self._presence.heartbeat(self.node_id, self.ttl)
        self._refreshed = self._clock()
        if not alive and known and self.members:
            log.warning("presence: node %s had lapsed; joining its connections again", self.node_id)
        if not alive or self._stale:
            if rejoin_inline:
                await self._rejoin_all()
            else:
                self._ops.put_nowait(self._rejoin_all)
        return alive

    # -- cursors --------------------------------------------------------------------------

    async def flush_cursors(self) -> None:
        """Write the cursors of the connections whose awareness changed since the last
        flush (one coordinator write per connection at most; unchanged values skipped)."""
        batch, self._dirty = list(self._dirty), {}
        waiting: list[str] = []
        writes: list[tuple[str, _Member, Any, str | None]] = []
        for connection_id in batch:
            member = self.members.get(connection_id)
            if member is None:
                continue
            if not member.joined:
                waiting.append(connection_id)  # its entry is not written yet: next round
                continue
            value = cursor_of(self._states.get(connection_id))
            encoded = None if value is None else json.dumps(value, sort_keys=True)
            if encoded != self._written.get(connection_id):
                writes.append((connection_id, member, value, encoded))
        for start in range(0, len(writes), CURSOR_BATCH):
            chunk = writes[start : start + CURSOR_BATCH]
            await asyncio.gather(*(self._write_cursor(*write) for write in chunk))
        for connection_id in waiting:
            self._dirty[connection_id] = None
        if waiting:
            self._cursor_wakeup.set()

    async def _write_cursor(
        self, connection_id: str, member: _Member, value: Any, encoded: str | None
    ) -> None:
        document_id, section_id, user_id = member.document_id, member.section_id, member.user_id
        try:
            if encoded is None:
                await self._cursors.remove(document_id, section_id, user_id)
                self._written.pop(connection_id, None)
                return
            try:
                stored = await self._cursors.set(document_id, section_id, user_id, value)
            except ValueError as exc:  # not plain JSON, or over the size limit: ignored
                log.debug("presence: cursor of connection %s refused: %s", connection_id, exc)
                stored = True
        except StorageError as exc:
            log.warning("presence: cursor not written: %s", exc)
            return
        if stored and self.members.get(connection_id) is member:
            self._written[connection_id] = encoded

    # -- the tasks ------------------------------------------------------------------------

    async def run(self) -> None:
        """Do the queued work, heartbeat and write cursors until cancelled; then remove
        this node's entries from the coordinator."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._work(), name="presence queue")
                tasks.create_task(self._heartbeats(), name="presence heartbeat")
                tasks.create_task(self._flush_cursors_forever(), name="cursor writer")
        finally:
            self.stopping = True
            try:
                dropped = await self._presence.drop_node(self.node_id)
                log.info("presence: node %s left (%d entries dropped)", self.node_id, dropped)
            except StorageError as exc:  # the coordinator may be gone already
                log.warning("presence: could not drop node %s: %s", self.node_id, exc)

    async def _work(self) -> None:
        while True:
            op = await self._ops.get()
            try:
                await self._run_op(op)
            except Exception:
                log.exception("presence: queued operation failed")

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.heartbeat_once()
            except StorageError as exc:
                log.warning("presence: heartbeat failed: %s", exc)
            except Exception:
                log.exception("presence: heartbeat failed")

    async def _flush_cursors_forever(self) -> None:
        while True:
            await self._cursor_wakeup.wait()
            self._cursor_wakeup.clear()
            try:
                await self.flush_cursors()
            except Exception:
                log.exception("presence: writing cursors failed")
            # The throttle: whatever moves meanwhile is coalesced into the next round.
            await asyncio.sleep(self._cursor_interval)


# -- the app side ----------------------------------------------------------------------------


def _event(change: PresenceChange) -> AppEvent:
    return AppEvent(
        "presence",
        {
            "action": change.action,
            "user": change.user_id,
            "name": change.name,
            "section": change.section_id,
        },
    )


def install(
    hooks: Hooks,
    hub: Hub,
    coordinator: Coordinator,
    node_id: str,
    tasks: asyncio.TaskGroup,
) -> Presence:
    """Track presence and cursors of every connection of ``hub`` (through ``hooks``); tell
    clients. The caller stops it at shutdown (:meth:`Presence.stop`)."""
    tracker = PresenceTracker(
        coordinator,
        node_id,
        ttl=PRESENCE_TTL,
        cursor_interval=CURSOR_INTERVAL,
        on_change=lambda change: hub.emit(change.document_id, _event(change)),
    )

    def on_join(joined: Joined) -> None:
        conn, room = joined.conn, joined.room
        principal = conn.principal
        if conn.closing or principal is None:
            return
        name = principal.name or principal.email
        tracker.joined(
            str(conn.id), room.name.document_id, room.name.section_id, principal.user_id, name
        )

    def on_disconnect(left: Disconnected) -> None:
        tracker.left(str(left.conn.id))

    def on_awareness(accepted: AwarenessAccepted) -> None:
        if accepted.entries:
            last = accepted.entries[-1]
            tracker.awareness(str(accepted.conn.id), None if last.removed else last.state)

    hooks.on_join.subscribe(on_join)
    hooks.on_disconnect.subscribe(on_disconnect)
    hooks.on_awareness.subscribe(on_awareness)
    task = tasks.create_task(tracker.run(), name="presence")

    return Presence(tracker, task)


@dataclass(frozen=True, slots=True)
class Presence:
    """The installed presence feature: its tracker and the task that runs it."""

    tracker: PresenceTracker
    task: asyncio.Task[None]

    def stop(self) -> None:
        """Stop tracking (at shutdown: the task removes this node's entries as it ends)."""
        self.tracker.stopping = True
        self.task.cancel()
