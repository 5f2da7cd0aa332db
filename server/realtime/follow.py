"""Following one stream kind (changes or signals) of many documents, with a bounded number of
blocked reads (``docs/redis.md``, "Following the streams").

Where one blocking ``tail`` covers any number of documents (a single Redis, the memory
coordinator: the journal's ``wake_group`` is None), one reader tails them all, restarted when
the set of documents changes.

On Redis Cluster a blocking read cannot span slots, so the documents are followed through
their wake groups: one waiter per group that has followed documents blocks on the group's
wake-ups (at most the journal's number of groups, whatever the number of documents), and a
single reader reads the woken documents without blocking, from their positions. The reader
also sweeps every followed document every ``sweep`` seconds, so an append whose wake-up
was lost (a node that died between the two, a failover) is delivered late, never missed.
Only the reader reads the streams and moves the positions, so no entry is handled twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Final

from persistence.coordinator.ports import ChangeJournal
from persistence.coordinator.values import JournalEntry
from persistence.errors import StorageClosed, StorageError

log = logging.getLogger(__name__)

TAIL_TIMEOUT: Final = 5.0
MAX_BACKOFF: Final = 2.0
SWEEP_SECONDS: Final = 1.0  # the longest a lost wake-up delays an entry (plus one read)
READ_COUNT: Final = 500  # entries per document per read
SWEEP_BATCH: Final = 1_000  # documents per non-blocking read of a sweep


class _Retry:
    """A reading loop's backoff after storage errors (doubling from 50 ms to
    :data:`MAX_BACKOFF`), and the warning when reading stops and resumes."""

    __slots__ = ("_backoff", "_down_since", "_quiet")

    def __init__(self, *, quiet: bool = False) -> None:
        """``quiet``: log the errors at debug level, not the outage and the recovery."""
        self._backoff = 0.05
        self._down_since: float | None = None
        self._quiet = quiet

    async def failed(self, exc: StorageError, what: str = "cannot follow the streams") -> None:
        """Log the error (once per outage) and wait before the next attempt."""
        if self._quiet:
            log.debug("cluster: %s: %s", what, exc)
        elif self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
            log.warning("cluster: %s: %s", what, exc)
        await asyncio.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def succeeded(self) -> None:
        if self._down_since is not None:
            elapsed = asyncio.get_running_loop().time() - self._down_since
            log.info("cluster: following again after %.1f s", elapsed)
            self._down_since = None
        self._backoff = 0.05


class StreamFollower:
    """Follows ``stream`` for the documents of ``positions`` (a dict the owner adds to; call
    :meth:`added` after adding a document, :meth:`refresh` after removing some), calling
    ``handle`` with each entry after moving the document's position past it. ``prune`` is
    called when the streams are idle, to drop documents no longer wanted."""

    def __init__(
        self,
        stream: ChangeJournal,
        positions: dict[str, str],
        handle: Callable[[JournalEntry], None],
        prune: Callable[[], None],
        *,
        sweep: float = SWEEP_SECONDS,
    ) -> None:
        self._stream = stream
        self._positions = positions
        self._handle = handle
        self._prune = prune
        self.sweep = sweep
        self._groups: dict[str, int | None] = {}
        self._members: dict[int, set[str]] = {}
        self._dirty: set[str] = set()
        self._ready = asyncio.Event()  # the reader has documents to read
        self._changed = asyncio.Event()  # the set of documents changed
        self._direct_changed = asyncio.Event()
        self.sweeps = 0
        self.reads = 0

    def _group(self, document_id: str) -> int | None:
        group = self._groups.get(document_id)
        if group is None and document_id not in self._groups:
            group = self._groups[document_id] = self._stream.wake_group(document_id)
        return group

    def added(self, document_id: str) -> None:
        """``document_id`` was added to the positions: read it once now (a wake-up written
        before its waiter saw it followed is not lost) and follow it."""
        if self._group(document_id) is not None:
            self._mark((document_id,))
        self._changed.set()

    def refresh(self) -> None:
        self._changed.set()

    def _mark(self, documents: Iterable[str]) -> None:
        before = len(self._dirty)
        self._dirty.update(documents)
        if len(self._dirty) > before:
            self._ready.set()

    async def run(self) -> None:
        waiters: dict[int, asyncio.Task[None]] = {}
        direct: asyncio.Task[None] | None = None
        reader: asyncio.Task[None] | None = None
        async with asyncio.TaskGroup() as tasks:
            while True:
                self._changed.clear()
                members: dict[int | None, set[str]] = {}
                for document_id in list(self._positions):
                    members.setdefault(self._group(document_id), set()).add(document_id)
                self._groups = {d: g for d, g in self._groups.items() if d in self._positions}
                direct_documents = members.pop(None, set())
                self._members = {g: m for g, m in members.items() if g is not None}
                if direct_documents:
                    if direct is None or direct.done():
                        direct = tasks.create_task(self._tail_directly())
                    else:
                        self._direct_changed.set()
                for group in self._members:
                    waiter = waiters.get(group)
                    if waiter is None or waiter.done():
                        waiters[group] = tasks.create_task(self._wait(group))
                if self._members and (reader is None or reader.done()):
                    reader = tasks.create_task(self._read())
                await self._changed.wait()

    # -- one blocking tail over everything ------------------------------------------------

    async def _tail_directly(self) -> None:
        retry = _Retry()
        while True:
            self._direct_changed.clear()  # before the positions are read: a change wakes it
            mine = {d: p for d, p in self._positions.items() if self._group(d) is None}
            if not mine:
                return
            read = await self._read_or_change(mine)
            if read.cancelled():
                continue  # a document was added: follow it too
            try:
                entries = read.result()
            except StorageClosed:
                return
            except StorageError as exc:
                await retry.failed(exc)
                continue
            retry.succeeded()
            self._deliver(entries)
            if not entries:
                self._prune()

    async def _read_or_change(
        self, positions: dict[str, str]
    ) -> asyncio.Future[list[JournalEntry]]:
        """Tail the streams until entries come or the set of documents changes (then the
        returned read is cancelled)."""
        read = asyncio.ensure_future(
            self._stream.tail(positions, timeout=TAIL_TIMEOUT, count=READ_COUNT)
        )
        changed = asyncio.ensure_future(self._direct_changed.wait())
        try:
            await asyncio.wait({read, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            if not read.done():
                read.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await read
        return read

    # -- wake groups ----------------------------------------------------------------------

    async def _wait(self, group: int) -> None:
        """Block on the wake-ups of ``group`` while it has followed documents; hand the
        woken documents to the reader."""
        cursor: str | None = None
        retry = _Retry(quiet=True)
        while self._members.get(group):
            try:
                if cursor is None:
                    cursor = await self._stream.wake_position(group)
                    # What was appended before this position came without a wake-up here.
                    self._mark(self._members.get(group, ()))
                cursor, woken = await self._stream.woken(group, cursor, timeout=TAIL_TIMEOUT)
            except StorageClosed:
                return
            except StorageError as exc:
                await retry.failed(exc, f"wake group {group}")
                continue
            retry.succeeded()
            followed = [d for d in woken if d in self._positions]
            if followed:
                self._mark(followed)

    async def _read(self) -> None:
        """Read the woken documents without blocking; every ``sweep`` seconds all of them."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + self.sweep
        retry = _Retry()
        while True:
            if not self._dirty:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_sweep - loop.time())):
                        await self._ready.wait()
            self._ready.clear()
            sweeping = loop.time() >= next_sweep
            if sweeping:
                documents = [d for d in self._positions if self._group(d) is not None]
                next_sweep = loop.time() + self.sweep
                self.sweeps += 1
            else:
                documents = list(self._dirty)
            self._dirty.difference_update(documents)
            done = 0
            try:
                for start in range(0, len(documents), SWEEP_BATCH):
                    batch = {
                        d: self._positions[d]
                        for d in documents[start : start + SWEEP_BATCH]
                        if d in self._positions
                    }
                    done = start
                    entries = await self._stream.tail(batch, timeout=0, count=READ_COUNT)
                    self.reads += 1
                    self._deliver(entries)
                    full = Counter(entry.document_id for entry in entries)
                    self._mark(d for d, n in full.items() if n >= READ_COUNT)  # more to read
            except StorageClosed:
                return
            except StorageError as exc:
                self._mark(documents[done:])  # read them again
                await retry.failed(exc)
                continue
            retry.succeeded()
            if sweeping:
                self._prune()

    def _deliver(self, entries: list[JournalEntry]) -> None:
        for entry in entries:
            if entry.document_id in self._positions:
                self._positions[entry.document_id] = entry.id
            try:
                self._handle(entry)
            except Exception:
                log.exception("cluster: entry %s of %s failed", entry.id, entry.document_id)
