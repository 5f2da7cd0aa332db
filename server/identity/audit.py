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
* :class:`EditTally` turns keystrokes into one ``edit`` audit row per user, document and
  section per window: ``count`` only bumps counters.
* :class:`AuditContext` builds entries carrying the request's user, IP and user agent.

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
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

from persistence.errors import StorageClosed, StorageConflict, StorageError
from persistence.relational.ports import AuditStore
from persistence.relational.records import AuditEntry, DataAccessEntry, check_ip

log = logging.getLogger(__name__)

# The actions the server audits (``audit_logs.action``) and the data accesses it logs
# (``data_access_logs.access_type``); docs/audit.md says when each is recorded.
AUDITED_ACTIONS: Final = (
    "create",
    "update",
    "delete",
    "status_change",
    "permission_change",
    "restore",
    "revision_save",
    "export",
    "lock",
    "unlock",
    "comment",
    "approval",
    "edit",
    "join",
    "denied",
    "login",
    "logout",
)
ACCESS_TYPES: Final = ("join", "read", "export")

FIRST_BACKOFF: Final = 0.05
MAX_BATCH: Final = 5000  # the SQL adapter's largest append_access batch
MAX_ERROR_MESSAGE: Final = 1000

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


# -- the edit tally --------------------------------------------------------------------------

TallyKey = tuple[uuid.UUID, str, str | None]


@dataclass(slots=True)
class _Tally:
    """The edits of one user in one section during the current window."""

    updates: int
    inserted: int
    deleted: int
    first_at: float  # wall-clock seconds
    last_at: float
    ip: str | None
    user_agent: str | None


class EditTally:
    """Edits audited per user, document and section per window, never per keystroke.

    ``count`` bumps the counters of its key (O(1)). The first count after a quiet spell
    opens a window; ``window`` seconds later (by ``clock``) the background task emits one
    ``edit`` :class:`AuditEntry` per key counted in it through ``trail.record`` and the next
    count opens the next window. Nothing is emitted for a window without edits (there is
    none: a quiet tally does not wake up). ``aclose`` emits what is pending; counts after it
    are ignored. The entry's ``changes``: ``section`` (None for the outline room),
    ``updates``, ``inserted`` / ``deleted`` (characters), ``first_at`` / ``last_at`` (ISO
    8601, UTC); its ``created_at`` is the last edit's time, its IP and user agent the last
    ones given.
    """

    def __init__(
        self,
        trail: AuditTrail,
        *,
        window: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0:
            raise ValueError("window must be > 0")
        self._trail = trail
        self._window = window
        self._clock = clock
        self._counts: dict[TallyKey, _Tally] = {}
        self._opened: float | None = None  # clock() when the current window opened
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.emitted = 0
        self.invalid = 0

    def count(
        self,
        user_id: uuid.UUID,
        document_id: str,
        section_id: str | None,
        *,
        inserted: int,
        deleted: int,
        ip: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        """One update by ``user_id`` in room ``document_id[/section_id]``. O(1), never raises."""
        if self._closed:
            return
        now = time.time()
        key = (user_id, document_id, section_id)
        tally = self._counts.get(key)
        if tally is None:
            if not self._counts:
                self._opened = self._clock()
                self._pending.set()
            self._counts[key] = _Tally(1, inserted, deleted, now, now, ip, user_agent)
            return
        tally.updates += 1
        tally.inserted += inserted
        tally.deleted += deleted
        tally.last_at = now
        if ip is not None:
            tally.ip = ip
        if user_agent is not None:
            tally.user_agent = user_agent

    async def start(self) -> None:
        """Start the background task that emits each window when it ends (idempotent)."""
        if self._closed:
            raise RuntimeError("the edit tally is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="edit tally")

    async def aclose(self) -> None:
        """Stop the task and emit what is pending (close it before the trail). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
        self.emit()

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            opened = self._opened if self._opened is not None else self._clock()
            remaining = opened + self._window - self._clock()
            if remaining > 0:
                await asyncio.sleep(remaining)
            self.emit_due()

    def emit_due(self) -> int:
        """Emit the current window if it has lasted ``window`` seconds; how many entries."""
        if self._opened is None or self._clock() - self._opened < self._window:
            return 0
        return self.emit()

    def emit(self) -> int:
        """Emit every pending tally now, whatever the window; how many entries."""
        counts, self._counts = self._counts, {}
        self._opened = None
        self._pending.clear()
        emitted = 0
        for (user_id, document_id, section_id), tally in counts.items():
            try:
                entry = AuditEntry(
                    user_id=user_id,
                    action="edit",
                    resource_type="business_document",
                    resource_id=document_id,
                    changes={
                        "section": section_id,
                        "updates": tally.updates,
                        "inserted": tally.inserted,
                        "deleted": tally.deleted,
                        "first_at": _iso(tally.first_at),
                        "last_at": _iso(tally.last_at),
                    },
                    ip_address=tally.ip,
                    user_agent=tally.user_agent,
                    created_at=datetime.fromtimestamp(tally.last_at, UTC),
                )
            except ValueError as exc:
                self.invalid += 1
                log.error(
                    "edit tally of %s in %s/%s dropped: %s", user_id, document_id, section_id, exc
                )
                continue
            self._trail.record(entry)
            emitted += 1
        self.emitted += emitted
        return emitted

    def stats(self) -> dict[str, int]:
        return {"tally_pending": len(self._counts), "tally_emitted": self.emitted}


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


# -- request context -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditContext:
    """Who acts, from where: builds entries that carry the request's context.

    An IP address that does not parse is dropped (None) rather than failing the request.
    """

    user_id: uuid.UUID
    ip: str | None = None
    user_agent: str | None = None

    def __post_init__(self) -> None:
        try:
            ip = check_ip(self.ip)
        except ValueError:
            ip = None
        object.__setattr__(self, "ip", ip)

    def entry(
        self,
        action: str,
        resource_type: str,
        resource_id: str | None = None,
        changes: Any = None,
        *,
        error: str | None = None,
    ) -> AuditEntry:
        """An audit entry: status ``success``, or ``failure`` with ``error`` as its message."""
        message = None
        if error is not None:
            message = error.replace("\0", "")[:MAX_ERROR_MESSAGE] or "failed"
        return AuditEntry(
            user_id=self.user_id,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            changes=changes,
            ip_address=self.ip,
            user_agent=self.user_agent,
            status="success" if error is None else "failure",
            error_message=message,
        )

    def access(
        self, document_id: str, access_type: str, sensitivity: str | None = None
    ) -> DataAccessEntry:
        """A data-access entry (``join``, ``read``, ``export``) of this user."""
        return DataAccessEntry(
            user_id=self.user_id,
            document_id=document_id,
            access_type=access_type,
            data_sensitivity=sensitivity,
        )
