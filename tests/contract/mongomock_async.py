"""A thin async shim over mongomock: the subset of pymongo's async API the Mongo adapter uses.

Each method awaits nothing and calls mongomock synchronously; mongomock raises pymongo's own
exception types (DuplicateKeyError, BulkWriteError...), so the adapter's error translation
is exercised as it is against a real server. Anything the adapter starts using must be added
here explicitly: an attribute missing from the shim is a test failure, not a silent fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mongomock

Document = dict[str, Any]


class AsyncMockCursor:
    """``find``'s cursor: chainable sort/skip/limit, then ``await to_list()``."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def sort(self, key_or_list: Any, direction: int | str | None = None) -> AsyncMockCursor:
        if isinstance(key_or_list, list):
            # pymongo sends the sort as a BSON document: a key given twice keeps only its
            # last direction. mongomock would honour both; behave like the real driver.
            key_or_list = list(dict(key_or_list).items())
        self._cursor = self._cursor.sort(key_or_list, direction)
        return self

    def skip(self, skip: int) -> AsyncMockCursor:
        self._cursor = self._cursor.skip(skip)
        return self

    def limit(self, limit: int) -> AsyncMockCursor:
        self._cursor = self._cursor.limit(limit)
        return self

    async def to_list(self, length: int | None = None) -> list[Document]:
        items = list(self._cursor)
        return items if length is None else items[:length]

    async def explain(self) -> Document:
        raise NotImplementedError("mongomock has no query planner: explain needs a real MongoDB")


class AsyncMockCommandCursor:
    """``aggregate``'s cursor: ``await to_list()``."""

    def __init__(self, rows: list[Document]) -> None:
        self._rows = rows

    async def to_list(self, length: int | None = None) -> list[Document]:
        return self._rows if length is None else self._rows[:length]


class AsyncMockCollection:
    def __init__(self, collection: Any) -> None:
        self._collection = collection

    async def insert_one(self, document: Document) -> object:
        return self._collection.insert_one(document)

    async def insert_many(self, documents: list[Document], ordered: bool = True) -> object:
        return self._collection.insert_many(documents, ordered=ordered)

    async def find_one(self, filter: Any | None = None, *args: Any, **kwargs: Any) -> Any:
        return self._collection.find_one(filter, *args, **kwargs)

    def find(self, *args: Any, **kwargs: Any) -> AsyncMockCursor:
        return AsyncMockCursor(self._collection.find(*args, **kwargs))

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        projection: Mapping[str, Any] | None = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = False,
    ) -> Any:
        # mongomock 4.3's own find_one_and_update re-runs the caller's filter to fetch the
        # result when the projection drops _id, so an update that makes its own filter
        # false (a version bump, a $push guarded by $not) returns None. Do it by _id, as the
        # server does; mongomock is synchronous, so these steps are atomic on the loop.
        if upsert:
            raise NotImplementedError("the adapter does not upsert with find_one_and_update")
        target = self._collection.find_one(filter, {"_id": 1}, sort=sort)
        if target is None:
            return None
        by_id = {"_id": target["_id"]}
        before = None if return_document else self._collection.find_one(by_id, projection)
        self._collection.update_one(by_id, update)
        return self._collection.find_one(by_id, projection) if return_document else before

    async def update_one(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], upsert: bool = False
    ) -> Any:
        return self._collection.update_one(filter, update, upsert=upsert)

    async def delete_one(self, filter: Mapping[str, Any]) -> Any:
        return self._collection.delete_one(filter)

    async def delete_many(self, filter: Mapping[str, Any]) -> object:
        return self._collection.delete_many(filter)

    async def count_documents(self, filter: Mapping[str, Any]) -> int:
        count: int = self._collection.count_documents(filter)
        return count

    async def create_index(self, keys: Any, **kwargs: Any) -> str:
        name: str = self._collection.create_index(keys, **kwargs)
        return name

    async def aggregate(self, pipeline: list[Document]) -> AsyncMockCommandCursor:
        return AsyncMockCommandCursor(list(self._collection.aggregate(pipeline)))

    async def index_information(self) -> dict[str, Any]:
        info: dict[str, Any] = self._collection.index_information()
        return info


class AsyncMockDatabase:
    def __init__(self, database: Any) -> None:
        self._database = database

    @property
    def name(self) -> str:
        name: str = self._database.name
        return name

    def __getitem__(self, name: str) -> AsyncMockCollection:
        return AsyncMockCollection(self._database[name])


class AsyncMockClient:
    """An in-memory stand-in for ``AsyncMongoClient`` (``tz_aware=True`` like the adapter's)."""

    def __init__(self) -> None:
        # mongomock's stubs present its client as pymongo's MongoClient.
        self._client: mongomock.MongoClient[Document] = mongomock.MongoClient(tz_aware=True)

    def __getitem__(self, name: str) -> AsyncMockDatabase:
        return AsyncMockDatabase(self._client[name])

    async def drop_database(self, name: str) -> None:
        self._client.drop_database(name)

    async def close(self) -> None:
        self._client.close()
