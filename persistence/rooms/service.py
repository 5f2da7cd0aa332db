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
``journal_seq``. :func:`journal_seq` maps an id to ``ms << 20 | seq``: exact and
order-preserving for every id with ``ms < 2**43`` (until the year 2248) and ``seq < 2**20``
(a million entries in one millisecond), and beyond that a lower bound (the seq, then the
ms, saturate). :func:`covered_position` maps it back. A lower bound is sound both ways: a
state claimed to cover less than it does only makes ``load`` replay entries it already
holds (harmless, CRDT updates are idempotent) and the trim keep a few more.

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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from crdt.document import merge_updates
from crdt.errors import InvalidUpdate
from crdt.ids import RoomName, parse_room_name
from persistence.content.ports import ContentStore
from persistence.coordinator.ports import ChangeJournal
from persistence.coordinator.values import (
    DurabilityReport,
    JournalEntry,
    check_token,
    check_update,
    parse_entry_id,
)
from persistence.errors import (
    StorageClosed,
    StorageConflict,
    StorageCorrupted,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)
from persistence.rooms.ports import StoredRoom
from persistence.rooms.sqlite_spool import Spool, SpooledUpdate

log = logging.getLogger(__name__)

EntryKey = tuple[int, int]
"""A stream id as ``(ms, seq)``: tuples compare in stream order."""

SEQ_BITS: Final = 20
MS_BITS: Final = 63 - SEQ_BITS
MAX_JOURNAL_SEQ: Final = 2**63 - 1
READ_PAGE: Final = 500
SPOOL_BACKOFF_MIN: Final = 0.05
SPOOL_BACKOFF_MAX: Final = 2.0
DRAIN_BATCH: Final = 500
DRAIN_CONCURRENCY: Final = 8
_SEQ_MASK: Final = (1 << SEQ_BITS) - 1
_ORIGIN: Final[EntryKey] = (0, 0)

OpKind = Literal["append", "compact", "load"]


# -- journal positions -----------------------------------------------------------------------


def journal_seq(entry_id: str) -> int:
    """The ``journal_seq`` saved with a state covering the entries up to ``entry_id``.

    ``ms << 20 | seq``: exact and order-preserving while ``ms < 2**43`` and ``seq < 2**20``;
    past either limit the result saturates to a lower bound (still order-preserving, no
    longer strictly), which is sound (see the module docstring). ValueError for an id that
    is not ``"<ms>-<seq>"``.
    """
    ms, seq = parse_entry_id(entry_id)
    if ms >> MS_BITS:
        return MAX_JOURNAL_SEQ
    return ms << SEQ_BITS | min(seq, _SEQ_MASK)


def covered_position(seq: int) -> EntryKey:
    """The newest stream id ``(ms, seq)`` a state saved with ``journal_seq`` ``seq`` covers.

    StorageCorrupted for a value :func:`journal_seq` cannot have produced.
    """
    if not 0 <= seq <= MAX_JOURNAL_SEQ:
        raise StorageCorrupted(f"stored journal position {seq!r} is not a journal_seq")
    return seq >> SEQ_BITS, seq & _SEQ_MASK


def _entry_text(key: EntryKey) -> str:
    return f"{key[0]}-{key[1]}"


def _room_of(entry: JournalEntry) -> str:
    return str(RoomName(entry.document_id, entry.section_id))


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


# Appends of one room waiting together are merged into one stream entry, up to this many.
MAX_BATCH: Final = 512


@dataclass(slots=True)
class _Op:
    kind: OpKind
    payload: bytes
    future: asyncio.Future[Any] = field(repr=False)
    claim: EntryKey | None = None  # follow mode: what a compaction covers, fixed at the call


