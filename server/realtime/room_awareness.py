"""A room's awareness: the states its clients publish, who owns each client id, and the relay.

y-protocols awareness gives every client id a state and a clock; the room keeps the latest
state per client id (for late joiners), the connection that published it while it is open,
the user a client id belongs to (:class:`~server.realtime.awareness.ClientIdOwners`: no other
user may publish for it), and the clock of recent removals, so an echo of an older state
arriving after a removal cannot bring the state back. What is accepted in one loop turn is
relayed once, at the end of the turn (one frame per recipient per turn, whatever the cursor
storm). Every method is synchronous.
"""

from __future__ import annotations

import asyncio

from protocol import awareness as awareness_codec
from protocol.awareness import AwarenessEntry, AwarenessUpdate
from protocol.ysync import AwarenessMessage, encode
from server.realtime.awareness import (
    AwarenessRefused,
    ClientIdOwners,
    identity_of_state,
    stamp_state,
)
from server.realtime.connection import Connection, Frame, error_event

# The owner of awareness client ids published on other nodes.
REMOTE_OWNER = -1

# Removed client ids whose removal clock a room remembers (the oldest are forgotten first).
MAX_REMOVED_CLOCKS = 4096


def _user_key(conn: Connection) -> str:
    """Who owns the awareness client ids ``conn`` publishes: its user (or, without a
    principal, the connection alone)."""
    principal = conn.principal
    return principal.user_id if principal is not None else f"connection {conn.id}"


