"""The snapshotter: keeps ``business_documents.content`` in step with the live rooms.

Every change to a room of document ``D`` marks ``D`` dirty. The derived content (the
``content`` field of the schema: markdown, sections[], metadata.wordCount/readingTime) is
rebuilt from the outline room and every section room, then written to the content store,
debounced: ``idle`` seconds after the last change, and at the latest ``max_wait`` seconds after
the first change that is not yet written, never per keystroke. Sections whose room is not
loaded are read from the room store. Shutdown flushes every dirty document.

A failed write (storage down, a record over the store's size limit) keeps the document dirty
and is retried with exponential backoff: ``retry_base`` seconds after the first failure,
doubling up to ``retry_max``, whatever edits arrive meanwhile. Failing documents are listed
by :meth:`Snapshotter.health` (``/healthz``) until a write succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from crdt.document import RoomDoc
from crdt.errors import InvalidUpdate
from crdt.ids import RoomName
from crdt.markdown import BusinessContent, render_business_content
from crdt.outline import Outline
from crdt.section import section_text
from persistence.content.ports import ContentStore
from persistence.coordinator.ports import SectionLocks
from persistence.errors import DocumentNotFound, StorageError
from persistence.rooms.ports import RoomStore
from server.hooks import Hooks, Rejected, Stored, Storing

log = logging.getLogger(__name__)

LiveDoc = Callable[[str], RoomDoc | None]
# Failing documents listed by /healthz at most (the count is always complete).
MAX_FAILING_LISTED = 20


@dataclass(slots=True)
class _Failing:
    """A document whose snapshots fail: how often in a row, why, and when to try again."""

    failures: int
    error: str
    delay: float
    retry_at: float


class SnapshotClaims(Protocol):
    """One writer per document across nodes: claimed before a debounced write, released
    after it (a refused claim retries later)."""

    async def claim(self, document_id: str) -> bool:
        """Whether this node may write the document's snapshot now."""

    async def release(self, document_id: str) -> None:
        """End the claim; StorageError when the coordinator cannot be reached."""


# The lock a node holds on a document while it writes the snapshot (a reserved section id).
SNAPSHOT_CLAIM = "__snapshot"


class LockClaims:
    """With several nodes, one writes a document's snapshot at a time: the coordinator's
    section lock ``SNAPSHOT_CLAIM`` of the document, held by this node while it writes
    (:class:`SnapshotClaims` in service mode)."""

    def __init__(self, locks: SectionLocks, node_id: str) -> None:
        self._locks = locks
        self._node_id = node_id

    async def claim(self, document_id: str) -> bool:
        held = await self._locks.acquire(document_id, SNAPSHOT_CLAIM, self._node_id, 60.0)
        return held is not None

    async def release(self, document_id: str) -> None:
        await self._locks.release(document_id, SNAPSHOT_CLAIM, self._node_id)


