"""The socket side of the section locks: the ``lock`` and ``unlock`` application events.

Each request is checked here (a valid, unreserved section id; the edit right, or the admin
right to force), then carried out in the lock service's task group; the client hears of a
refusal through a non-fatal ``error`` event naming the section (and the holder, when known),
and of success through the ``locked`` / ``unlocked`` events every client of the document gets.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from crdt.ids import InvalidIdError, check_section_id
from persistence.coordinator.values import Lock
from persistence.errors import StorageError
from protocol.events import AppEvent
from server.errors import STORAGE_DETAIL
from server.hooks import ConnectionView, RoomView
from server.identity.authentication import Principal
from server.identity.rights import Right
from server.presence.lock_values import (
    RESERVED_PREFIX,
    HeldLock,
    LockHeld,
    Reason,
    Via,
    is_reserved,
    refusal,
)
from server.realtime.connection import error_event

log = logging.getLogger(__name__)


class LockActions(Protocol):
    """What the socket side asks of the lock service
    (:class:`~server.presence.locks.SectionLockService`)."""

    async def acquire(
        self, principal: Principal, document_id: str, section_id: str, *, via: Via
    ) -> tuple[HeldLock, bool]: ...

    async def release(
        self, principal: Principal, lock: Lock, *, reason: Reason, via: Via
    ) -> bool: ...

    async def holder(self, document_id: str, section_id: str) -> HeldLock | None: ...

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None: ...


class LockRequests:
    """The ``lock`` / ``unlock`` event handlers of one lock service."""

    def __init__(self, service: LockActions) -> None:
        self._service = service

    def _section_of(self, room: RoomView, conn: ConnectionView, event: AppEvent) -> str | None:
        section = event.get("section", room.name.section_id)
        try:
            section_id = check_section_id(section)
        except InvalidIdError as exc:
            conn.send_event(error_event(4400, "invalid section", str(exc), fatal=False))
            return None
        if is_reserved(section_id):
            detail = f"section ids starting with {RESERVED_PREFIX!r} cannot be locked"
            conn.send_event(error_event(4400, "invalid section", detail, fatal=False))
            return None
        return section_id

    def on_lock_event(self, room: RoomView, conn: ConnectionView, event: AppEvent) -> None:
        """``{"type": "lock", "section": S}`` from a client."""
        section_id = self._section_of(room, conn, event)
        principal = conn.principal
        if section_id is None or principal is None:
            return
        if conn.read_only or conn.right < Right.EDIT:
            detail = "locking a section needs the edit right on the document"
            conn.send_event(refusal(4403, "forbidden", detail, section_id, None))
            return
        document_id = room.name.document_id
        self._service.spawn(self._lock_for(conn, principal, document_id, section_id), "lock")

    async def _lock_for(
        self, conn: ConnectionView, principal: Principal, document_id: str, section_id: str
    ) -> None:
        try:
            await self._service.acquire(principal, document_id, section_id, via="socket")
        except LockHeld as held:
            conn.send_event(refusal(4409, "section locked", str(held), section_id, held.holder))
        except StorageError as exc:
            log.warning("locks: %s of %s unavailable: %s", section_id, document_id, exc)
            conn.send_event(refusal(4503, "locks unavailable", STORAGE_DETAIL, section_id, None))

    def on_unlock_event(self, room: RoomView, conn: ConnectionView, event: AppEvent) -> None:
        """``{"type": "unlock", "section": S}`` (``"force": true`` for admins)."""
        section_id = self._section_of(room, conn, event)
        principal = conn.principal
        if section_id is None or principal is None:
            return
        may_force = bool(event.get("force")) and conn.right >= Right.ADMIN
        document_id = room.name.document_id
        self._service.spawn(
            self._unlock_for(conn, principal, document_id, section_id, may_force), "unlock"
        )

    async def _unlock_for(
        self,
        conn: ConnectionView,
        principal: Principal,
        document_id: str,
        section_id: str,
        may_force: bool,
    ) -> None:
        try:
            held = await self._service.holder(document_id, section_id)
            if held is None:
                detail = f"section {section_id} is not locked"
                conn.send_event(refusal(4404, "not locked", detail, section_id, None))
                return
            mine = held.lock.owner == principal.user_id
            if not mine and not may_force:
                detail = f"section {section_id} is locked by another user"
                conn.send_event(refusal(4403, "not the holder", detail, section_id, held))
                return
            reason: Reason = "released" if mine else "forced"
            if not await self._service.release(principal, held.lock, reason=reason, via="socket"):
                detail = f"section {section_id} is not locked"
                conn.send_event(refusal(4404, "not locked", detail, section_id, None))
        except StorageError as exc:
            log.warning("locks: %s of %s unavailable: %s", section_id, document_id, exc)
            conn.send_event(refusal(4503, "locks unavailable", STORAGE_DETAIL, section_id, None))
