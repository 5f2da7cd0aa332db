"""Service mode: with COLLAB_REDIS_URL the journal is the Redis stream
``collab:{documentId}:changes`` and the CRDT state lives in the content store; a Redis that
could lose acknowledged writes is refused."""

from __future__ import annotations

import pytest

from loadtests.client import YClient
from persistence.content.sqlite import SqliteContentStore
from persistence.coordinator.redis import RedisCoordinator
from persistence.errors import StorageMisconfigured
from persistence.rooms.service import ServiceRoomStore
from protocol.events import decode_event
from protocol.ysync import AppEventMessage
from server.settings import Settings
from server.stores import open_store
from tests.conftest import StartServer
from tests.services.redis import StartRedis


async def test_edits_go_to_the_redis_stream_before_they_are_acknowledged(
    start_server: StartServer, redis_servers: StartRedis
) -> None:
    redis = redis_servers(aof=True)
    server = await start_server(redis_url=redis.url)
    acks: list[int] = []

    def on_message(message: object) -> None:
        if isinstance(message, AppEventMessage):
            event = decode_event(message.payload)
            if event.type == "ack":
                acks.append(int(event.get("updates")))

    async with YClient(server.ws_url, "plan/intro", query="events=1") as client:
        client.on_message = on_message
        await client.insert(0, "durable in redis")
        await client.wait_for(lambda: bool(acks))
    # What the stream and the content store hold rebuilds the section, without the server.
    coordinator = RedisCoordinator.from_url(redis.url)
    content = await SqliteContentStore.open(server.settings.data_dir / "content.sqlite3")
    try:
        entries = await coordinator.journal.read("plan")
        assert {entry.section_id for entry in entries} >= {"intro"}
        store = ServiceRoomStore(coordinator.journal, content)
        stored = await store.load("plan/intro")
        await store.aclose()
        async with YClient(server.ws_url, "plan/intro") as reader:
            assert str(reader.text) == "durable in redis"
        assert not stored.is_empty
    finally:
        await content.aclose()
        await coordinator.aclose()


async def test_a_redis_without_aof_always_is_refused(
    redis_servers: StartRedis, tmp_path: object
) -> None:
    redis = redis_servers(aof=False)
    coordinator = RedisCoordinator.from_url(redis.url)
    settings = Settings(redis_url=redis.url)
    try:
        with pytest.raises(StorageMisconfigured, match="appendonly"):
            await open_store(settings, coordinator, None)  # type: ignore[arg-type]
    finally:
        await coordinator.aclose()
