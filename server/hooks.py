"""The extension API: typed hooks at each point of a connection's and a document's life.

One :class:`Hooks` is made per app, before anything that fires or subscribes, and handed to
whoever needs it (the registry, the rooms, the snapshotter, the features). A feature or a
third-party extension subscribes a callback to a hook; the server fires the hook with a frozen
payload. ``docs/extensions.md`` lists the hooks in time order with an example.

Rules, the same for every hook:

* Order: subscribers run by descending ``priority`` (default 0), equal priorities in the order
  they subscribed. ``subscribe`` returns a :class:`Subscription`; ``unsubscribe()`` on it
  removes the callback (idempotent).
* Veto: on the hooks documented as vetoable (``vetoable=True``), a subscriber refuses by
  raising :class:`Rejected`; the later subscribers do not run and the server refuses what the
  hook announced (its docstring says how). On the other hooks the change already happened:
  they observe it.
* Errors: whatever a subscriber raises propagates to where the hook fired, and the later
  subscribers do not run (as for a direct call). Subscribers of the synchronous hooks must
  not block: on_change and on_edit run once per edit.
* Cost: firing a :class:`Hook` with one subscriber is one direct call of that subscriber (the
  call target is rebuilt at each subscribe and unsubscribe); with none, one call of a no-op.
  Code on the hot path tests the hook (``if hook:``) before it builds a payload.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from crdt.ids import RoomName
from protocol.awareness import AwarenessEntry
from protocol.events import AppEvent

if TYPE_CHECKING:
    import uuid

    from crdt.markdown import BusinessContent
    from server.identity.authentication import Principal

P = TypeVar("P")

_order = itertools.count()


class Rejected(Exception):
    """Raised by a subscriber of a vetoable hook to refuse; its message says why, and is
    what the refused client is told."""


class Subscription:
    """A callback's place on a hook; :meth:`unsubscribe` removes it."""

    __slots__ = ("_remove",)

    def __init__(self, remove: Callable[[], None]) -> None:
        self._remove = remove

    def unsubscribe(self) -> None:
        """Remove the callback from its hook; nothing happens the second time."""
        self._remove()


@dataclass(frozen=True, slots=True)
class _Entry:
    callback: Callable[[Any], Any]
    priority: int
    seq: int = field(default_factory=lambda: next(_order))


