"""The edit tally: keystrokes become one ``edit`` audit row per user, document and section
per window (``count`` only bumps counters); the rows go through the audit trail
(:class:`~server.identity.audit.AuditTrail`).

Everything here runs on the event loop's thread: call ``count`` from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from persistence.relational.records import AuditEntry

log = logging.getLogger(__name__)


class AuditRecorder(Protocol):
    """Where the tally's entries go (the audit trail): ``record`` queues, never raises."""

    def record(self, entry: AuditEntry) -> None: ...


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
    request_id: str | None


class EditTally:
    """Edits audited per user, document and section per window, never per keystroke.

    ``count`` bumps the counters of its key (O(1)). The first count after a quiet spell
    opens a window; ``window`` seconds later (by ``clock``) the background task emits one
    ``edit`` :class:`AuditEntry` per key counted in it through ``trail.record`` and the next
    count opens the next window. Nothing is emitted for a window without edits (there is
    none: a quiet tally does not wake up). ``aclose`` emits what is pending; counts after it
    are ignored. The entry's ``changes``: ``section`` (None for the outline room),
    ``updates``, ``inserted`` / ``deleted`` (characters), ``first_at`` / ``last_at`` (ISO
    8601, UTC) and ``requestId`` (the request id of the socket's upgrade, when known); its
    ``created_at`` is the last edit's time, its IP, user agent and request id the last ones
    given.
    """

    def __init__(
        self,
        trail: AuditRecorder,
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
        request_id: str | None = None,
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
            self._counts[key] = _Tally(1, inserted, deleted, now, now, ip, user_agent, request_id)
            return
        tally.updates += 1
        tally.inserted += inserted
        tally.deleted += deleted
        tally.last_at = now
        if ip is not None:
            tally.ip = ip
        if user_agent is not None:
            tally.user_agent = user_agent
        if request_id is not None:
            tally.request_id = request_id

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
                        **({"requestId": tally.request_id} if tally.request_id else {}),
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
