"""The audit pipeline: audit and data-access entries reach the AuditStore off the hot path.

Three pieces (docs/audit.md tells the guarantees and the arithmetic of the bound):

* :class:`AuditTrail` queues entries synchronously (``record`` / ``access``: O(1), never
  raise, never await) and one background writer drains the queues into the relational
  :class:`~persistence.relational.ports.AuditStore`, up to ``batch_size`` rows per
  transaction. Batching: an idle writer writes what it is given at once; after a write it
  writes again at once only for a full batch (or when flushed or closing), otherwise it
  waits until ``flush_interval`` has passed since its last write, so entries that trickle in
  (or arrive while a write is in flight) share the next transaction, and no entry waits
  longer than ``flush_interval`` plus the write in flight. Under load, full batches are
  written back to back: throughput is never capped by the interval.
  StorageUnavailable keeps the batch and retries it with exponential backoff, forever while
  running (appends are idempotent per entry id, so a retry after an unknown outcome is
  safe); a StorageConflict isolates the offending entries (the batch is written one entry
  at a time, and only the entries that conflict are dropped). The queues are bounded
  (``max_queued``): past it new entries are dropped and counted. ``aclose`` stops
  accepting, writes what is queued (retrying up to its timeout) and reports what it could
  not write.
* :class:`~server.identity.edit_tally.EditTally` (in its own module, importable from here)
  turns keystrokes into one ``edit`` audit row per user, document and section per window:
  ``count`` only bumps counters.
* :class:`~server.identity.audit_entries.AuditContext` (likewise) builds entries carrying
  the request's user, IP and user agent.

Everything here runs on the event loop's thread: call ``record``, ``access`` and ``count``
from it (not from worker threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Final, Generic, TypeVar

from persistence.errors import StorageClosed, StorageConflict, StorageError
from persistence.relational.ports import AuditStore
from persistence.relational.records import AuditEntry, DataAccessEntry
from server.identity.audit_entries import ACCESS_TYPES as ACCESS_TYPES
from server.identity.audit_entries import AUDITED_ACTIONS as AUDITED_ACTIONS
from server.identity.audit_entries import AuditContext as AuditContext
from server.identity.edit_tally import EditTally as EditTally

log = logging.getLogger(__name__)

FIRST_BACKOFF: Final = 0.05
MAX_BATCH: Final = 5000  # the SQL adapter's largest append_access batch


E = TypeVar("E", AuditEntry, DataAccessEntry)
Stat = int | float | str | None


class _Lane(Generic[E]):
    """One queue of the trail (audit rows or access rows) and its counters."""

    def __init__(
        self,
        name: str,
        write: Callable[[Sequence[E]], Awaitable[object]],
        describe: Callable[[E], str],
    ) -> None:
        self.name = name
        self.write: Callable[[Sequence[E]], Awaitable[object]] = write
        self.describe: Callable[[E], str] = describe
        self.queue: deque[E] = deque()
        self.accepted = 0  # entries ever queued
        self.settled = 0  # entries taken off the queue: written or rejected
        self.written = 0

    def batch(self, size: int) -> list[E]:
        """The oldest ``size`` entries, left queued until they are settled."""
        return list(itertools.islice(self.queue, size))

    def settle(self, count: int) -> None:
        for _ in range(count):
            self.queue.popleft()
        self.settled += count


def _describe_audit(entry: AuditEntry) -> str:
    return (
        f"{entry.action} {entry.resource_type}/{entry.resource_id} "
        f"by user {entry.user_id} (entry {entry.id})"
    )


def _describe_access(entry: DataAccessEntry) -> str:
    return (
        f"{entry.access_type} of document {entry.document_id} "
        f"by user {entry.user_id} (entry {entry.id})"
    )


class AuditTrail:
    """The buffered writer of audit and data-access entries (see the module docstring).

    ``record`` / ``access`` may be called before :meth:`start` (entries wait in the queue);
    after :meth:`aclose` they drop the entry and count it. An async context manager.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        max_queued: int = 200_000,
        max_backoff: float = 2.0,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be in 1..{MAX_BATCH}")
        if flush_interval < 0 or max_backoff <= 0 or max_queued < 1:
            raise ValueError("flush_interval >= 0, max_backoff > 0 and max_queued >= 1 please")
        self._store = store
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_queued = max_queued
        self._max_backoff = max_backoff
        self._audit: _Lane[AuditEntry] = _Lane("audit", store.append, _describe_audit)
        self._access: _Lane[DataAccessEntry] = _Lane(
            "data-access", self._append_access, _describe_access
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._accepting = True
        self._refusal = "the audit trail is closed"
        self._closing = False
        self._last_write = -float("inf")  # monotonic end of the last write
        # flush() callers: (audit target, access target, future), resolved in order.
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._outage_since: float | None = None
        self._dropping = False  # an episode of dropped entries is under way (logged once)
        self._dropped_in_episode = 0
        self.retries = 0
        self.rejected = 0
        self.dropped = 0
        self.unwritten = 0  # left queued when aclose gave up
        self.last_error: str | None = None

    async def _append_access(self, entries: Sequence[DataAccessEntry]) -> int:
        return await self._store.append_access(entries, batch_size=self._batch_size)

    # -- the hot path ------------------------------------------------------------------------

    def record(self, entry: AuditEntry) -> None:
        """Queue an ``audit_logs`` row. O(1); never raises, never awaits."""
        self._enqueue(self._audit, entry)

    def access(self, entry: DataAccessEntry) -> None:
        """Queue a ``data_access_logs`` row. O(1); never raises, never awaits."""
        self._enqueue(self._access, entry)

    def _enqueue(self, lane: _Lane[E], entry: E) -> None:
        if not self._accepting:
            self._drop(self._refusal)
            return
        if len(self._audit.queue) + len(self._access.queue) >= self._max_queued:
            self._drop(f"the audit queue is full ({self._max_queued} entries)")
            return
        lane.queue.append(entry)
        lane.accepted += 1
        # Wake the writer only on the transitions it cares about: work after idleness, and
        # a full batch (which it writes without waiting for the interval).
        if len(lane.queue) == 1 or len(lane.queue) == self._batch_size:
            self._wake.set()

    def _drop(self, why: str) -> None:
        self.dropped += 1
        self._dropped_in_episode += 1
        if not self._dropping:
            self._dropping = True
            log.error("%s: dropping new audit entries (counted in stats()['dropped'])", why)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background writer (idempotent)."""
        if self._closing:
            raise RuntimeError("the audit trail is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="audit writer")

    async def flush(self) -> None:
        """Wait until every entry queued before this call is written (or rejected).

        Cuts the writer's wait for the interval short. While the store is unavailable this
        waits for it to come back: bound it with ``asyncio.wait_for`` where that matters.
        RuntimeError if those entries can never be written: the trail was never started, or
        it closed (or its store did) with them still queued.
        """
        audit_target, access_target = self._audit.accepted, self._access.accepted
        if self._audit.settled >= audit_target and self._access.settled >= access_target:
            return
        if self._task is None or self._task.done():
            raise RuntimeError(self._not_running())
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((audit_target, access_target, future))
        self._wake.set()
        await future

    def _not_running(self) -> str:
        queued = len(self._audit.queue) + len(self._access.queue)
        state = "was never started" if self._task is None else "is stopped"
        return f"the audit trail {state}: {queued} entries are not written"

    async def aclose(self, timeout: float = 30.0) -> None:
        """Stop accepting entries, write what is queued, stop the writer. Idempotent.

        Retries while the store is unavailable, for at most ``timeout`` seconds; what is
        still queued then is logged at ERROR and kept in ``stats()`` (``unwritten``).
        Never hangs longer than ``timeout`` (plus the cancellation of the write in flight).
        """
        if self._closing:
            return
        self._closing = True
        self._accepting = False
        if self._task is None and (self._audit.queue or self._access.queue):
            self._task = asyncio.create_task(self._run(), name="audit writer")
        if self._task is not None:
            self._wake.set()
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                self._task.cancel()
                await asyncio.wait({self._task})
        self.unwritten = len(self._audit.queue) + len(self._access.queue)
        if self.unwritten:
            log.error(
                "audit trail closed with %d entries unwritten (%d audit, %d data-access); "
                "last error: %s",
                self.unwritten,
                len(self._audit.queue),
                len(self._access.queue),
                self.last_error,
            )
        self._fail_waiters()

    async def __aenter__(self) -> AuditTrail:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the writer --------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = FIRST_BACKOFF
        while True:
            if not self._audit.queue and not self._access.queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._linger()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            try:
                await self._write_batches()
            except StorageClosed as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._accepting = False
                self._refusal = "the audit store is closed"
                log.error("audit store closed: the audit trail stops writing (%s)", exc)
                self._fail_waiters()
                return
            except Exception as exc:
                # A bug, not the store's weather: keep the entries and try again later.
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("audit writer failed; retrying in %.2f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            else:
                backoff = FIRST_BACKOFF

    def _linger(self) -> float:
        """How long to wait before writing what is queued (0: write now)."""
        if (
            self._closing
            or self._waiters
            or len(self._audit.queue) >= self._batch_size
            or len(self._access.queue) >= self._batch_size
        ):
            return 0.0
        return self._last_write + self._flush_interval - time.monotonic()

    async def _write_batches(self) -> None:
        """One batch of each non-empty queue, one transaction each."""
        if self._audit.queue:
            await self._write_lane(self._audit)
        if self._access.queue:
            await self._write_lane(self._access)
        self._last_write = time.monotonic()
        self._settle_waiters()
        queued = len(self._audit.queue) + len(self._access.queue)
        if self._dropping and not self._closing and queued <= self._max_queued // 2:
            log.warning(
                "the audit queue has room again; %d entries were dropped",
                self._dropped_in_episode,
            )
            self._dropping = False
            self._dropped_in_episode = 0

    async def _write_lane(self, lane: _Lane[E]) -> None:
        batch = lane.batch(self._batch_size)
        try:
            await self._write_retrying(lane, batch)
        except (StorageConflict, ValueError) as exc:
            # Some entry refers to something that is not stored (a user): write them one by
            # one so that only the offending entries are lost.
            if len(batch) == 1:
                self._reject(lane, batch[0], exc)
            else:
                log.warning(
                    "an audit batch of %d %s entries conflicts (%s); writing them one by one",
                    len(batch),
                    lane.name,
                    exc,
                )
                for entry in batch:
                    try:
                        await self._write_retrying(lane, [entry])
                    except (StorageConflict, ValueError) as single:
                        self._reject(lane, entry, single)
        lane.settle(len(batch))

    async def _write_retrying(self, lane: _Lane[E], entries: list[E]) -> None:
        """Write ``entries`` in one transaction, retrying transient failures forever.

        StorageConflict, ValueError and StorageClosed go to the caller. Any other storage
        error (StorageUnavailable, a schema not migrated yet) is waited out: the entries are
        idempotent, so writing them again after an unknown outcome never duplicates a row.
        """
        delay = FIRST_BACKOFF
        while True:
            try:
                await lane.write(entries)
            except (StorageConflict, StorageClosed):
                raise
            except StorageError as exc:
                self._unavailable(exc)
            else:
                self._available()
                lane.written += len(entries)
                return
            self.retries += 1
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self._max_backoff)

    def _reject(self, lane: _Lane[E], entry: E, exc: Exception) -> None:
        self.rejected += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.error("audit entry rejected and dropped: %s: %s", lane.describe(entry), exc)

    def _unavailable(self, exc: StorageError) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "audit store unavailable (%s): keeping %d entries queued and retrying",
                exc,
                len(self._audit.queue) + len(self._access.queue),
            )

    def _available(self) -> None:
        if self._outage_since is not None:
            lasted = time.monotonic() - self._outage_since
            self._outage_since = None
            log.info(
                "audit store back after %.1f s; writing the %d entries queued meanwhile",
                lasted,
                len(self._audit.queue) + len(self._access.queue),
            )

    def _settle_waiters(self) -> None:
        if not self._waiters:
            return
        pending = []
        for audit_target, access_target, future in self._waiters:
            if future.done():
                continue  # its flush() was cancelled
            if self._audit.settled >= audit_target and self._access.settled >= access_target:
                future.set_result(None)
            else:
                pending.append((audit_target, access_target, future))
        self._waiters = pending

    def _fail_waiters(self) -> None:
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(RuntimeError(self._not_running()))
        self._waiters = []

    # -- observability -----------------------------------------------------------------------

    def stats(self) -> dict[str, Stat]:
        """Counters for /metrics and the tests (``outage_seconds``: 0 when the store is up)."""
        outage = 0.0 if self._outage_since is None else time.monotonic() - self._outage_since
        return {
            "queued": len(self._audit.queue) + len(self._access.queue),
            "written": self._audit.written,
            "access_written": self._access.written,
            "retries": self.retries,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "unwritten": self.unwritten,
            "outage_seconds": outage,
            "last_error": self.last_error,
        }
