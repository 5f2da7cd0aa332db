"""In-process adapter of :class:`persistence.rooms.ports.RoomStore`: nothing survives the process.

Used by tests and by benchmarks that measure the server with persistence off.
"""

from __future__ import annotations

import asyncio

from persistence.errors import StorageClosed
from persistence.rooms.ports import StoredRoom


class MemoryRoomStore:
    """Keeps rooms in dictionaries. Every call completes at once."""

    def __init__(self) -> None:
        self._snapshots: dict[str, bytes] = {}
        self._journals: dict[str, list[bytes]] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the room store is closed")

    async def load(self, room: str) -> StoredRoom:
        self._check_open()
        return StoredRoom(self._snapshots.get(room), tuple(self._journals.get(room, ())))

    def append(self, room: str, update: bytes) -> asyncio.Future[None]:
        self._check_open()
        self._journals.setdefault(room, []).append(update)
        return self._done()

    @staticmethod
    def _done() -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def compact(self, room: str, state: bytes) -> asyncio.Future[None]:
        self._check_open()
        self._snapshots[room] = state
        self._journals.pop(room, None)
        return self._done()

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> MemoryRoomStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