@dataclass(slots=True)
class _Lane:
    """The queue of one room and the task working through it (None when idle)."""

    room: RoomName
    ops: deque[_Op] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


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

    **The spool** (``spool=``, a :class:`~persistence.rooms.sqlite_spool.Spool` the caller opens,
    gives
    to one store only, and closes after it). When an append to the journal fails with
    :class:`~persistence.errors.StorageUnavailable` (after the coordinator's own retries),
    the update goes to the spool instead, and the append's future resolves once the spool
    holds it durably. From then on:

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
        self.appends_merged = 0
        self._lanes: dict[str, _Lane] = {}
        # Per room: the newest entry the caller's state is known to hold (what a compaction
        # may claim to cover), and a lower bound of the position of the stored state (what
        # the trim and load may rely on). Stored positions never go back, so a cached one
        # stays a lower bound whatever other nodes save meanwhile.
        self._seen: dict[str, EntryKey] = {}
        self._covered: dict[str, EntryKey] = {}
        self._closed = False
        self._close_task: asyncio.Task[None] | None = None
        # The spool: whether the journal failed an append and has not taken one since; per
        # room, the spool adds not committed yet (and every add in flight); the drainer;
        # the seqs already moved to the stream but not yet removed from the spool.
        self._spool = spool
        self._drain_timeout = drain_timeout
        self._down = False
        self._adding: dict[str, int] = {}
        self._spool_writes: set[asyncio.Future[int]] = set()
        self._drainer: asyncio.Task[None] | None = None
        self._halted: StorageClosed | None = None  # the spool or the journal was closed
        self._moved: set[int] = set()
        self._episode: float | None = None  # when spooling started (time.monotonic)
        self._episode_moved = 0
        self._last_drain_error = ""
        self._spooled_total = 0
        self._drained_total = 0
        if spool is not None and spool.count():
            log.warning(
                "spool %s holds %d updates left by an earlier run: moving them to the "
                "change journal",
                spool.path,
                spool.count(),
            )
            self._start_episode()
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass  # no event loop yet: the first call starts the drainer
            else:
                _ = self._ensure_drainer()

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
        while self._spool_busy():
            if self._halted is not None:
                raise StorageClosed(f"the spool cannot be drained: {self._halted}")
            if self._closed and (self._drainer is None or self._drainer.done()):
                raise StorageClosed("the room store is closed; the spool is not empty")
            await asyncio.wait({self._ensure_drainer()})

    def stats(self) -> dict[str, int]:
        """``spooled_now`` (updates in the spool file), ``spooled_total`` (updates this store
        spooled), ``drained_total`` (updates it moved from the spool to the stream).
        (``appends_merged`` counts the appends that shared a stream entry.)"""
        return {
            "spooled_now": 0 if self._spool is None else self._spool.count(),
            "spooled_total": self._spooled_total,
            "drained_total": self._drained_total,
        }

    # -- the queues -----------------------------------------------------------------------

    def _submit(self, kind: OpKind, room: str, payload: bytes) -> asyncio.Future[Any]:
        if self._closed:
            raise StorageClosed("the room store is closed")
        name = parse_room_name(room)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        claim = self._seen.get(room) if self._follow and kind == "compact" else None
        lane = self._lanes.get(room)
        if lane is None:
            lane = self._lanes[room] = _Lane(name)
        lane.ops.append(_Op(kind, payload, future, claim))
        if lane.task is None:
            lane.task = loop.create_task(self._drain(room, lane), name=f"room store {room}")
        if self._spool_busy() and (self._drainer is None or self._drainer.done()):
            _ = self._ensure_drainer()
        return future

    async def _drain(self, room: str, lane: _Lane) -> None:
        """Run the room's operations one at a time, in call order, until the queue is empty."""
        try:
            while lane.ops:
                op = lane.ops[0]
                batch = self._appends_at_head(lane) if op.kind == "append" else []
                if len(batch) > 1:
                    await self._perform_batch(lane.room, batch)
                    for _ in batch:
                        lane.ops.popleft()
                    continue
                if not op.future.done():  # a caller may have cancelled its load
                    await self._perform(lane.room, op)
                lane.ops.popleft()
        except asyncio.CancelledError:
            for op in lane.ops:
                op.future.cancel()
            lane.ops.clear()
            raise
        finally:
            lane.task = None
            if not lane.ops and self._lanes.get(room) is lane:
                del self._lanes[room]

    @staticmethod
    def _appends_at_head(lane: _Lane) -> list[_Op]:
        """The appends queued at the head of a lane (at most MAX_BATCH), in order."""
        batch: list[_Op] = []
        for op in lane.ops:
            if op.kind != "append" or len(batch) >= MAX_BATCH:
                break
            batch.append(op)
        return batch

    async def _perform_batch(self, room: RoomName, batch: list[_Op]) -> None:
        """Several appends of one room that queued up while the previous write was in
        flight: merged into one CRDT update, written as one stream entry, each future
        resolved with the outcome. (Bytes that are not CRDT updates go one by one.)"""
        try:
            merged = merge_updates(*(op.payload for op in batch))
        except InvalidUpdate:
            for op in batch:
                await self._perform(room, op)
            return
        carrier = _Op("append", merged, asyncio.get_running_loop().create_future())
        await self._perform(room, carrier)
        exc = carrier.future.exception()
        for op in batch:
            if op.future.done():
                continue
            if exc is None:
                op.future.set_result(None)
            else:
                op.future.set_exception(exc)
        self.appends_merged += len(batch) - 1

    async def _perform(self, room: RoomName, op: _Op) -> None:
        try:
            result: object = None
            if op.kind == "append":
                await self._append(room, op.payload)
            elif op.kind == "compact":
                await self._compact(room, op.payload, op.claim)
            else:
                result = await self._load(room)
        except StorageError as exc:
            outcome: BaseException | None = exc
        except ValueError as exc:  # refused by the journal or the content store
            outcome = StorageError(f"{op.kind} of room {room} refused: {exc}")
            outcome.__cause__ = exc
        except Exception as exc:
            log.exception("room %s: %s failed unexpectedly", room, op.kind)
            outcome = StorageError(f"{op.kind} of room {room} failed: {exc!r}")
            outcome.__cause__ = exc
        else:
            outcome = None
        if op.future.done():
            return
        if outcome is None:
            op.future.set_result(result)
        else:
            op.future.set_exception(outcome)

    async def _close(self) -> None:
        busy = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if busy:
            await asyncio.wait(busy)
        if self._spool is None:
            return
        if self._spool_busy() and self._halted is None:
            done, _ = await asyncio.wait({self._ensure_drainer()}, timeout=self._drain_timeout)
            if not done:
                log.warning(
                    "closing with %d updates left in the spool %s: the next store opened "
                    "on it moves them to the change journal",
                    self._spool.count(),
                    self._spool.path,
                )
        drainer, self._drainer = self._drainer, None
        if drainer is not None and not drainer.done():
            drainer.cancel()
            await asyncio.gather(drainer, return_exceptions=True)

    # -- the operations -------------------------------------------------------------------

    def _saw(self, room: str, key: EntryKey) -> None:
        if key > self._seen.get(room, _ORIGIN):
            self._seen[room] = key

    def _stored_at_least(self, room: str, key: EntryKey) -> None:
        if key > self._covered.get(room, (-1, -1)):
            self._covered[room] = key

    async def _append(self, room: RoomName, update: bytes) -> None:
        key = str(room)
        if self._spool is not None and (self._down or self._spooled(key)):
            await self._to_spool(key, update)
            return
        try:
            entry_id = await self._journal.append(
                room.document_id, room.section_id, update, origin=self._origin
            )
        except StorageUnavailable as exc:
            if self._spool is None:
                raise
            self._journal_failed(exc)
            await self._to_spool(key, update)
            return
        if not self._follow:
            self._saw(key, parse_entry_id(entry_id))

    async def _compact(self, room: RoomName, state: bytes, claim: EntryKey | None) -> None:
        key = str(room)
        if self._follow:
            position = _ORIGIN if claim is None else claim
        else:
            position = self._seen.get(key, _ORIGIN)
        stored = self._covered.get(key)
        if stored is not None and stored > position:
            raise StorageConflict(
                f"a state of room {key} covering the journal up to {_entry_text(stored)} is "
                f"stored; this one covers it only up to {_entry_text(position)}"
            )
        seq = journal_seq(_entry_text(position))
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
        if self._spool is not None and (self._down or self._spooled(key)):
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
        room = _room_of(entry)
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
        spooled: list[SpooledUpdate] = []
        if self._spool is not None and self._spooled(key):
            # Rows already moved (not yet removed) are in the stream, read next.
            rows = await self._spool.of_room(key)
            spooled = [row for row in rows if row.seq not in self._moved]
        after = self._covered.get(key)
        entries: list[tuple[EntryKey, bytes]] = []
        cursor: str | None = None if after is None else _entry_text(after)
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
        position = _ORIGIN
        if saved is not None:
            snapshot, seq = saved
            position = covered_position(seq)
            self._stored_at_least(key, position)
        journal = [(entry_key, update) for entry_key, update in entries if entry_key > position]
        if self._follow:
            self._saw(key, position)  # the state only: the follower marks the entries
        else:
            self._saw(key, journal[-1][0] if journal else position)
        updates = [update for _, update in journal] + [row.update for row in spooled]
        return StoredRoom(snapshot, tuple(updates))

    # -- the spool ------------------------------------------------------------------------

    def _spool_busy(self) -> bool:
        """Whether the spool holds an update or one is on its way there."""
        return self._spool is not None and (self._spool.count() > 0 or bool(self._spool_writes))

    def _spooled(self, room: str) -> bool:
        """Whether an update of ``room`` is in the spool or on its way there."""
        assert self._spool is not None
        return bool(self._adding.get(room)) or self._spool.holds(room)

    def _start_episode(self) -> None:
        if self._episode is None:
            self._episode = time.monotonic()
            self._episode_moved = 0

    def _journal_failed(self, exc: StorageError) -> None:
        """An append failed: spool every append until the journal takes one again."""
        self._down = True
        if self._episode is None:
            assert self._spool is not None
            log.warning(
                "change journal unavailable (%s): spooling appends to %s until it is back",
                exc,
                self._spool.path,
            )
            self._start_episode()

    async def _to_spool(self, room: str, update: bytes) -> None:
        """Add ``update`` to the spool; returns once it is durable there."""
        assert self._spool is not None
        check_update(update)  # what the journal would refuse, the spool refuses too
        future = self._spool.add(room, update)
        self._adding[room] = self._adding.get(room, 0) + 1
        self._spool_writes.add(future)

        def landed(done: asyncio.Future[int]) -> None:
            self._spool_writes.discard(done)
            left = self._adding[room] - 1
            if left:
                self._adding[room] = left
            else:
                del self._adding[room]

        future.add_done_callback(landed)
        _ = self._ensure_drainer()
        await asyncio.shield(future)
        self._spooled_total += 1

    def _ensure_drainer(self) -> asyncio.Task[None]:
        """The drainer task, started if it is not running (unless it was halted)."""
        if self._drainer is None or (self._drainer.done() and self._halted is None):
            self._drainer = asyncio.get_running_loop().create_task(
                self._drain_spool(), name="room store spool drainer"
            )
        return self._drainer

    async def _drain_spool(self) -> None:
        """Move the spooled updates to the stream until the spool is empty; back off while
        the journal (or the spool) fails."""
        assert self._spool is not None
        delay = SPOOL_BACKOFF_MIN
        while True:
            try:
                batch = await self._spool.pending(DRAIN_BATCH)
                if not batch and self._spool_writes:
                    await asyncio.wait(set(self._spool_writes))
                    continue
                if not batch:
                    self._end_episode()
                    return
                await self._move(batch)
            except StorageClosed as exc:  # for good: the spool or the journal was closed
                self._halted = exc
                log.warning(
                    "spool drainer stopped (%s): %d updates stay in the spool",
                    exc,
                    self._spool.count(),
                )
                return
            except StorageError as exc:
                self._drain_failed(exc)
            except Exception:
                log.exception("the spool drainer failed unexpectedly")
            else:
                delay = SPOOL_BACKOFF_MIN
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, SPOOL_BACKOFF_MAX)

    async def _move(self, batch: list[SpooledUpdate]) -> None:
        """Append the batch to the stream (rooms in parallel, each in order), then remove from
        the spool the longest prefix of it that is in the stream. Raises the first failure."""
        assert self._spool is not None
        chains: dict[str, list[SpooledUpdate]] = {}
        for row in batch:
            if row.seq not in self._moved:
                chains.setdefault(row.room, []).append(row)
        failures: list[StorageError] = []
        slots = asyncio.Semaphore(DRAIN_CONCURRENCY)

        async def chain(rows: list[SpooledUpdate]) -> None:
            async with slots:
                for row in rows:
                    if failures:
                        return
                    try:
                        await self._move_one(row)
                    except StorageError as exc:
                        failures.append(exc)
                        return

        await asyncio.gather(*(chain(rows) for rows in chains.values()))
        through: int | None = None
        for row in batch:
            if row.seq not in self._moved:
                break
            through = row.seq
        if through is not None:
            await self._spool.remove_through(through)
            self._moved = {seq for seq in self._moved if seq > through}
        if failures:
            raise failures[0]

    async def _move_one(self, row: SpooledUpdate) -> None:
        try:
            name = parse_room_name(row.room)
            # Acknowledged when it was spooled: it lands even if the document froze since.
            entry_id = await self._journal.append(
                name.document_id, name.section_id, row.update, origin=self._origin, force=True
            )
        except ValueError as exc:
            # Only a spool file written by something else gets here (appends are checked
            # before they are spooled): it can never be appended, keeping it would block
            # every later update.
            log.error(
                "spooled update %d of %r refused by the journal, dropped: %s",
                row.seq,
                row.room,
                exc,
            )
            self._moved.add(row.seq)
            return
        self._moved.add(row.seq)
        self._down = False
        self._drained_total += 1
        self._episode_moved += 1
        if not self._follow:
            self._saw(str(name), parse_entry_id(entry_id))

    def _drain_failed(self, exc: StorageError) -> None:
        if isinstance(exc, StorageUnavailable):
            self._down = True
            log.debug("spool drainer: the change journal is still unavailable: %s", exc)
            return
        if str(exc) != self._last_drain_error:  # once per distinct error, not per retry
            self._last_drain_error = str(exc)
            log.error("spool drainer: cannot move spooled updates (will retry): %s", exc)

    def _end_episode(self) -> None:
        self._down = False
        self._last_drain_error = ""
        if self._episode is not None:
            elapsed = time.monotonic() - self._episode
            log.info(
                "spool drained: %d updates moved to the change journal, %.1f s after "
                "spooling started",
                self._episode_moved,
                elapsed,
            )
            self._episode = None


__all__ = [
    "MAX_JOURNAL_SEQ",
    "ServiceRoomStore",
    "covered_position",
    "journal_seq",
    "require_durable",
]