class RoomAwareness:
    """The awareness of one room (see the module docstring).

    ``connections`` is the room's own dict of open connections (read, never changed, except
    for the clocks a connection keeps of the client ids it publishes). It holds no reference
    to the room, so a room stays free of reference cycles and its document is freed as soon
    as the room is dropped; :attr:`frames_broadcast` counts the frames it sent.
    """

    def __init__(self, connections: dict[int, Connection], max_entries: int) -> None:
        self._connections = connections
        self._max_entries = max_entries
        self.frames_broadcast = 0
        self.states: dict[int, AwarenessEntry] = {}
        self._owner: dict[int, int] = {}  # client id -> connection, while open
        self._users = ClientIdOwners()  # client id -> user, as long as remembered
        # client id -> the clock of its removal, as y-protocols keeps it: an echo of an older
        # state arriving after the removal must not bring the state back.
        self._removed: dict[int, int] = {}
        self._out: list[tuple[int, list[AwarenessEntry]]] = []

    def _broadcast(self, frame: Frame, exclude: int | None) -> None:
        """Send one frame to every connection but ``exclude`` (as ``Room.broadcast``)."""
        for conn_id, conn in self._connections.items():
            if conn_id != exclude:
                conn.send(frame)
        self.frames_broadcast += 1

    def frame(self) -> Frame:
        """Every known state as one awareness frame (for a joining or querying client)."""
        payload = awareness_codec.encode(AwarenessUpdate(tuple(self.states.values())))
        return Frame(encode(AwarenessMessage(payload)))

    def leave(self, conn: Connection) -> list[AwarenessEntry]:
        """``conn`` left the room (already out of ``connections``): relay what it published
        this turn, then the removal of the states it owned; returns those removals."""
        self.flush()
        removed = []
        for client_id, clock in conn.awareness_clocks.items():
            self._owner.pop(client_id, None)
            if self.states.pop(client_id, None) is not None:
                removed.append(AwarenessEntry(client_id, clock + 1, awareness_codec.REMOVED_STATE))
                self._note_removal(client_id, clock + 1)
        if removed:
            payload = awareness_codec.encode(AwarenessUpdate(tuple(removed)))
            self._broadcast(Frame(encode(AwarenessMessage(payload))), None)
        return removed

    def receive(self, conn: Connection, payload: bytes) -> list[AwarenessEntry]:
        """Keep the awareness entries this connection may publish, each state stamped with
        the connection's verified identity (:mod:`server.realtime.awareness`), and return
        them: the caller fires ``on_awareness`` and then :meth:`relay` s them.

        Raises MalformedMessage (JsonTooDeep included) or MessageTooLarge when an entry's
        state is not bounded JSON: nothing of the message is then kept or relayed. Entries
        for client ids another user owns are dropped (y-websocket clients echo every change
        they see, so a stale one is normal; a newer one is a takeover attempt and gets a
        non-fatal error event), and so are stale clocks, as y-protocols does.
        """
        update = awareness_codec.decode(payload, self._max_entries)
        staged: list[AwarenessEntry] = []
        refusals: list[AwarenessRefused] = []
        for entry in update.entries:
            if not self._may_publish(conn, entry, refusals):
                continue
            if not entry.removed:
                try:
                    stamped = stamp_state(entry.state, conn.principal)
                except AwarenessRefused as exc:
                    refusals.append(exc)
                    continue
                entry = AwarenessEntry(entry.client_id, entry.clock, stamped)
            staged.append(entry)
        for code, detail in dict.fromkeys((exc.code, str(exc)) for exc in refusals):
            conn.send_event(error_event(code, "awareness refused", detail, fatal=False))
        return [entry for entry in staged if self._accept(conn, entry)]

    def _accept(self, conn: Connection, entry: AwarenessEntry) -> bool:
        """Store an entry :meth:`_may_publish` allowed; False for a stale clock."""
        previous = self._owner.get(entry.client_id)
        if previous is not None and previous != conn.id:
            # The same user's other connection (a reconnect the server has not seen close
            # yet): the id moves over to this one.
            self.states.pop(entry.client_id, None)
            other = self._connections.get(previous)
            if other is not None:
                other.awareness_clocks.pop(entry.client_id, None)
        if self._stale_after_removal(conn, entry) or not self._keep(entry, conn.id):
            return False
        self._users.claim(entry.client_id, _user_key(conn))
        if entry.removed:
            conn.awareness_clocks.pop(entry.client_id, None)
        else:
            conn.awareness_clocks[entry.client_id] = entry.clock
        return True

    def _may_publish(
        self, conn: Connection, entry: AwarenessEntry, refusals: list[AwarenessRefused]
    ) -> bool:
        """Whether ``conn`` may publish ``entry``'s client id (appends to ``refusals`` the
        reason to tell the client, for a takeover attempt)."""
        client_id = entry.client_id
        if conn.read_only and conn.awareness_clocks and client_id not in conn.awareness_clocks:
            # A read-only connection publishes for one client id: its own.
            return False
        live = self._owner.get(client_id)
        owner = self._users.owner(client_id)
        user = _user_key(conn)
        if live is None or live == conn.id:
            if owner is None or owner == user:
                return True
        elif owner == user:
            current = self.states.get(client_id)
            # The same user on another connection: a newer clock moves the id over; an
            # older or equal one is an echo of what the server relayed.
            return current is None or entry.clock > current.clock
        current = self.states.get(client_id)
        if entry.removed or (current is not None and entry.clock <= current.clock):
            return False  # an echo of another user's state (or of its removal)
        refusals.append(
            AwarenessRefused(f"awareness client id {client_id} belongs to another user")
        )
        return False

    def _stale_after_removal(self, conn: Connection, entry: AwarenessEntry) -> bool:
        """Whether ``entry`` is an older state of a removed client id: an echo another
        client sent before it saw the removal. A connection's first client id is its own,
        so a client reconnecting with its id (at the clock it had) is not stale."""
        removed_at = self._removed.get(entry.client_id)
        if removed_at is None or entry.removed or entry.clock > removed_at:
            return False
        own = not conn.awareness_clocks or entry.client_id in conn.awareness_clocks
        if own:
            del self._removed[entry.client_id]
        return not own

    def _note_removal(self, client_id: int, clock: int) -> None:
        """Remember the clock of a client id's removal (the oldest are forgotten first)."""
        removed = self._removed
        removed.pop(client_id, None)
        removed[client_id] = clock
        if len(removed) > MAX_REMOVED_CLOCKS:
            del removed[next(iter(removed))]  # the oldest removal

    def _keep(self, entry: AwarenessEntry, owner: int) -> bool:
        """Store (or remove) an entry published by ``owner``; False for a stale clock."""
        current = self.states.get(entry.client_id)
        if current is not None and entry.clock < current.clock:
            return False
        if entry.removed:
            self.states.pop(entry.client_id, None)
            self._owner.pop(entry.client_id, None)
            self._note_removal(entry.client_id, entry.clock)
        else:
            self.states[entry.client_id] = entry
            self._owner[entry.client_id] = owner
        return True

    def relay(self, sender: int, accepted: list[AwarenessEntry]) -> None:
        """Relay ``accepted`` (published by connection ``sender``) at the end of this turn."""
        self._out.append((sender, accepted))
        if len(self._out) == 1:
            # Relay at the end of this loop turn: a cursor storm then costs one frame per
            # recipient per turn instead of one per cursor move.
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Relay the awareness accepted this turn: one update alone goes to all but its
        sender; several are merged (latest entry per client) into one frame for all
        (y-protocols ignores a client's own state coming back at the same clock)."""
        batch, self._out = self._out, []
        if not batch:
            return
        if len(batch) == 1:
            sender, entries = batch[0]
            payload = awareness_codec.encode(AwarenessUpdate(tuple(entries)))
            self._broadcast(Frame(encode(AwarenessMessage(payload))), sender)
            return
        latest: dict[int, AwarenessEntry] = {}
        for _, entries in batch:
            for entry in entries:
                kept = latest.get(entry.client_id)
                # As y-protocols orders them: the higher clock wins, a removal wins a tie.
                if (
                    kept is None
                    or entry.clock > kept.clock
                    or (entry.clock == kept.clock and entry.removed)
                ):
                    latest[entry.client_id] = entry
        payload = awareness_codec.encode(AwarenessUpdate(tuple(latest.values())))
        self._broadcast(Frame(encode(AwarenessMessage(payload))), None)

    def apply_remote(self, payload: bytes) -> None:
        """Awareness relayed from another node (stamped there): kept (for late joiners) and
        sent to every local client. While published there, its client ids belong to that
        node: no local connection may use them; the user they name owns them from then on."""
        update = awareness_codec.decode(payload, self._max_entries)
        accepted = []
        for entry in update.entries:
            if self._owner.get(entry.client_id, REMOTE_OWNER) != REMOTE_OWNER:
                continue
            user = None if entry.removed else identity_of_state(entry.state)
            owner = self._users.owner(entry.client_id)
            if user is not None and owner not in (None, user):
                continue
            if not self._keep(entry, REMOTE_OWNER):
                continue
            if user is not None:
                self._users.claim(entry.client_id, user)
            accepted.append(entry)
        if accepted:
            self.relay(REMOTE_OWNER, accepted)