class _Subscribable:
    """What :class:`Hook` and :class:`AsyncHook` share: the ordered subscribers."""

    __slots__ = ("_callbacks", "_entries", "name", "vetoable")

    def __init__(self, name: str, *, vetoable: bool = False) -> None:
        self.name = name
        self.vetoable = vetoable
        self._entries: list[_Entry] = []
        self._callbacks: tuple[Callable[[Any], Any], ...] = ()

    def __bool__(self) -> bool:
        """Whether anything is subscribed (test it before building a costly payload)."""
        return bool(self._callbacks)

    def __len__(self) -> int:
        return len(self._callbacks)

    def __repr__(self) -> str:
        veto = ", vetoable" if self.vetoable else ""
        return f"<{type(self).__name__} {self.name}: {len(self._callbacks)} subscribed{veto}>"

    def _add(self, callback: Callable[[Any], Any], priority: int) -> Subscription:
        if not callable(callback):
            raise TypeError(f"hook {self.name}: subscribe a callable, not {callback!r}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"hook {self.name}: priority must be an int, not {priority!r}")
        entry = _Entry(callback, priority)
        self._entries.append(entry)
        self._rebuild()
        return Subscription(lambda: self._remove(entry))

    def _remove(self, entry: _Entry) -> None:
        if entry in self._entries:
            self._entries.remove(entry)
            self._rebuild()

    def _rebuild(self) -> None:
        ordered = sorted(self._entries, key=lambda e: (-e.priority, e.seq))
        self._callbacks = tuple(entry.callback for entry in ordered)


def _nothing(payload: object) -> None:
    return None


class Hook(_Subscribable, Generic[P]):
    """A synchronous hook: ``hook(payload)`` calls every subscriber in order, at once.

    Used where the server cannot await (inside a room, which never awaits, and on the hot
    path). Subscribers are ``Callable[[P], None]``.
    """

    __slots__ = ("fire",)

    def __init__(self, name: str, *, vetoable: bool = False) -> None:
        super().__init__(name, vetoable=vetoable)
        self.fire: Callable[[P], None] = _nothing

    def subscribe(self, callback: Callable[[P], None], priority: int = 0) -> Subscription:
        """Call ``callback(payload)`` each time the hook fires; TypeError when ``callback``
        is not callable or ``priority`` not an int."""
        return self._add(callback, priority)

    def __call__(self, payload: P) -> None:
        """Fire: run the subscribers in order (see the module's rules for errors)."""
        self.fire(payload)

    def _rebuild(self) -> None:
        super()._rebuild()
        callbacks: tuple[Callable[[P], None], ...] = self._callbacks
        if not callbacks:
            self.fire = _nothing
        elif len(callbacks) == 1:
            self.fire = callbacks[0]
        else:

            def fire(payload: P) -> None:
                for callback in callbacks:
                    callback(payload)

            self.fire = fire


class AsyncHook(_Subscribable, Generic[P]):
    """An awaited hook: ``await hook(payload)`` awaits every subscriber in turn, in order.

    Subscribers are ``Callable[[P], Awaitable[None]]`` (coroutine functions).
    """

    __slots__ = ()

    def subscribe(
        self, callback: Callable[[P], Awaitable[None]], priority: int = 0
    ) -> Subscription:
        """Await ``callback(payload)`` each time the hook fires; TypeError when ``callback``
        is not callable or ``priority`` not an int."""
        return self._add(callback, priority)

    async def __call__(self, payload: P) -> None:
        """Fire: await the subscribers one after the other, in order (the subscribers as of
        the moment it fired)."""
        for callback in self._callbacks:
            await callback(payload)


# -- what a payload shows of a room and of a connection --------------------------------------


class RoomView(Protocol):
    """What hook payloads and event handlers see of a room (``server.realtime.rooms.Room``
    satisfies it; this module names no class of the layers that fire it)."""

    # The section lock on the room: who alone may edit it, None when unlocked. Settable.
    locked_by: str | None

    @property
    def name(self) -> RoomName: ...

    @property
    def key(self) -> str: ...

    def apply_remote(self, update: bytes) -> None:
        """Apply an update another node stored (see ``Room.apply_remote``)."""
        ...


class ConnectionView(Protocol):
    """What hook payloads and event handlers see of a connection
    (``server.realtime.connection.Connection`` satisfies it)."""

    @property
    def id(self) -> int: ...

    @property
    def room_name(self) -> str: ...

    @property
    def principal(self) -> Principal | None: ...

    @property
    def right(self) -> int: ...

    @property
    def read_only(self) -> bool: ...

    @property
    def app_events(self) -> bool: ...

    @property
    def closing(self) -> bool: ...

    def send_event(self, event: AppEvent) -> None:
        """Send an application event, if the client asked for them."""
        ...


# -- payloads, in the order of a connection's life ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A socket's credentials were verified: ``principal`` is who it is (its token, or its
    session cookie), ``room`` where it asks to go; nothing about its rights is known yet."""

    principal: Principal
    room: RoomName


@dataclass(frozen=True, slots=True)
class Joining:
    """A socket was authenticated and may view the room; it has not joined yet."""

    principal: Principal
    room: RoomName
    read_only: bool


@dataclass(frozen=True, slots=True)
class Loading:
    """A room is about to be read from storage."""

    room: RoomName


@dataclass(frozen=True, slots=True)
class Loaded:
    """A room was loaded and registered (no client in it yet)."""

    room: RoomView


@dataclass(frozen=True, slots=True)
class Joined:
    """A connection joined a room (its sync step 1 is on its way)."""

    conn: ConnectionView
    room: RoomView


@dataclass(frozen=True, slots=True)
class Edited:
    """A client's update changed a room: characters inserted and deleted in its section's
    text (both 0 outside sections; a replacement counts its difference)."""

    conn: ConnectionView
    room: RoomName
    inserted: int
    deleted: int


@dataclass(frozen=True, slots=True)
class Changed:
    """A room changed (a client's or the server's edit): its journal append is queued."""

    room: RoomName


@dataclass(frozen=True, slots=True)
class AwarenessAccepted:
    """Awareness entries a local connection published, stamped and accepted."""

    room: RoomView
    conn: ConnectionView
    entries: list[AwarenessEntry]


@dataclass(frozen=True, slots=True)
class RemoteEvent:
    """An application event another node emitted for a document (``section``: its room's
    section, None for the whole document), before it is delivered to this node's clients."""

    document_id: str
    section: str | None
    event: AppEvent


