"""Where a node's data lives: its name, its content store and its room store, as the settings
say (embedded SQLite by default, MongoDB and the Redis change stream when configured)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from typing import Any

from persistence.content.cms_ports import CmsQueries
from persistence.content.ports import ContentStore
from persistence.content.sqlite import SqliteContentStore
from persistence.content.sqlite_cms import SqliteCmsQueries
from persistence.coordinator.ports import Coordinator
from persistence.errors import StorageUnavailable
from persistence.rooms.memory import MemoryRoomStore
from persistence.rooms.ports import RoomStore
from persistence.rooms.service import ServiceRoomStore, require_durable
from persistence.rooms.sqlite import SqliteRoomStore
from persistence.rooms.sqlite_spool import Spool
from server.settings import Settings
from server.shutdown import CLOSE_SECONDS, bounded


def node_name(settings: Settings) -> str:
    """This node's stable name (its spool file is named after it): COLLAB_NODE_NAME, else
    the host name and port."""
    if settings.node_name:
        return settings.node_name
    suffix = str(settings.port) if settings.port else f"pid{os.getpid()}"
    return _token(f"{socket.gethostname()}-{suffix}")


def _token(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:100]


async def open_content_store(settings: Settings) -> ContentStore:
    """The document content store: MongoDB when ``mongo_url`` is set, else embedded SQLite."""
    if settings.mongo_url:
        # Imported only when configured: pymongo weighs tens of MB of memory.
        from persistence.content.mongo import MongoContentStore

        return MongoContentStore.from_url(settings.mongo_url, settings.mongo_database)
    return await SqliteContentStore.open(settings.data_dir / "content.sqlite3")


async def open_store(
    settings: Settings,
    coordinator: Coordinator,
    content: ContentStore,
    stack: contextlib.AsyncExitStack | None = None,
    node_id: str = "node",
) -> RoomStore:
    """The room store the settings ask for: the Redis change stream + the content store in
    service mode (``redis_url`` set; Redis must be durable), else embedded SQLite."""
    if settings.storage == "memory":
        return MemoryRoomStore()
    if settings.redis_url:
        require_durable(await coordinator.durability())
        # While Redis cannot take appends, updates wait in a durable local spool (editing
        # goes on; they reach the stream, in order, when Redis is back).
        spool = await Spool.open(settings.data_dir / f"spool-{node_name(settings)}.sqlite3")
        if stack is not None:
            # After the store (callbacks run LIFO).
            stack.push_async_callback(bounded, "closing the spool", spool.aclose, CLOSE_SECONDS)
        return ServiceRoomStore(
            coordinator.journal, content, origin=node_id, follow=True, spool=spool
        )
    return await SqliteRoomStore.open(settings.data_dir / "rooms.sqlite3")


class _NoCmsQueries:
    """The CMS queries of a content store this module does not know (a test's stand-in):
    every call is StorageUnavailable."""

    def __getattr__(self, name: str) -> Any:
        async def unavailable(*args: object, **kwargs: object) -> Any:
            raise StorageUnavailable("this content store offers no CMS queries")

        return unavailable


def cms_queries(content: ContentStore) -> CmsQueries:
    """The CMS queries (joins, aggregations, counters) on the content store's database."""
    if isinstance(content, SqliteContentStore):
        return SqliteCmsQueries(content)
    if type(content).__module__ == "persistence.content.mongo":
        from persistence.content.mongo import MongoContentStore
        from persistence.content.mongo_cms import MongoCmsQueries

        assert isinstance(content, MongoContentStore)
        return MongoCmsQueries(content)
    found: CmsQueries = _NoCmsQueries()
    return found