class Snapshotter:
    """Debounced writer of derived content; background work runs in the given task group.

    Fires ``hooks.on_store`` before each debounced write (vetoable: a :class:`Rejected`
    skips the write, counted in ``snapshots_vetoed``) and ``hooks.after_store`` after it (the
    revision time policy subscribes there); an error either raises counts as a failed write.
    """

    def __init__(
        self,
        content: ContentStore,
        rooms: RoomStore,
        live_doc: LiveDoc,
        tasks: asyncio.TaskGroup,
        *,
        idle: float,
        max_wait: float,
        retry_base: float = 2.0,
        retry_max: float = 300.0,
        hooks: Hooks | None = None,
        claims: SnapshotClaims | None = None,
    ) -> None:
        self._hooks = hooks or Hooks()
        self._claims = claims
        self._content = content
        self._rooms = rooms
        self._live_doc = live_doc
        self._tasks = tasks
        self._idle = idle
        self._max_wait = max_wait
        self._first_change: dict[str, float] = {}
        self._last_change: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._flushing = False  # set by close(): no timer is armed after it
        self._retry_base = retry_base
        self._retry_max = max(retry_max, retry_base)
        self._failing: dict[str, _Failing] = {}
        self.snapshots_written = 0
        self.failures = 0
        self.claims_refused = 0
        self.vetoed = 0

    def touched(self, document_id: str) -> None:
        """A room of ``document_id`` changed. Called for every edit: it only notes the time,
        and arms one timer per dirty document (not one per keystroke). Never blocks."""
        if self._flushing:
            return
        now = time.monotonic()
        self._last_change[document_id] = now
        self._first_change.setdefault(document_id, now)
        if document_id not in self._timers:
            loop = asyncio.get_running_loop()
            delay = min(self._idle, self._max_wait)
            self._timers[document_id] = loop.call_later(delay, self._due, document_id)

    def _due(self, document_id: str) -> None:
        """The timer fired: write now if idle long enough (or waited too long), else re-arm."""
        now = time.monotonic()
        due = min(
            self._last_change.get(document_id, now) + self._idle,
            self._first_change.get(document_id, now) + self._max_wait,
        )
        failing = self._failing.get(document_id)
        if failing is not None:
            due = max(due, failing.retry_at)  # edits never shorten a backoff
        if due > now:
            loop = asyncio.get_running_loop()
            self._timers[document_id] = loop.call_later(due - now, self._due, document_id)
            return
        self._start(document_id)

    def _start(self, document_id: str) -> None:
        self._timers.pop(document_id, None)
        if document_id in self._running:
            if self._flushing:
                return  # flush waits for the running write
            # One write per document at a time: look again when the current one is done.
            self._timers[document_id] = asyncio.get_running_loop().call_later(
                self._idle, self._due, document_id
            )
            return
        task = self._tasks.create_task(self._write(document_id), name=f"snapshot {document_id}")
        self._running[document_id] = task

    async def _write(self, document_id: str) -> None:
        started = self._first_change.pop(document_id, None)
        self._last_change.pop(document_id, None)
        claimed = False
        try:
            if self._claims is not None:
                claimed = await self._claims.claim(document_id)
                if not claimed:
                    # Another node is writing this document now: look again later.
                    self.claims_refused += 1
                    self._retry(document_id, started, max(self._idle, 0.5))
                    return
            content = await self.render(document_id)
            if self._hooks.on_store:
                try:
                    await self._hooks.on_store(Storing(document_id, content))
                except Rejected as exc:
                    # An extension keeps this content out of the store: the journal holds
                    # the edits, the next change tries again.
                    self.vetoed += 1
                    log.info("document %s: snapshot refused by an extension: %s", document_id, exc)
                    return
            await self._commit(document_id, content)
            await self._hooks.after_store(Stored(document_id))
        except (StorageError, InvalidUpdate) as exc:
            failing = self._failed(document_id, exc)
            log.warning(
                "document %s: snapshot failed (%d in a row), next attempt in %.1f s: %s",
                document_id,
                failing.failures,
                failing.delay,
                exc,
            )
            self._retry(document_id, started, failing.delay)
        finally:
            del self._running[document_id]
            if claimed and self._claims is not None:
                try:
                    await self._claims.release(document_id)
                except StorageError as exc:
                    log.warning("document %s: snapshot claim not released: %s", document_id, exc)

    def _failed(self, document_id: str, exc: Exception) -> _Failing:
        """Count a failed write and set the document's next attempt (doubling delays)."""
        self.failures += 1
        previous = self._failing.get(document_id)
        delay = self._retry_base if previous is None else min(previous.delay * 2, self._retry_max)
        failing = _Failing(
            failures=1 if previous is None else previous.failures + 1,
            error=f"{type(exc).__name__}: {exc}"[:300],
            delay=delay,
            retry_at=time.monotonic() + delay,
        )
        self._failing[document_id] = failing
        return failing

    def _retry(self, document_id: str, started: float | None, delay: float) -> None:
        """Mark the document dirty again, so that a timer writes it ``delay`` s from now."""
        if self._flushing:
            log.warning("document %s: snapshot not written at shutdown", document_id)
            return
        now = time.monotonic()
        self._first_change.setdefault(document_id, started if started is not None else now)
        self._last_change.setdefault(document_id, now)
        timer = self._timers.pop(document_id, None)
        if timer is not None:
            timer.cancel()  # armed by an edit during the write: the backoff decides
        self._timers[document_id] = asyncio.get_running_loop().call_later(
            delay, self._due, document_id
        )

    async def write_now(self, document_id: str) -> BusinessContent:
        """Render and store the document's content now (creating its record if needed)."""
        content = await self.render(document_id)
        await self._commit(document_id, content)
        return content

    async def _commit(self, document_id: str, content: BusinessContent) -> None:
        await self._store(document_id, content)
        self.snapshots_written += 1
        self._failing.pop(document_id, None)

    async def render(self, document_id: str) -> BusinessContent:
        """The derived content of ``document_id`` as the rooms hold it now. Rooms that are
        not loaded are read from the room store into temporary documents, closed after."""
        with contextlib.ExitStack() as temporary:
            outline_doc = await self._doc(str(RoomName(document_id)), temporary)
            sections = [] if outline_doc is None else Outline(outline_doc.doc).sections()
            pairs = []
            for section in sections:
                doc = await self._doc(str(RoomName(document_id, section.id)), temporary)
                pairs.append((section, "" if doc is None else section_text(doc.doc)))
        return render_business_content(pairs)

    async def _doc(self, room: str, temporary: contextlib.ExitStack) -> RoomDoc | None:
        """The room's document, live or loaded; None for a room never written (a new
        document's: nothing to build a document for)."""
        live = self._live_doc(room)
        if live is not None:
            return live
        updates = (await self._rooms.load(room)).updates()
        if not updates:
            return None
        doc = temporary.enter_context(RoomDoc())
        doc.load(updates)
        return doc

    async def _store(self, document_id: str, content: BusinessContent) -> None:
        now = datetime.now(UTC)
        fields: dict[str, Any] = {"content": content.to_dict(), "updatedAt": now}
        try:
            await self._content.update("business_documents", document_id, fields)
        except DocumentNotFound:
            # Records are created with their document (REST, or the first join); one that
            # is gone was deleted: its rooms must not bring it back, ownerless.
            log.info("document %s has no record (deleted): content not stored", document_id)

    async def flush(self) -> None:
        """Write every dirty document now and wait for running writes."""
        for document_id in list(self._timers):
            self._timers.pop(document_id).cancel()
            self._start(document_id)
        if self._running:
            await asyncio.wait(list(self._running.values()))

    async def close(self) -> None:
        """Shutdown: write every dirty document now and wait for running writes; no timer is
        armed after this, so failed writes are not retried (the journal keeps their edits)."""
        self._flushing = True
        await self.flush()

    def stats(self) -> dict[str, int]:
        return {
            "snapshots_written": self.snapshots_written,
            "snapshot_failures": self.failures,
            "documents_dirty": len(self._timers) + len(self._running),
            "documents_failing": len(self._failing),
            "snapshot_claims_refused": self.claims_refused,
            "snapshots_vetoed": self.vetoed,
        }

    def health(self) -> dict[str, Any]:
        """The documents whose snapshots keep failing (``/healthz``): the most failed first,
        at most :data:`MAX_FAILING_LISTED`, each with its failures in a row, last error and
        the seconds until its next attempt."""
        now = time.monotonic()
        worst = sorted(self._failing.items(), key=lambda item: -item[1].failures)
        return {
            "failing": len(self._failing),
            "documents": [
                {
                    "documentId": document_id,
                    "failures": failing.failures,
                    "lastError": failing.error,
                    "retryDelaySeconds": failing.delay,
                    "nextAttemptSeconds": round(max(failing.retry_at - now, 0.0), 3),
                }
                for document_id, failing in worst[:MAX_FAILING_LISTED]
            ],
        }


def new_document(document_id: str, content: BusinessContent, now: datetime) -> dict[str, Any]:
    """The ``business_documents`` record of a document first created by joining its rooms."""
    return {
        "documentId": document_id,
        "title": document_id,
        "type": "custom",
        "status": "draft",
        "version": 1,
        "content": content.to_dict(),
        "revisions": [],
        "tags": [],
        "linkedDocuments": [],
        "createdAt": now,
        "updatedAt": now,
    }
