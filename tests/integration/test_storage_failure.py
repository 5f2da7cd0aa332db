"""A journal that refuses writes: nothing unsaved is shown, clients are told (1011; 1013 for
a room that cannot be loaded yet), and their edits arrive once storage is back and they
reconnect."""

from __future__ import annotations

import asyncio

from loadtests.client import YClient
from persistence.errors import StorageUnavailable
from persistence.rooms.memory import MemoryRoomStore
from persistence.rooms.ports import StoredRoom
from protocol.ysync import QueryAwareness
from tests.conftest import StartServer


class FlakyStore(MemoryRoomStore):
    """A memory store whose appends fail while ``failing`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    def append(self, room: str, update: bytes) -> asyncio.Future[None]:
        if not self.failing:
            return super().append(room, update)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_exception(StorageUnavailable("disk on fire"))
        return future

    async def load(self, room: str) -> StoredRoom:
        if self.failing:
            raise StorageUnavailable("disk on fire")
        return await super().load(room)


async def test_failed_journal_write_closes_the_room_and_nothing_is_lost(
    start_server: StartServer,
) -> None:
    store = FlakyStore()
    server = await start_server(room_store=store)
    writer = await YClient(server.ws_url, "flaky/s").__aenter__()
    async with YClient(server.ws_url, "flaky/s") as reader:
        await writer.insert(0, "saved ")
        await reader.wait_for(lambda: str(reader.text) == "saved ")
        store.failing = True
        await writer.insert(len(writer.text), "unsaved")
        # The update could not be journaled: it is never relayed, and the room closes.
        assert await reader.wait_closed() == 1011
        assert await writer.wait_closed() == 1011
        assert str(reader.text) == "saved "
        # While storage is down the room refuses to open rather than start empty, and says
        # to try again later (1013), without the storage's error text.
        refused = await YClient(server.ws_url, "flaky/s").connect()
        assert await refused.wait_closed() == 1013
        assert "retry in 5 s" in refused.close_reason
        assert "disk on fire" not in refused.close_reason
    store.failing = False
    # The writer's client still holds its edit and sends it when it reconnects.
    back = YClient(server.ws_url, "flaky/s")
    back.doc.apply_update(writer.doc.get_update())
    async with back, YClient(server.ws_url, "flaky/s") as fresh:
        await fresh.wait_for(lambda: str(fresh.text) == "saved unsaved")


class SlowStore(MemoryRoomStore):
    """A memory store whose loads wait until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def load(self, room: str) -> StoredRoom:
        await self.release.wait()
        return await super().load(room)


async def test_messages_while_a_room_loads_are_bounded(start_server: StartServer) -> None:
    store = SlowStore()
    server = await start_server(room_store=store)
    flooder = await YClient(server.ws_url, "slow/s").connect()
    patient = await YClient(server.ws_url, "slow/s").connect()
    for _ in range(300):
        await flooder.send(QueryAwareness())
    assert await flooder.wait_closed() == 1013
    store.release.set()
    # The patient client's early messages were kept and answered once the room opened.
    await asyncio.wait_for(patient.synced.wait(), 10)
    await patient.close()
