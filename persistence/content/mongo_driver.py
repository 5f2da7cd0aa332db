"""The subset of the MongoDB driver's async API the Mongo adapter uses, as protocols: pymongo's
``AsyncDatabase`` satisfies them, and so does the test suite's mongomock shim, so the adapter
is type-checked against both (``persistence/content/mongo.py`` re-exports them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

Document = dict[str, Any]


class MongoCursor(Protocol):
    def sort(self, key_or_list: Any, direction: int | str | None = None) -> MongoCursor: ...

    def skip(self, skip: int) -> MongoCursor: ...

    def limit(self, limit: int) -> MongoCursor: ...

    async def to_list(self, length: int | None = None) -> list[Document]: ...

    async def explain(self) -> Document: ...


class MongoCommandCursor(Protocol):
    async def to_list(self, length: int | None = None) -> list[Document]: ...


class MongoDeleteResult(Protocol):
    @property
    def deleted_count(self) -> int: ...


class MongoUpdateResult(Protocol):
    @property
    def matched_count(self) -> int: ...


class MongoCollection(Protocol):
    async def insert_one(self, document: Document) -> object: ...

    async def insert_many(self, documents: list[Document], ordered: bool = True) -> object: ...

    async def find_one(self, filter: Any | None = None, *args: Any, **kwargs: Any) -> Any: ...

    def find(self, *args: Any, **kwargs: Any) -> MongoCursor: ...

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Mapping[str, Any],
        projection: Mapping[str, Any] | None = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: bool = False,
    ) -> Any: ...

    async def update_one(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], upsert: bool = False
    ) -> MongoUpdateResult: ...

    async def delete_one(self, filter: Mapping[str, Any]) -> MongoDeleteResult: ...

    async def delete_many(self, filter: Mapping[str, Any]) -> object: ...

    async def count_documents(self, filter: Mapping[str, Any]) -> int: ...

    async def create_index(self, keys: Any, **kwargs: Any) -> str: ...

    async def index_information(self) -> Mapping[str, Any]: ...

    async def drop_index(self, index_or_name: str, /) -> object: ...

    async def aggregate(self, pipeline: list[Document]) -> MongoCommandCursor: ...


class MongoDatabase(Protocol):
    def __getitem__(self, name: str) -> MongoCollection: ...