@dataclass(frozen=True, slots=True)
class Storing:
    """A document's derived content (its snapshot) is about to be written: ``content`` is
    what will be stored (markdown, sections, metadata)."""

    document_id: str
    content: BusinessContent


@dataclass(frozen=True, slots=True)
class Stored:
    """The derived content of a document (its snapshot) was written."""

    document_id: str


@dataclass(frozen=True, slots=True)
class PermissionChange:
    """Who may do what with a document changed: its permission lists (``view``, ``comment``,
    ``edit``: user ids) went from ``before`` (None when it had none) to ``after``.
    ``created``: the document was just created (its owner and contributors hold rights too,
    which the lists do not name)."""

    document_id: str
    actor: uuid.UUID | None
    before: Mapping[str, Any] | None
    after: Mapping[str, Any]
    created: bool = False


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A connection left its document (closed, for any reason)."""

    conn: ConnectionView
    document_id: str


EventHandler = Callable[[RoomView, ConnectionView, AppEvent], None]


class EventHandlers:
    """Application events by type: one handler per type (the room refuses the others)."""

    __slots__ = ("_handlers",)

    def __init__(self) -> None:
        self._handlers: dict[str, EventHandler] = {}

    def handle(self, event_type: str, handler: EventHandler) -> Subscription:
        """Let ``handler(room, conn, event)`` take the events of ``event_type``; ValueError
        when that type already has a handler."""
        if event_type in self._handlers:
            raise ValueError(f"event type {event_type!r} already has a handler")
        self._handlers[event_type] = handler

        def remove() -> None:
            if self._handlers.get(event_type) is handler:
                del self._handlers[event_type]

        return Subscription(remove)

    def get(self, event_type: str) -> EventHandler | None:
        """The handler of ``event_type``, None when nothing takes it."""
        return self._handlers.get(event_type)


class Hooks:
    """Every hook of one app, in the order a connection and its document meet them.

    Vetoable: ``on_authenticate`` (Rejected closes the socket as unauthorized, 4401, with
    the message), ``on_connect`` (Rejected closes it as PermissionDenied, 4403, before it
    joins) and ``on_store`` (Rejected skips that snapshot write: the journal keeps the edits,
    the next change tries again).
    """

    def __init__(self) -> None:
        self.on_authenticate: AsyncHook[Authenticated] = AsyncHook("on_authenticate", vetoable=True)
        self.on_connect: AsyncHook[Joining] = AsyncHook("on_connect", vetoable=True)
        self.before_load: AsyncHook[Loading] = AsyncHook("before_load")
        self.after_load: Hook[Loaded] = Hook("after_load")
        self.on_join: Hook[Joined] = Hook("on_join")
        self.on_event = EventHandlers()
        self.on_awareness: Hook[AwarenessAccepted] = Hook("on_awareness")
        self.on_edit: Hook[Edited] = Hook("on_edit")
        self.on_change: Hook[Changed] = Hook("on_change")
        self.on_remote_event: Hook[RemoteEvent] = Hook("on_remote_event")
        self.on_store: AsyncHook[Storing] = AsyncHook("on_store", vetoable=True)
        self.after_store: AsyncHook[Stored] = AsyncHook("after_store")
        self.on_permission_change: Hook[PermissionChange] = Hook("on_permission_change")
        self.on_disconnect: Hook[Disconnected] = Hook("on_disconnect")
