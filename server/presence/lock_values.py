"""The values of the section locks: a lock as this node knows it, the refusal a client gets,
and the reserved section ids (see :mod:`server.presence.locks` for the service)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from persistence.coordinator.values import Lock
from protocol.events import AppEvent
from server.realtime.connection import error_event

# Section ids starting with this are the server's own (the snapshot claim): never user locks.
RESERVED_PREFIX = "__"

Reason = Literal["released", "expired", "disconnected", "forced"]
Via = Literal["socket", "rest"]


def iso(timestamp: float) -> str:
    """Unix seconds as the API's ISO 8601 UTC form."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def epoch(value: object, default: float) -> float:
    """An ISO 8601 time (as :func:`iso` writes it) as Unix seconds; ``default`` when
    ``value`` is not one."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value).timestamp()
    return default


def is_reserved(section_id: str) -> bool:
    """Whether a section id is one the server keeps for itself (not lockable, not listed)."""
    return section_id.startswith(RESERVED_PREFIX)


@dataclass(frozen=True, slots=True)
class HeldLock:
    """A lock as this node knows it, with its owner's name and when to check on it."""

    lock: Lock
    owner_name: str | None
    deadline: float  # local clock: ask the coordinator at this time whether it still holds

    def fields(self) -> dict[str, Any]:
        """The lock as application event fields (``locked``, ``locks``, errors)."""
        lock = self.lock
        return {
            "section": lock.section_id,
            "owner": lock.owner,
            "ownerName": self.owner_name,
            "expiresAt": iso(lock.expires_at),
            "acquiredAt": iso(lock.acquired_at),
            "token": lock.token,
        }

    def view(self) -> dict[str, Any]:
        """The lock as the REST API shows it."""
        lock = self.lock
        return {
            "documentId": lock.document_id,
            "sectionId": lock.section_id,
            "owner": lock.owner,
            "ownerName": self.owner_name,
            "token": lock.token,
            "acquiredAt": iso(lock.acquired_at),
            "expiresAt": iso(lock.expires_at),
        }


class LockHeld(Exception):
    """The section is locked by another user."""

    def __init__(self, holder: HeldLock) -> None:
        super().__init__(f"section {holder.lock.section_id} is locked by {holder.lock.owner}")
        self.holder = holder


def refusal(
    code: int, title: str, detail: str, section_id: str, holder: HeldLock | None
) -> AppEvent:
    """A non-fatal ``error`` event refusing a lock request on ``section_id`` (with the
    current holder's lock when known)."""
    event = error_event(code, title, detail, fatal=False)
    fields = {**event.fields, "section": section_id}
    if holder is not None:
        fields["holder"] = holder.fields()
    return replace(event, fields=fields)
