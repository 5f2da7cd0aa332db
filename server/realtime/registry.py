"""The registry of loaded rooms: single-flight loading, idle unloading, compaction.

A room is loaded once however many clients join at the same instant; it is unloaded
``room_idle_seconds`` after its last client left, once its journal writes are done, with a
final compaction. A room whose stored state cannot be read refuses to open rather than risk
overwriting the stored document with an empty one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from crdt.document import CrdtDoc, RoomDoc
from crdt.errors import InvalidUpdate
from crdt.ids import RoomName
from crdt.outline import Outline
from persistence.errors import StorageError, StorageUnavailable
from persistence.rooms.ports import RoomStore, StoredRoom
from protocol.ysync import Limits
from server.errors import RoomNotFound, RoomUnavailable, RoomUnavailableForNow
from server.flights import Flights
from server.hooks import Hooks, Loaded, Loading
from server.realtime.connection import Connection
from server.realtime.heap import HeapTrimmer
from server.realtime.rooms import Room
from server.settings import Settings

log = logging.getLogger(__name__)

# At most one malloc_trim per this many seconds, however many rooms unload
# (server/realtime/heap.py).
HEAP_TRIM_INTERVAL_SECONDS = 5.0
# The recorded sizes of a document whose last loaded room unloads are kept only when they add
# up to at least this fraction of the document cap: forgetting a smaller document lets it pass
# the cap by less than that fraction at most, and the records stay bounded by what storage
# holds in large documents instead of growing with every document ever loaded.
KEEP_SIZES_FRACTION = 0.25


class RoomRegistry:
    """Owns the loaded rooms. Background work runs in the task group it is given.

    Fires ``hooks.before_load`` (awaited before a room is read from storage) and
    ``hooks.after_load`` (once a loaded room is registered); its rooms fire the room hooks.
    """

    def __init__(
        self,
        store: RoomStore,
        settings: Settings,
        tasks: asyncio.TaskGroup,
        hooks: Hooks | None = None,
    ) -> None:
        self._hooks = hooks or Hooks()
        self._store = store
        self._settings = settings
        self._tasks = tasks
        self._limits = Limits(max_message_bytes=settings.max_message_bytes)
        self._rooms: dict[str, Room] = {}
        # The same rooms by document (a document with hundreds of sections loaded asks who
        # else of it is loaded on every load and unload: a scan of every room was O(rooms)).
        self._by_document: dict[str, dict[str, Room]] = {}
        self._loading: Flights[str, Room] = Flights()
        self._unloading: dict[str, asyncio.Future[None]] = {}
        self._unload_timers: dict[str, asyncio.TimerHandle] = {}
        self._compacting: set[str] = set()
        self._unload_waiters: dict[str, list[asyncio.Future[None]]] = {}
        # Encoded sizes of the rooms of each document (loaded ones as of their last update,
        # unloaded ones as measured when they unloaded), for the document size cap; pruned
        # when a document's last room unloads (see KEEP_SIZES_FRACTION).
        self._sizes: dict[str, dict[str, int]] = {}
        self.updates_refused_too_large = 0
        self.rooms_loaded = 0
        self.rooms_unloaded = 0
        self._retired: collections.Counter[str] = collections.Counter()
        self._heap = HeapTrimmer(tasks, HEAP_TRIM_INTERVAL_SECONDS)

    # -- joining and leaving --------------------------------------------------------------

    async def join(self, name: RoomName, conn: Connection) -> Room:
        """Load the room if needed (once, however many join at the same time) and join it.

        Raises RoomUnavailable when storage cannot be read, RoomNotFound when the room does
        not exist and creation on join is off, or when it is a section the outline does not
        list and ``conn`` is read-only (only connections that may edit create sections).
        """
        if conn.read_only and name.section_id is not None and str(name) not in self._rooms:
            # Checked before the single-flight load: a viewer's refusal must not become
            # the result of an editor's concurrent join.
            await self._ensure_section(name.outline(), name.section_id, create=False)
        room = await self._acquire(name)
        # Deferred: a connection may be closed from inside a broadcast over the room.
        loop = asyncio.get_running_loop()

        def on_close(closing: Connection) -> None:
            loop.call_soon(self.leave, room, closing)

        conn.on_close = on_close
        room.join(conn)
        return room

    async def _acquire(self, name: RoomName) -> Room:
        """The loaded room ``name``, loading it if needed; cancels a pending unload."""
        key = str(name)
        while True:
            if key in self._unloading:
                await asyncio.shield(self._unloading[key])
                continue
            room = self._rooms.get(key)
            if room is None:
                room = await self._load_once(name)
            if room.failed is None and self._rooms.get(key) is room:
                break
        timer = self._unload_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        return room

    async def edit(self, name: RoomName, edit: Callable[[CrdtDoc], object], reason: str) -> bool:
        """Make a server-side edit to a room, loading it for the edit if needed; the change is
        journaled and broadcast like a client's. Returns whether anything changed."""
        room = await self._acquire(name)
        try:
            return room.apply_local(edit, reason)
        finally:
            self._unload_when_idle(room)

    def leave(self, room: Room, conn: Connection) -> None:
        """Remove ``conn``; schedule the room's unloading when it was the last one."""
        room.leave(conn)
        self._unload_when_idle(room)

    def _unload_when_idle(self, room: Room) -> None:
        # A connection's leave can come twice (the session's, then its close chain's) and
        # the second may land while the room is already being unloaded: never twice.
        if (
            not room.connections
            and self._rooms.get(room.key) is room
            and room.key not in self._unload_timers
            and room.key not in self._unloading
        ):
            loop = asyncio.get_running_loop()
            self._unload_timers[room.key] = loop.call_later(
                self._settings.room_idle_seconds, self._start_unload, room
            )

    # -- loading --------------------------------------------------------------------------

    async def _load_once(self, name: RoomName) -> Room:
        """The room loaded and registered, by one load however many ask at once
        (server/flights.py)."""
        return await self._loading.run(str(name), lambda: self._load_and_register(name))

    async def _load_and_register(self, name: RoomName) -> Room:
        await self._hooks.before_load(Loading(name))
        room = await self._load(name)
        key = str(name)
        self._rooms[key] = room
        self._by_document.setdefault(name.document_id, {})[key] = room
        self.rooms_loaded += 1
        self._hooks.after_load(Loaded(room))
        return room

    async def _read_doc(self, key: str) -> tuple[RoomDoc, StoredRoom]:
        """Rebuild a room's document from storage; RoomUnavailable if it cannot be read."""
        try:
            stored = await self._store.load(key)
        except StorageUnavailable as exc:
            log.error("room %s: cannot read stored state now: %s", key, exc)
            raise RoomUnavailableForNow(f"room {key} cannot be loaded now; retry in 5 s") from exc
        except StorageError as exc:
            log.error("room %s: cannot read stored state: %s", key, exc)
            raise RoomUnavailable(f"stored state of {key} cannot be read") from exc
        doc = RoomDoc()
        try:
            doc.load(stored.updates())
        except InvalidUpdate as exc:
            doc.close()
            log.error("room %s: stored state is corrupted: %s", key, exc)
            raise RoomUnavailable(f"stored state of {key} is corrupted") from exc
        return doc, stored

    async def _load(self, name: RoomName) -> Room:
        key = str(name)
        if name.section_id is not None:
            await self._ensure_section(name.outline(), name.section_id)
        doc, stored = await self._read_doc(key)
        if stored.is_empty and name.is_outline and not self._settings.create_on_join:
            doc.close()
            raise RoomNotFound(f"document {name.document_id} does not exist")
        room = self._new_room(
            name,
            doc,
            journal_length=len(stored.journal),
            state_bytes=sum(len(update) for update in stored.updates()),
        )
        if stored.is_empty and name.is_outline:
            created = datetime.now(UTC).isoformat(timespec="milliseconds")
            room.apply_local(lambda doc: Outline(doc).set_meta("createdAt", created), "created")
        log.info(
            "room %s: loaded (snapshot=%s, journal=%d)",
            key,
            stored.snapshot is not None,
            len(stored.journal),
        )
        return room

    def _new_room(
        self, name: RoomName, doc: RoomDoc, journal_length: int, state_bytes: int
    ) -> Room:
        return Room(
            name,
            doc,
            self._store,
            limits=self._limits,
            max_awareness_entries=self._settings.max_awareness_entries,
            on_failure=self._on_room_failure,
            on_tainted=self._on_room_tainted,
            hooks=self._hooks,
            journal_length=journal_length,
            state_bytes=state_bytes,
            size_guard=self._size_refusal,
        )

    def _size_refusal(self, room: Room, incoming: int) -> str | None:
        """Why an update of ``incoming`` bytes must be refused (None: accept it): it would
        take the room past ``max_section_bytes`` or its document past ``max_document_bytes``.

        Cheap: sizes are estimates (exact at the last measure, plus every effective update
        since); the exact measure (one encode per room) runs only when an estimate says the
        cap is near.
        """
        max_room = self._settings.max_section_bytes
        max_document = self._settings.max_document_bytes
        if room.state_bytes + incoming > max_room and room.measure_state() + incoming > max_room:
            self.updates_refused_too_large += 1
            return f"room {room.key} would exceed {max_room} bytes"
        document_id = room.name.document_id
        sizes = self._sizes.setdefault(document_id, {})
        sizes[room.key] = room.state_bytes
        if sum(sizes.values()) + incoming > max_document:
            for other in self.rooms_of(document_id):
                sizes[other.key] = other.measure_state()
            if sum(sizes.values()) + incoming > max_document:
                self.updates_refused_too_large += 1
                return f"document {document_id} would exceed {max_document} bytes"
        # Counted with the update (at most its length: duplicates change nothing).
        sizes[room.key] = room.state_bytes + incoming
        return None

    async def _ensure_section(
        self, outline_name: RoomName, section_id: str, *, create: bool = True
    ) -> None:
        """Make sure the document's outline lists ``section_id``: appended at the end when
        ``create`` and creation on join are on, RoomNotFound otherwise."""
        outline = await self._acquire(outline_name)
        try:
            if section_id in Outline(outline.doc.doc):
                return
            if not (create and self._settings.create_on_join):
                raise RoomNotFound(f"section {outline_name}/{section_id} does not exist")
            outline.apply_local(
                lambda doc: Outline(doc).add_section(section_id, section_id), "section created"
            )
            log.info("document %s: section %s created on join", outline_name, section_id)
        finally:
            self._unload_when_idle(outline)

    def room(self, key: str) -> Room | None:
        """The loaded room ``key`` (None when it is not loaded here)."""
        return self._rooms.get(key)

    def is_loading(self, key: str) -> bool:
        return self._loading.in_flight(key)

    def is_loading_document(self, document_id: str) -> bool:
        return any(key.partition("/")[0] == document_id for key in self._loading)

    def _drop(self, room: Room) -> None:
        del self._rooms[room.key]
        of_document = self._by_document[room.name.document_id]
        del of_document[room.key]
        if not of_document:
            del self._by_document[room.name.document_id]

    def _has_sections_loaded(self, document_id: str) -> bool:
        loaded = self._by_document.get(document_id, {})
        return len(loaded) > (1 if document_id in loaded else 0)  # the outline's key is the id

    def rooms(self) -> list[Room]:
        """Every loaded room."""
        return list(self._rooms.values())

    def rooms_of(self, document_id: str) -> list[Room]:
        """The loaded rooms of a document (its outline and sections)."""
        return list(self._by_document.get(document_id, {}).values())

    def live_doc(self, key: str) -> RoomDoc | None:
        """The in-memory document of a loaded room (None when not loaded or failed)."""
        room = self._rooms.get(key)
        return room.doc if room is not None and room.failed is None else None

    def _on_room_tainted(self, room: Room) -> None:
        self._tasks.create_task(self._rebuild(room), name=f"rebuild {room.key}")

    async def _rebuild(self, room: Room) -> None:
        """Replace a tainted document with what storage holds (after pending writes)."""
        try:
            await room.flushed()
            doc, _ = await self._read_doc(room.key)
        except RoomUnavailable as exc:
            room.fail(exc)
            return
        if room.failed is not None:
            doc.close()
            return
        room.replace_doc(doc)
        log.info("room %s: rebuilt from storage", room.key)

    def _on_room_failure(self, room: Room, exc: BaseException) -> None:
        if self._rooms.get(room.key) is room:
            self._drop(room)
            self._retire(room)
        timer = self._unload_timers.pop(room.key, None)
        if timer is not None:
            timer.cancel()
        self._forget_sizes_when_idle(room.name.document_id)

    def _forget_sizes_when_idle(self, document_id: str) -> None:
        """Drop a document's recorded sizes once none of its rooms is loaded, unless they add
        up to KEEP_SIZES_FRACTION of the document cap or more."""
        sizes = self._sizes.get(document_id)
        if sizes is None or self.rooms_of(document_id):
            return
        if sum(sizes.values()) < KEEP_SIZES_FRACTION * self._settings.max_document_bytes:
            del self._sizes[document_id]

    # -- compaction and unloading ---------------------------------------------------------

    def maybe_compact(self, room: Room) -> None:
        """Start a background compaction once the journal is long enough."""
        if (
            room.journal_length >= self._settings.compact_after_updates
            and room.key not in self._compacting
            and room.failed is None
        ):
            self._compacting.add(room.key)
            self._tasks.create_task(self._compact(room), name=f"compact {room.key}")

    async def _compact(self, room: Room) -> None:
        try:
            state = room.full_state()
            length = room.journal_length
            await self._store.compact(room.key, state)
            room.journal_length -= length
        except StorageError as exc:
            log.warning("room %s: compaction failed, journal kept: %s", room.key, exc)
        finally:
            self._compacting.discard(room.key)

    def _start_unload(self, room: Room) -> None:
        self._unload_timers.pop(room.key, None)
        if (
            room.connections
            or self._rooms.get(room.key) is not room
            or room.key in self._unloading  # one unload at a time
        ):
            return
        if room.name.is_outline and self._has_sections_loaded(room.name.document_id):
            # The outline stays while sections of its document are loaded: the snapshotter
            # renders it, and a section joining needs it (re-armed when the last one goes).
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unloading[room.key] = future
        self._tasks.create_task(self._unload(room, future), name=f"unload {room.key}")

    async def _unload(self, room: Room, done: asyncio.Future[None]) -> None:
        try:
            await room.flushed()
            if room.failed is None and room.journal_length:
                await self._store.compact(room.key, room.full_state())
            log.info("room %s: unloaded", room.key)
        except StorageError as exc:
            log.warning("room %s: final compaction failed, journal kept: %s", room.key, exc)
        finally:
            if self._rooms.get(room.key) is room:
                self._drop(room)
                self._sizes.setdefault(room.name.document_id, {})[room.key] = (
                    room.measure_state() if room.failed is None else room.state_bytes
                )
                self._retire(room)
            if not room.name.is_outline and not self._has_sections_loaded(room.name.document_id):
                outline = self._rooms.get(room.name.document_id)
                if outline is not None:
                    self._unload_when_idle(outline)
            self._forget_sizes_when_idle(room.name.document_id)
            del self._unloading[room.key]
            self.rooms_unloaded += 1
            done.set_result(None)
            for waiter in self._unload_waiters.pop(room.key, []):
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_unloaded(self, key: str) -> None:
        """Wait until the room ``key`` is next unloaded (for tests and operators)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unload_waiters.setdefault(key, []).append(waiter)
        await waiter

    async def close(self) -> None:
        """Flush and compact every loaded room, all rooms at once (used at shutdown, after
        sockets closed). Never raises StorageError (a failed compaction keeps the journal
        and is logged); the caller bounds the time (cancelling leaves the rest undone)."""
        for timer in self._unload_timers.values():
            timer.cancel()
        self._unload_timers.clear()
        self._heap.close()
        rooms = list(self._rooms.values())
        await asyncio.gather(*(self._close_room(room) for room in rooms))
        for room in rooms:
            room.doc.close()
        self._rooms.clear()
        self._by_document.clear()

    async def _close_room(self, room: Room) -> None:
        await room.flushed()
        if room.failed is None and room.journal_length:
            try:
                await self._store.compact(room.key, room.full_state())
            except StorageError as exc:
                log.warning("room %s: compaction at shutdown failed: %s", room.key, exc)

    def _retire(self, room: Room) -> None:
        """Keep an unloaded (or failed) room's counters in the totals and release its
        document: nothing reads a room's memory once it left the registry."""
        room.doc.close()
        self._heap.request()
        self._retired["updates_applied_total"] += room.updates_applied
        self._retired["updates_merged_total"] += room.updates_merged
        self._retired["frames_broadcast_total"] += room.frames_broadcast

    def stats(self) -> dict[str, Any]:
        """Gauges of the loaded rooms and totals since the server started."""
        rooms = self._rooms.values()
        return {
            "rooms": len(self._rooms),
            "connections": sum(len(room.connections) for room in rooms),
            "rooms_loaded_total": self.rooms_loaded,
            "rooms_unloaded_total": self.rooms_unloaded,
            "updates_refused_too_large_total": self.updates_refused_too_large,
            "documents_sizes_kept": len(self._sizes),
            **self._heap.stats(),
            "updates_applied_total": self._retired["updates_applied_total"]
            + sum(room.updates_applied for room in rooms),
            "updates_merged_total": self._retired["updates_merged_total"]
            + sum(room.updates_merged for room in rooms),
            "frames_broadcast_total": self._retired["frames_broadcast_total"]
            + sum(room.frames_broadcast for room in rooms),
        }
