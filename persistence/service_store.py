"""Service-mode adapter of :class:`persistence.ports.RoomStore`: the journal of every room is
the Redis change stream of its document, the compacted states live in the content store.

Where things are:

* the journal of room ``D`` or ``D/S`` is the entries of ``collab:{D}:changes`` (the
  coordinator's :class:`~persistence.coordinator.ChangeJournal`) whose section is None
  (the outline) or ``S``: one stream holds every section of a document;
* the compacted state of a room is its ``crdt_states`` record in the
  :class:`~persistence.content.ContentStore`, saved with the journal position it covers:
  every entry of that room with an id up to that position is in the state.

Each room has one queue and one worker task: appends, compactions and loads of a room run in
call order, one at a time (the journal port offers no ordered pipelining across
connections). Rooms run in parallel. An append's future resolves once ``journal.append``
returned: with Redis on ``appendonly yes`` / ``appendfsync always`` (see
:func:`require_durable`) the entry is then on disk.

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
nodes serve one room, the caller must compact only a state holding every entry of the room
up to its own last append (the other nodes' entries included): an entry of another node
with a smaller id is treated as covered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from crdt.ids import RoomName, parse_room_name
from persistence.content import ContentStore
from persistence.coordinator import ChangeJournal
from persistence.coordinator_values import (
    DurabilityReport,
    JournalEntry,
    check_token,
    parse_entry_id,
)
from persistence.errors import (
    StorageClosed,
    StorageConflict,
    StorageCorrupted,
    StorageError,
    StorageMisconfigured,
)
from persistence.ports import StoredRoom

log = logging.getLogger(__name__)

EntryKey = tuple[int, int]
"""A stream id as ``(ms, seq)``: tuples compare in stream order."""

SEQ_BITS: Final = 20
MS_BITS: Final = 63 - SEQ_BITS
MAX_JOURNAL_SEQ: Final = 2**63 - 1
READ_PAGE: Final = 500
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


@dataclass(slots=True)
class _Op:
    kind: OpKind
    payload: bytes
    future: asyncio.Future[Any] = field(repr=False)


@dataclass(slots=True)
class _Lane:
    """The queue of one room and the task working through it (None when idle)."""

    room: RoomName
    ops: deque[_Op] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class ServiceRoomStore:
    """Rooms in the change stream of their document plus a state in the content store.

    ``journal`` is the coordinator's change journal (:class:`persistence.redis.RedisCoordinator`
    in production, whose server must pass :func:`require_durable`), ``states`` the content
    store, ``origin`` the node id written with every entry (so that other nodes tailing the
    stream can skip this node's appends). The store does not own them: :meth:`aclose` waits
    for the queued work and stops accepting calls, but closes neither the journal nor the
    content store (their owner does, after closing this store).

    ``load``, ``append`` and ``compact`` raise :class:`~crdt.ids.InvalidRoomName` (a
    ValueError) at once for a room name that is not ``D`` or ``D/S``; every other failure
    comes through the future (or the awaited ``load``) as a
    :class:`~persistence.errors.StorageError`.
    """

    def __init__(
        self, journal: ChangeJournal, states: ContentStore, *, origin: str | None = None
    ) -> None:
        self._journal = journal
        self._states = states
        self._origin = None if origin is None else check_token(origin, "origin")
        self._lanes: dict[str, _Lane] = {}
        # Per room: the newest entry the caller's state is known to hold (what a compaction
        # may claim to cover), and a lower bound of the position of the stored state (what
        # the trim and load may rely on). Stored positions never go back, so a cached one
        # stays a lower bound whatever other nodes save meanwhile.
        self._seen: dict[str, EntryKey] = {}
        self._covered: dict[str, EntryKey] = {}
        self._closed = False

    async def __aenter__(self) -> ServiceRoomStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the port -------------------------------------------------------------------------

    async def load(self, room: str) -> StoredRoom:
        """The room's saved state and its journal entries after it, once the calls queued
        before this one are done. StorageUnavailable / StorageCorrupted when a read fails."""
        result = await self._submit("load", room, b"")
        assert isinstance(result, StoredRoom)
        return result

    def append(self, room: str, update: bytes) -> asyncio.Future[None]:
        """Queue ``update``; the future resolves once the journal stored it."""
        future: asyncio.Future[None] = self._submit("append", room, update)
        return future

    def compact(self, room: str, state: bytes) -> asyncio.Future[None]:
        """Queue a compaction: save ``state`` (covering every entry of the room appended
        before this call), then trim the covered prefix of the document's stream."""
        future: asyncio.Future[None] = self._submit("compact", room, state)
        return future

    async def aclose(self) -> None:
        """Refuse new calls (StorageClosed) and wait for the queued ones. Idempotent. The
        journal and the content store stay open: they belong to the caller."""
        self._closed = True
        busy = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if busy:
            await asyncio.wait(busy)

    # -- the queues -----------------------------------------------------------------------

    def _submit(self, kind: OpKind, room: str, payload: bytes) -> asyncio.Future[Any]:
        if self._closed:
            raise StorageClosed("the room store is closed")
        name = parse_room_name(room)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        lane = self._lanes.get(room)
        if lane is None:
            lane = self._lanes[room] = _Lane(name)
        lane.ops.append(_Op(kind, payload, future))
        if lane.task is None:
            lane.task = loop.create_task(self._drain(room, lane), name=f"room store {room}")
        return future

    async def _drain(self, room: str, lane: _Lane) -> None:
        """Run the room's operations one at a time, in call order, until the queue is empty."""
        try:
            while lane.ops:
                op = lane.ops[0]
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

    async def _perform(self, room: RoomName, op: _Op) -> None:
        run: Callable[[RoomName, bytes], Awaitable[object]] = {
            "append": self._append,
            "compact": self._compact,
            "load": self._load,
        }[op.kind]
        try:
            result = await run(room, op.payload)
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

    # -- the operations -------------------------------------------------------------------

    def _saw(self, room: str, key: EntryKey) -> None:
        if key > self._seen.get(room, _ORIGIN):
            self._seen[room] = key

    def _stored_at_least(self, room: str, key: EntryKey) -> None:
        if key > self._covered.get(room, (-1, -1)):
            self._covered[room] = key

    async def _append(self, room: RoomName, update: bytes) -> None:
        entry_id = await self._journal.append(
            room.document_id, room.section_id, update, origin=self._origin
        )
        self._saw(str(room), parse_entry_id(entry_id))

    async def _compact(self, room: RoomName, state: bytes) -> None:
        key = str(room)
        position = self._seen.get(key, _ORIGIN)
        stored = self._covered.get(key)
        if stored is not None and stored > position:
            raise StorageConflict(
                f"a state of room {key} covering the journal up to {_entry_text(stored)} is "
                f"stored; this one covers it only up to {_entry_text(position)}"
            )
        await self._states.save_crdt_state(key, state, journal_seq(_entry_text(position)))
        self._stored_at_least(key, covered_position(journal_seq(_entry_text(position))))
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

    async def _load(self, room: RoomName, _: bytes) -> StoredRoom:
        """The journal first, then the state. An entry trimmed before the journal read was
        covered by a state saved before it, so the state read afterwards covers it too:
        nothing falls between the two reads, whatever other nodes compact meanwhile."""
        key = str(room)
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
        self._saw(key, journal[-1][0] if journal else position)
        return StoredRoom(snapshot, tuple(update for _, update in journal))


__all__ = [
    "MAX_JOURNAL_SEQ",
    "ServiceRoomStore",
    "covered_position",
    "journal_seq",
    "require_durable",
]
