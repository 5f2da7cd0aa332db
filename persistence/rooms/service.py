"""Service-mode adapter of :class:`persistence.rooms.ports.RoomStore`: the journal of every room is
the Redis change stream of its document, the compacted states live in the content store.

Where things are:

* the journal of room ``D`` or ``D/S`` is the entries of ``collab:{D}:changes`` (the
  coordinator's :class:`~persistence.coordinator.ports.ChangeJournal`) whose section is None
  (the outline) or ``S``: one stream holds every section of a document;
* the compacted state of a room is its ``crdt_states`` record in the
  :class:`~persistence.content.ports.ContentStore`, saved with the journal position it covers:
  every entry of that room with an id up to that position is in the state.

Each room has one queue and one worker task: appends, compactions and loads of a room run in
call order, one at a time (the journal port offers no ordered pipelining across
connections). Rooms run in parallel. An append's future resolves once ``journal.append``
returned (or, in an outage, once the spool holds it): with Redis on ``appendonly yes`` /
``appendfsync always`` (see :func:`require_durable`) the entry is then on disk.

A compaction saves the state first, then trims the stream. Because one stream holds every
section, it trims only the *covered prefix* of the stream: it walks the entries from the
head and stops at the first one that its own room's saved state does not cover (the
positions come from this store's cache, and from the content store for a room the cache
does not cover). What this store appends after the compaction call, and what any node
appends once the compaction has started, gets an id past what it saved: never covered by
it, never trimmed by it.

Journal positions are Redis stream ids ``"<ms>-<seq>"``; the content store keeps an int
``journal_seq``: :mod:`persistence.rooms.service_positions` maps one to the other
(:func:`journal_seq`, :func:`covered_position`).

What a compaction claims to cover is the newest entry of the room that the caller's state
is known to hold: the last one this store appended for the room, or the newest one a
``load`` of the room returned (or the position of the state it returned), whichever is
later. On one node that is exactly "every entry appended before the call". When several
nodes serve one room that is wrong (another node's entry with a smaller id than this node's
last append may not be applied yet, and would be skipped at load and trimmed): open the
store with ``follow=True`` and report what the stream follower applied with
:meth:`ServiceRoomStore.mark_applied`; a compaction then claims only the newest entry marked
before the call (or the position of the state the room was loaded from).

With a :class:`~persistence.rooms.sqlite_spool.Spool`, an append the journal cannot take
(StorageUnavailable) is kept in that local SQLite file instead, durably, and moved to the
stream in order once the journal is back (see :class:`ServiceRoomStore`).

The store is split by responsibility: this module holds the operations (append, compact and
its trim, load) and the durability check; :mod:`persistence.rooms.service_lanes` the per-room
queues, :mod:`persistence.rooms.service_outage` the spool and its drainer through a journal
outage, :mod:`persistence.rooms.service_positions` the journal positions. All of them log
under this module's name.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any, Final

from crdt.document import merge_updates
from crdt.errors import InvalidUpdate
from crdt.ids import RoomName, parse_room_name
from persistence.content.ports import ContentStore
from persistence.coordinator.ports import ChangeJournal
from persistence.coordinator.values import (
    DurabilityReport,
    JournalEntry,
    check_token,
    parse_entry_id,
)
from persistence.errors import (
    StorageClosed,
    StorageConflict,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)
from persistence.latency import JOURNAL_COMMITS
from persistence.rooms.ports import StoredRoom
from persistence.rooms.service_lanes import Op, OpKind, RoomLanes
from persistence.rooms.service_outage import OutageRelay
from persistence.rooms.service_positions import (
    MAX_JOURNAL_SEQ,
    ORIGIN,
    EntryKey,
    covered_position,
    entry_text,
    journal_seq,
    room_of,
)
from persistence.rooms.sqlite_spool import Spool

log = logging.getLogger(__name__)

READ_PAGE: Final = 500
"""Stream entries read per command (load and trim)."""


# -- the durability check --------------------------------------------------------------------


def require_durable(report: DurabilityReport) -> None:
    """Refuse to serve from a change journal that may lose acknowledged edits in a crash.

    Passes when ``report.durable`` (AOF on with ``appendfsync always``); raises
    :class:`~persistence.errors.StorageMisconfigured` with what the operator should change
    otherwise. Call it once at server start with ``await coordinator.durability()``.
    """
    if report.durable:
        return
    backend = "Redis" if report.backend == "redis" else f"the {report.backend} coordinator"
    fix = (
        "enable `appendonly yes` and `appendfsync always` (redis.conf or CONFIG SET), "
        "or run embedded (COLLAB_STORAGE=sqlite)"
    )
    if report.backend == "memory":
        reason = (
            f"{backend} keeps the change journal in this process only ({report.detail}): "
            "acknowledged edits would be lost when it stops; use Redis with "
            "`appendonly yes` and `appendfsync always`, or run embedded (COLLAB_STORAGE=sqlite)"
        )
    elif not report.aof_enabled:
        reason = (
            f"{backend} has appendonly no ({report.detail}): acknowledged edits could be "
            f"lost in a crash; {fix}"
        )
    elif report.appendfsync is None:
        reason = (
            f"{backend} does not tell its appendfsync policy ({report.detail}): acknowledged "
            "edits could be lost in a crash unless it is `always`; allow CONFIG GET for this "
            f"client and {fix}"
        )
    else:
        reason = (
            f"{backend} has appendfsync {report.appendfsync} ({report.detail}): the last "
            f"acknowledged edits could be lost in a crash; {fix}"
        )
    raise StorageMisconfigured(f"refusing durable service mode: {reason}")


# -- the store -------------------------------------------------------------------------------


class ServiceRoomStore:
    """Rooms in the change stream of their document plus a state in the content store.

    ``journal`` is the coordinator's change journal
    (:class:`persistence.coordinator.redis.RedisCoordinator`
    in production, whose server must pass :func:`require_durable`), ``states`` the content
    store, ``origin`` the node id written with every entry (so that other nodes tailing the
    stream can skip this node's appends). The store does not own them: :meth:`aclose` waits
    for the queued work and stops accepting calls, but closes neither the journal nor the
    content store (their owner does, after closing this store).

    ``load``, ``append`` and ``compact`` raise :class:`~crdt.ids.InvalidRoomName` (a
    ValueError) at once for a room name that is not ``D`` or ``D/S``; every other failure
    comes through the future (or the awaited ``load``) as a
    :class:`~persistence.errors.StorageError`.

    **Follow mode** (``follow=True``), for several server nodes on one document. The caller
    runs a stream follower that reads every entry of the document in order (its own
    included), applies the other nodes' entries to its loaded rooms, and calls
    :meth:`mark_applied` once it has applied (or skipped as its own) each entry of a loaded
    room. A compaction then claims to cover the room's stream up to the newest entry marked
    before the ``compact`` call, or up to the position of the state the room's last load
    returned if that is later; this store's own appends, and the entries a load returned,
    claim nothing (another node's entry with a smaller id may not be applied yet). A
    compaction with nothing marked claims nothing new: its state is saved at the position
    of the state the room was loaded from (0 if there was none), so it trims nothing it
    does not cover. In follow mode, ``load`` a room only to build the document that is
    compacted later. Without follow mode (the default), a compaction claims the room's
    entries up to this store's last append and what a load returned (see the module
    docstring): right on one node only.

    **The spool** (``spool=``, a :class:`~persistence.rooms.sqlite_spool.Spool` the caller
    opens, gives to one store only, and closes after it; the
    :class:`~persistence.rooms.service_outage.OutageRelay` works it). When an append to the
    journal fails with :class:`~persistence.errors.StorageUnavailable` (after the
    coordinator's own retries), the update goes to the spool instead, and the append's
    future resolves once the spool holds it durably. From then on:

    * until the journal accepts an append again, every append of every room goes straight to
      the spool; after that, the appends of a room still go to the spool while it holds an
      update of that room, so nothing reaches the stream ahead of an earlier update of its
      room;
    * a background drainer moves the spooled updates to the stream, oldest first (rooms in
      parallel, each room in order): append (with this store's ``origin``), then remove from
      the spool. It retries with a backoff from 50 ms doubling to 2 s. An update moved twice
      (a crash between the append and the removal) is stored twice: replay is harmless;
    * ``load`` returns the state, the stream entries, then the room's spooled updates (an
      update being moved may come twice); a load still needs to read the stream, so it fails
      with StorageUnavailable while Redis cannot be read;
    * a compaction saves the state but trims nothing while its room has spooled updates (or
      while the journal is failing).

    One WARNING is logged when spooling starts, one INFO when the spool is drained.
    :meth:`aclose` tries to drain for ``drain_timeout`` seconds; what remains stays in the
    spool file, and the next store opened on it (in this process or the next) moves it.
    :meth:`stats` counts the spooled updates, :meth:`wait_drained` waits for an empty spool.
    """

    def __init__(
        self,
        journal: ChangeJournal,
        states: ContentStore,
        *,
        origin: str | None = None,
        follow: bool = False,
        spool: Spool | None = None,
        drain_timeout: float = 5.0,
    ) -> None:
        self._journal = journal
        self._states = states
        self._origin = None if origin is None else check_token(origin, "origin")
        self._follow = follow
        self._lanes = RoomLanes(self._perform)
        # Per room: the newest entry the caller's state is known to hold (what a compaction
        # may claim to cover), and a lower bound of the position of the stored state (what
        # the trim and load may rely on). Stored positions never go back, so a cached one
        # stays a lower bound whatever other nodes save meanwhile.
        self._seen: dict[str, EntryKey] = {}
        self._covered: dict[str, EntryKey] = {}
        self._closed = False
        self._close_task: asyncio.Task[None] | None = None
        self._relay = (
            None
            if spool is None
            else OutageRelay(spool, journal, self._origin, self._spool_moved, drain_timeout)
        )

    async def __aenter__(self) -> ServiceRoomStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the port -------------------------------------------------------------------------

    async def load(self, room: str) -> StoredRoom:
        """The room's saved state and its journal entries after it (then its spooled
        updates), once the calls queued before this one are done. StorageUnavailable /
        StorageCorrupted when a read fails."""
        result = await self._submit("load", room, b"")
        assert isinstance(result, StoredRoom)
        return result

    def append(self, room: str, update: bytes) -> asyncio.Future[None]:
        """Queue ``update``; the future resolves once the journal (or the spool) stored it."""
        future: asyncio.Future[None] = self._submit("append", room, update)
        return future

    def compact(self, room: str, state: bytes) -> asyncio.Future[None]:
        """Queue a compaction: save ``state`` (covering every entry of the room appended
        before this call; in follow mode, every entry marked applied before it), then trim
        the covered prefix of the document's stream."""
        future: asyncio.Future[None] = self._submit("compact", room, state)
        return future

    async def aclose(self) -> None:
        """Refuse new calls (StorageClosed), wait for the queued ones, then try to empty the
        spool for ``drain_timeout`` seconds (what remains stays in the spool file).
        Idempotent. The journal, the content store and the spool stay open: they belong to
        the caller."""
        self._closed = True
        if self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(
                self._close(), name="room store close"
            )
        await asyncio.shield(self._close_task)

    # -- follow mode, the spool -----------------------------------------------------------

    def mark_applied(self, room: str, entry_id: str) -> None:
        """Follow mode: the caller's document of ``room`` holds every entry of the room up to
        ``entry_id`` (its follower applied, or skipped as its own, each one in stream order).
        Compactions called from now on may claim it. Marks never go back. InvalidRoomName /
        ValueError for a bad room name or entry id; RuntimeError without follow mode."""
        if not self._follow:
            raise RuntimeError("mark_applied is for a store opened with follow=True")
        name = parse_room_name(room)
        self._saw(str(name), parse_entry_id(entry_id))

    async def wait_drained(self) -> None:
        """Wait until the spool holds nothing (at once without a spool). StorageClosed if the
        store was closed with updates left in the spool."""
        if self._relay is not None:
            await self._relay.wait_drained(lambda: self._closed)

    @property
    def appends_merged(self) -> int:
        """How many appends shared a stream entry with an earlier one of their room."""
        return self._lanes.appends_merged

    def stats(self) -> dict[str, int]:
        """``spooled_now`` (updates in the spool file), ``spooled_total`` (updates this store
        spooled), ``drained_total`` (updates it moved from the spool to the stream).
        (``appends_merged`` counts the appends that shared a stream entry.)"""
        relay = self._relay
        return {
            "spooled_now": 0 if relay is None else relay.spooled_now(),
            "spooled_total": 0 if relay is None else relay.spooled_total,
            "drained_total": 0 if relay is None else relay.drained_total,
        }

    # -- the queues -----------------------------------------------------------------------

    def _submit(self, kind: OpKind, room: str, payload: bytes) -> asyncio.Future[Any]:
        if self._closed:
            raise StorageClosed("the room store is closed")
        name = parse_room_name(room)
        claim = self._seen.get(room) if self._follow and kind == "compact" else None
        future = self._lanes.submit(name, kind, payload, claim)
        if self._relay is not None:
            self._relay.kick()
        return future

    async def _perform(self, room: RoomName, op: Op) -> object:
        if op.kind == "append":
            await self._append(room, op.payload)
            return None
        if op.kind == "compact":
            await self._compact(room, op.payload, op.claim)
            return None
        return await self._load(room)

    async def _close(self) -> None:
        await self._lanes.wait_idle()
        if self._relay is not None:
            await self._relay.close()

    # -- the operations -------------------------------------------------------------------

    def _saw(self, room: str, key: EntryKey) -> None:
        if key > self._seen.get(room, ORIGIN):
            self._seen[room] = key

    def _spool_moved(self, room: str, entry_id: str) -> None:
        """The relay moved a spooled update of ``room`` to the stream as ``entry_id``."""
        if not self._follow:
            self._saw(room, parse_entry_id(entry_id))

    def _stored_at_least(self, room: str, key: EntryKey) -> None:
        if key > self._covered.get(room, (-1, -1)):
            self._covered[room] = key

    async def _append(self, room: RoomName, update: bytes) -> None:
        key = str(room)
        relay = self._relay
        if relay is not None and relay.diverts(key):
            await relay.add(key, update)
            return
        started = perf_counter()
        try:
            entry_id = await self._journal.append(
                room.document_id, room.section_id, update, origin=self._origin
            )
        except StorageUnavailable as exc:
            if relay is None:
                raise
            relay.journal_failed(exc)
            await relay.add(key, update)
            return
        JOURNAL_COMMITS["redis"].observe(perf_counter() - started)
        if not self._follow:
            self._saw(key, parse_entry_id(entry_id))

    async def _compact(self, room: RoomName, state: bytes, claim: EntryKey | None) -> None:
        key = str(room)
        if self._follow:
            position = ORIGIN if claim is None else claim
        else:
            position = self._seen.get(key, ORIGIN)
        stored = self._covered.get(key)
        if stored is not None and stored > position:
            raise StorageConflict(
                f"a state of room {key} covering the journal up to {entry_text(stored)} is "
                f"stored; this one covers it only up to {entry_text(position)}"
            )
        seq = journal_seq(entry_text(position))
        if self._follow:
            # Another node may have stored a state holding entries this node never applied
            # (its follower lagged behind that node's trim): fold the stored state in, so
            # that no save drops what a stored state holds. CRDT states merge; the result
            # covers both claims. (Bytes that are not CRDT states are saved as given and the
            # content store's own check refuses a save behind the stored position.)
            existing = await self._states.load_crdt_state(key)
            if existing is not None and existing[0] == state and existing[1] >= seq:
                # This very state is stored already (by another node, or before this node's
                # follower caught up): the compaction is a no-op, not a conflict.
                self._stored_at_least(key, covered_position(existing[1]))
                return
            if existing is not None and existing[0] != state:
                try:
                    state = merge_updates(existing[0], state)
                except InvalidUpdate:
                    log.debug("room %s: stored state is not a CRDT update; not merged", key)
                else:
                    seq = max(seq, existing[1])
        await self._states.save_crdt_state(key, state, seq)
        self._stored_at_least(key, covered_position(seq))
        if self._relay is not None and self._relay.diverts(key):
            log.debug("room %s: compacted; no trim while its updates wait in the spool", room)
            return
        try:
            trimmed = await self._trim(room.document_id)
        except StorageError as exc:
            # The state is stored: load already skips what it covers. The next compaction
            # of any room of the document trims what this one could not.
            log.warning(
                "room %s: compacted, but trimming the stream of %s failed: %s",
                room,
                room.document_id,
                exc,
            )
        else:
            log.debug("document %s: trimmed %d stream entries", room.document_id, trimmed)

    async def _trim(self, document_id: str) -> int:
        """Delete the longest prefix of the stream whose entries are all covered by the
        saved state of their own room; returns how many entries were deleted."""
        looked_up: set[str] = set()
        last_covered: str | None = None
        after: str | None = None
        while True:
            page = await self._journal.read(document_id, after, READ_PAGE)
            for entry in page:
                if not await self._is_covered(entry, looked_up):
                    return await self._trim_to(document_id, last_covered)
                last_covered = entry.id
            if len(page) < READ_PAGE:
                return await self._trim_to(document_id, last_covered)
            after = page[-1].id

    async def _trim_to(self, document_id: str, last_covered: str | None) -> int:
        if last_covered is None:
            return 0
        return await self._journal.trim(document_id, last_covered)

    async def _is_covered(self, entry: JournalEntry, looked_up: set[str]) -> bool:
        """Whether the saved state of the entry's room covers it: from the cache, else (once
        per room and trim) from the content store, as another node may have saved it."""
        room = room_of(entry)
        key = parse_entry_id(entry.id)
        known = self._covered.get(room)
        if known is not None and key <= known:
            return True
        if room in looked_up:
            return False
        looked_up.add(room)
        saved = await self._states.load_crdt_state(room)
        if saved is None:
            return False
        self._stored_at_least(room, covered_position(saved[1]))
        return key <= self._covered[room]

    async def _load(self, room: RoomName) -> StoredRoom:
        """The spool first, then the journal, then the state. An entry trimmed before the
        journal read was covered by a state saved before it, so the state read afterwards
        covers it too: nothing falls between the two reads, whatever other nodes compact
        meanwhile. An update the drainer moves from the spool after the spool read is in
        the journal read too (twice then, which is harmless)."""
        key = str(room)
        # Rows already moved (not yet removed) are in the stream, read next.
        spooled = [] if self._relay is None else await self._relay.unmoved_of(key)
        after = self._covered.get(key)
        entries: list[tuple[EntryKey, bytes]] = []
        cursor: str | None = None if after is None else entry_text(after)
        while True:
            page = await self._journal.read(room.document_id, cursor, READ_PAGE)
            entries += [
                (parse_entry_id(entry.id), entry.update)
                for entry in page
                if entry.section_id == room.section_id
            ]
            if len(page) < READ_PAGE:
                break
            cursor = page[-1].id
        saved = await self._states.load_crdt_state(key)
        snapshot: bytes | None = None
        position = ORIGIN
        if saved is not None:
            snapshot, seq = saved
            position = covered_position(seq)
            self._stored_at_least(key, position)
        journal = [(entry_key, update) for entry_key, update in entries if entry_key > position]
        if self._follow:
            self._saw(key, position)  # the state only: the follower marks the entries
        else:
            self._saw(key, journal[-1][0] if journal else position)
        updates = [update for _, update in journal] + spooled
        return StoredRoom(snapshot, tuple(updates))


__all__ = [
    "MAX_JOURNAL_SEQ",
    "ServiceRoomStore",
    "covered_position",
    "journal_seq",
    "require_durable",
]
