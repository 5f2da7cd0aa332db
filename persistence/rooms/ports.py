"""The ports the server talks to. Adapters: :mod:`persistence.rooms.sqlite` (embedded),
:mod:`persistence.rooms.service` (service mode), :mod:`persistence.rooms.memory`.

Every adapter of a port passes the same contract suite (``tests/contract``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredRoom:
    """What storage holds for one room: the compacted state and the journal tail after it.

    Applying ``snapshot`` (if any) then every entry of ``journal`` in order rebuilds the room.
    Applying any of them twice is harmless (CRDT updates are idempotent).
    """

    snapshot: bytes | None
    journal: tuple[bytes, ...]

    @property
    def is_empty(self) -> bool:
        return self.snapshot is None and not self.journal

    def updates(self) -> list[bytes]:
        head = [self.snapshot] if self.snapshot is not None else []
        return head + list(self.journal)


class RoomStore(Protocol):
    """Durable storage of room documents: a change journal plus compacted snapshots.

    Guarantees of every adapter:

    * ``append`` enqueues the update and returns a future at once (it never blocks the
      caller); the future resolves once the update is durable (it survives ``kill -9`` of the
      process) or fails with a :class:`~persistence.errors.StorageError`.
    * Appends and compactions of one room take effect in call order (FIFO); ``load`` sees
      every append whose future resolved.
    * ``compact(room, state)`` is queued like ``append`` (the returned future resolves when
      it is done); it atomically stores ``state`` as the room's snapshot and drops the
      journal entries appended before the call; entries appended after it are kept. It
      never loses a concurrent append.
    * ``load`` of a room never stored returns an empty :class:`StoredRoom`; a read that fails
      raises ``StorageUnavailable`` or ``StorageCorrupted``, never an empty room.
    * ``aclose`` waits for queued writes, then releases what the adapter opened. Calls after
      it raise ``StorageClosed``.
    """

    async def load(self, room: str) -> StoredRoom: ...

    def append(self, room: str, update: bytes) -> asyncio.Future[None]: ...

    def compact(self, room: str, state: bytes) -> asyncio.Future[None]: ...

    async def aclose(self) -> None: ...
