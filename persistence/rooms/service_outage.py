"""How :class:`persistence.rooms.service.ServiceRoomStore` keeps taking appends through an
outage of the change journal: :class:`OutageRelay`, over a
:class:`~persistence.rooms.sqlite_spool.Spool`.

An *episode* starts when an append to the journal fails with StorageUnavailable (or when the
store opens on a spool an earlier run left updates in) and ends when the spool is empty
again. During it:

* every append goes to the spool until the journal takes one again; after that, the appends
  of a room still go to the spool while it holds an update of that room (or one is on its
  way there), so nothing reaches the stream ahead of an earlier update of its room;
* a drainer task moves the spooled updates to the stream, oldest first (rooms in parallel,
  each room in order): append (with the store's ``origin``, forced past a freeze: it was
  acknowledged when it was spooled), then remove from the spool. It retries with a backoff
  from 50 ms doubling to 2 s, and stops for good when the spool or the journal is closed.
  An update moved twice (a crash between the append and the removal) is stored twice:
  replay is harmless.

One WARNING is logged when an episode starts, one INFO when it ends (how many updates were
moved, how long it took).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from crdt.ids import parse_room_name
from persistence.coordinator.ports import ChangeJournal
from persistence.coordinator.values import check_update
from persistence.errors import StorageClosed, StorageError, StorageUnavailable
from persistence.rooms.sqlite_spool import Spool, SpooledUpdate

# One logger for the whole service store (its operators filter on one name).
log = logging.getLogger("persistence.rooms.service")

SPOOL_BACKOFF_MIN: Final = 0.05
SPOOL_BACKOFF_MAX: Final = 2.0
DRAIN_BATCH: Final = 500
DRAIN_CONCURRENCY: Final = 8

Moved = Callable[[str, str], None]
"""Told ``(room, entry_id)`` when a spooled update of ``room`` reached the stream."""


class OutageRelay:
    """The spool of one room store and the drainer moving it to the journal.

    ``on_moved`` is told each update the drainer appended to the stream. The relay does not
    own the spool or the journal: :meth:`close` stops the drainer but closes neither.
    """

    def __init__(
        self,
        spool: Spool,
        journal: ChangeJournal,
        origin: str | None,
        on_moved: Moved,
        drain_timeout: float,
    ) -> None:
        self._spool = spool
        self._journal = journal
        self._origin = origin
        self._on_moved = on_moved
        self._drain_timeout = drain_timeout
        # Whether the journal failed an append and has not taken one since; per room, the
        # spool adds not committed yet; every add in flight; the drainer; the seqs already
        # moved to the stream but not yet removed from the spool.
        self._down = False
        self._adding: dict[str, int] = {}
        self._writes: set[asyncio.Future[int]] = set()
        self._drainer: asyncio.Task[None] | None = None
        self._halted: StorageClosed | None = None  # the spool or the journal was closed
        self._moved: set[int] = set()
        self._episode: float | None = None  # when spooling started (time.monotonic)
        self._episode_moved = 0
        self._last_drain_error = ""
        self.spooled_total = 0
        self.drained_total = 0
        if spool.count():
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

    # -- what the store asks --------------------------------------------------------------

    def spooled_now(self) -> int:
        """How many updates the spool file holds."""
        return self._spool.count()

    def busy(self) -> bool:
        """Whether the spool holds an update or one is on its way there."""
        return self._spool.count() > 0 or bool(self._writes)

    def diverts(self, room: str) -> bool:
        """Whether an append of ``room`` must go to the spool rather than the journal: the
        journal is failing, or an update of ``room`` is in the spool or on its way there."""
        return self._down or self._holds(room)

    def _holds(self, room: str) -> bool:
        """Whether an update of ``room`` is in the spool or on its way there."""
        return bool(self._adding.get(room)) or self._spool.holds(room)

    def journal_failed(self, exc: StorageError) -> None:
        """An append failed: spool every append until the journal takes one again."""
        self._down = True
        if self._episode is None:
            log.warning(
                "change journal unavailable (%s): spooling appends to %s until it is back",
                exc,
                self._spool.path,
            )
            self._start_episode()

    async def add(self, room: str, update: bytes) -> None:
        """Add ``update`` to the spool; returns once it is durable there. ValueError for an
        update the journal would refuse (the spool refuses it too)."""
        check_update(update)
        future = self._spool.add(room, update)
        self._adding[room] = self._adding.get(room, 0) + 1
        self._writes.add(future)

        def landed(done: asyncio.Future[int]) -> None:
            self._writes.discard(done)
            left = self._adding[room] - 1
            if left:
                self._adding[room] = left
            else:
                del self._adding[room]

        future.add_done_callback(landed)
        _ = self._ensure_drainer()
        await asyncio.shield(future)
        self.spooled_total += 1

    async def unmoved_of(self, room: str) -> list[bytes]:
        """The updates of ``room`` in the spool, oldest first, less those already in the
        stream (moved, not yet removed): what a load adds after the stream's entries."""
        if not self._holds(room):
            return []
        rows = await self._spool.of_room(room)
        return [row.update for row in rows if row.seq not in self._moved]

    def kick(self) -> None:
        """Start the drainer if something waits in the spool and it is not running."""
        if self.busy() and (self._drainer is None or self._drainer.done()):
            _ = self._ensure_drainer()

    async def wait_drained(self, store_closed: Callable[[], bool]) -> None:
        """Wait until the spool holds nothing. StorageClosed if the drainer was halted, or
        the store is closed (``store_closed()``) and nothing drains any more."""
        while self.busy():
            if self._halted is not None:
                raise StorageClosed(f"the spool cannot be drained: {self._halted}")
            if store_closed() and (self._drainer is None or self._drainer.done()):
                raise StorageClosed("the room store is closed; the spool is not empty")
            await asyncio.wait({self._ensure_drainer()})

    async def close(self) -> None:
        """Try to empty the spool for ``drain_timeout`` seconds, then stop the drainer (what
        remains stays in the spool file for the next store opened on it)."""
        if self.busy() and self._halted is None:
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

    # -- the drainer ----------------------------------------------------------------------

    def _ensure_drainer(self) -> asyncio.Task[None]:
        """The drainer task, started if it is not running (unless it was halted)."""
        if self._drainer is None or (self._drainer.done() and self._halted is None):
            self._drainer = asyncio.get_running_loop().create_task(
                self._drain(), name="room store spool drainer"
            )
        return self._drainer

    async def _drain(self) -> None:
        """Move the spooled updates to the stream until the spool is empty; back off while
        the journal (or the spool) fails."""
        delay = SPOOL_BACKOFF_MIN
        while True:
            try:
                batch = await self._spool.pending(DRAIN_BATCH)
                if not batch and self._writes:
                    await asyncio.wait(set(self._writes))
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
        self.drained_total += 1
        self._episode_moved += 1
        self._on_moved(str(name), entry_id)

    def _drain_failed(self, exc: StorageError) -> None:
        if isinstance(exc, StorageUnavailable):
            self._down = True
            log.debug("spool drainer: the change journal is still unavailable: %s", exc)
            return
        if str(exc) != self._last_drain_error:  # once per distinct error, not per retry
            self._last_drain_error = str(exc)
            log.error("spool drainer: cannot move spooled updates (will retry): %s", exc)

    def _start_episode(self) -> None:
        if self._episode is None:
            self._episode = time.monotonic()
            self._episode_moved = 0

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


__all__ = ["OutageRelay"]
