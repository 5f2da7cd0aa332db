"""The connection hub: this node's open connections, indexed by document and by user, and
the delivery of application events to them (and, in service mode, to the other nodes).

Features that talk to clients (presence, locks, comments, notifications, the rights guard)
receive the hub instead of the app. It holds no room state: rooms are the registry's.
"""

from __future__ import annotations

import collections
from collections import defaultdict
from collections.abc import Callable, Iterable

from protocol.events import AppEvent, encode_event
from protocol.ysync import AppEventMessage, encode
from server.errors import TooManySockets
from server.hooks import Hooks, RemoteEvent
from server.realtime.cluster import USER_CHANNEL
from server.realtime.connection import Connection, Frame

# Publishes an event to the other nodes: (document id or USER_CHANNEL, section id, event).
Publish = Callable[[str, str | None, AppEvent], None]


class Hub:
    """This node's open connections and the way application events reach them.

    ``publish`` (service mode) sends an event to the other nodes; without it, events stay
    on this node. Fires ``hooks.on_remote_event`` for each event another node emitted for a
    document, before delivering it here.
    """

    def __init__(self, hooks: Hooks, publish: Publish | None = None) -> None:
        self._hooks = hooks
        self._publish = publish
        self.connections: set[Connection] = set()
        self.by_document: defaultdict[str, set[Connection]] = defaultdict(set)
        self.by_user: defaultdict[str, set[Connection]] = defaultdict(set)
        self._opening: collections.Counter[str] = collections.Counter()  # sockets joining

    # -- the indexes ----------------------------------------------------------------------

    def reserve(self, user_id: str, limit: int) -> None:
        """Count a socket of the user as opening (until :meth:`unreserve`); TooManySockets
        when the user already holds ``limit`` on this node (open or opening)."""
        held = len(self.by_user.get(user_id, ())) + self._opening[user_id]
        if held >= limit:
            raise TooManySockets(
                f"{held} sockets open on this node (at most {limit}); close one first"
            )
        self._opening[user_id] += 1

    def unreserve(self, user_id: str) -> None:
        """The socket :meth:`reserve` counted is open (or failed): stop counting it."""
        self._opening[user_id] -= 1
        if self._opening[user_id] <= 0:
            del self._opening[user_id]

    def add(self, conn: Connection, document_id: str, user_id: str) -> None:
        """Index an open connection of ``user_id`` on ``document_id``."""
        self.connections.add(conn)
        self.by_document[document_id].add(conn)
        self.by_user[user_id].add(conn)

    def forget(self, conn: Connection, document_id: str) -> None:
        """Remove a connection from the indexes (nothing happens the second time)."""
        self.connections.discard(conn)
        if conn.principal is not None:
            mine = self.by_user.get(conn.principal.user_id)
            if mine is not None:
                mine.discard(conn)
                if not mine:
                    del self.by_user[conn.principal.user_id]
        members = self.by_document.get(document_id)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.by_document[document_id]

    def of_document(self, document_id: str) -> Iterable[Connection]:
        """A snapshot of this node's connections to ``document_id``."""
        return list(self.by_document.get(document_id, ()))

    # -- application events ---------------------------------------------------------------

    def emit(
        self,
        document_id: str,
        event: AppEvent,
        *,
        section_id: str | None = None,
        local_only: bool = False,
    ) -> None:
        """Send an application event to every client of the document that takes events
        (only those in section ``section_id``'s room when given), on this node and, unless
        ``local_only``, on the other nodes."""
        self.deliver(document_id, section_id, event)
        if not local_only and self._publish is not None:
            self._publish(document_id, section_id, event)

    def deliver(self, document_id: str, section_id: str | None, event: AppEvent) -> None:
        """Send an event to this node's clients of the document (see :meth:`emit`)."""
        members = self.by_document.get(document_id)
        if not members:
            return
        room_key = None if section_id is None else f"{document_id}/{section_id}"
        frame = Frame(encode(AppEventMessage(encode_event(event))))
        for conn in members:
            if conn.app_events and (room_key is None or conn.room_name == room_key):
                conn.send(frame)

    def send_to_user(self, user_id: str, event: AppEvent) -> None:
        """Send an event to every open connection of a user that takes events, on every
        node (notifications)."""
        self._deliver_to_user(user_id, event)
        if self._publish is not None:
            self._publish(
                USER_CHANNEL, None, AppEvent(event.type, {**event.fields, "_to": user_id})
            )

    def _deliver_to_user(self, user_id: str, event: AppEvent) -> None:
        members = self.by_user.get(user_id)
        if not members:
            return
        frame = Frame(encode(AppEventMessage(encode_event(event))))
        for conn in members:
            if conn.app_events:
                conn.send(frame)

    def receive_remote(self, document_id: str, section_id: str | None, event: AppEvent) -> None:
        """An event another node published: a user's (USER_CHANNEL), or a document's, which
        fires ``on_remote_event`` and is then delivered here."""
        if document_id == USER_CHANNEL:
            data = dict(event.fields)
            user_id = data.pop("_to", None)
            if isinstance(user_id, str):
                self._deliver_to_user(user_id, AppEvent(event.type, data))
            return
        self._hooks.on_remote_event(RemoteEvent(document_id, section_id, event))
        self.deliver(document_id, section_id, event)
