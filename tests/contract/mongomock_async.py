"""A thin async shim over mongomock: the subset of pymongo's async API the Mongo adapter uses.

Each method awaits nothing and calls mongomock synchronously; mongomock raises pymongo's own
exception types (DuplicateKeyError, BulkWriteError...), so the adapter's error translation
is exercised as it is against a real server. Anything the adapter starts using must be added
here explicitly: an attribute missing from the shim is a test failure, not a silent fallback.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import mongomock

Document = dict[str, Any]

# Text indexes as created, by (database, collection): mongomock keeps their keys, not their
# weights. What $text needs of them.
_TEXT_INDEXES: dict[tuple[str, str], dict[str, float]] = {}
_WORD = re.compile(r"[^\W_]+")


class TextSearch:
    """MongoDB's ``$text`` as far as the adapter uses it, since mongomock has none: words of
    ``$search`` match stemmed words (a crude English stemmer: plural and verb endings), a
    record matching any of them (all of the quoted phrases when there are any, matched
    case-insensitively as written); the score sums, per indexed field, its weight times its
    matching words, damped by the field's length as MongoDB's is. Good enough to test the
    adapter's plumbing (filters, rights, paging, merging); ranking fine points and real
    stemming are tested against a real MongoDB (``COLLAB_TEST_MONGO_URL``)."""

    def __init__(self, search: str, weights: Mapping[str, float]) -> None:
        self.phrases = [p.replace(" ", "").lower() for p in re.findall(r'"([^"]*)"', search)]
        rest = re.sub(r'"[^"]*"', " ", search)
        self.stems = {_stem(word) for word in _WORD.findall(rest.lower())}
        self.stems |= {_stem(w) for p in self.phrases for w in _WORD.findall(p)}
        self.weights = weights

    def score(self, doc: Mapping[str, Any]) -> float | None:
        """The record's score, None when it does not match."""
        texts = {path: " ".join(_strings(doc, path.split("."))) for path in self.weights}
        joined = "".join(texts.values()).replace(" ", "").lower()
        if self.phrases and not all(phrase in joined for phrase in self.phrases):
            return None
        total = 0.0
        for path, text in texts.items():
            words = [_stem(w) for w in _WORD.findall(text.lower())]
            hits = sum(1 for w in words if w in self.stems)
            if hits:
                total += self.weights[path] * hits / (1.0 + math.log1p(len(words)))
        if total == 0.0 and self.phrases:
            total = 0.5  # phrases of a spaceless script: matched, though no word is
        return total if total > 0 else None


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _strings(value: object, parts: list[str]) -> list[str]:
    if isinstance(value, list):
        return [text for item in value for text in _strings(item, parts)]
    if not parts:
        return [value] if isinstance(value, str) else []
    if isinstance(value, Mapping):
        return _strings(value.get(parts[0]), parts[1:])
    return []


def _split_text(selector: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The selector without its ``$text`` condition (top level or in a top-level ``$and``),
    and the ``$search`` string."""
    if "$text" in selector:
        rest = {k: v for k, v in selector.items() if k != "$text"}
        return rest, str(selector["$text"]["$search"])
    if isinstance(selector.get("$and"), list):
        found = [c for c in selector["$and"] if "$text" in c]
        if found:
            others = [c for c in selector["$and"] if "$text" not in c]
            rest = {k: v for k, v in selector.items() if k != "$and"}
            if others:
                rest["$and"] = others
            return rest, str(found[0]["$text"]["$search"])
    return dict(selector), None


class ListCursor:
    """A cursor over found documents (``$text`` results): sort, skip, limit, to_list."""

    def __init__(self, items: list[Document]) -> None:
        self._items = items
        self._skip = 0
        self._limit: int | None = None

    def sort(self, key_or_list: Any, direction: int | str | None = None) -> ListCursor:
        keys = key_or_list if isinstance(key_or_list, list) else [(key_or_list, direction)]
        for key, how in reversed(keys):
            descending = isinstance(how, Mapping) or how == -1  # {"$meta": ...}: best first

            def by(doc: Document, name: str = key) -> tuple[bool, Any]:
                return doc.get(name) is None, doc.get(name)

            self._items.sort(key=by, reverse=descending)
        return self

    def skip(self, skip: int) -> ListCursor:
        self._skip = skip
        return self

    def limit(self, limit: int) -> ListCursor:
        self._limit = limit or None
        return self

    async def to_list(self, length: int | None = None) -> list[Document]:
        end = None if self._limit is None else self._skip + self._limit
        items = self._items[self._skip : end]
        return items if length is None else items[:length]

    async def explain(self) -> Document:
        raise NotImplementedError("mongomock has no query planner: explain needs a real MongoDB")


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

    def find(self, *args: Any, **kwargs: Any) -> AsyncMockCursor | ListCursor:
        selector = args[0] if args else kwargs.get("filter") or {}
        rest, search = _split_text(selector)
        if search is None:
            return AsyncMockCursor(self._collection.find(*args, **kwargs))
        projection = dict(args[1] if len(args) > 1 else kwargs.get("projection") or {})
        scored = [k for k, v in projection.items() if isinstance(v, Mapping) and "$meta" in v]
        for key in scored:
            del projection[key]
        items = []
        for doc, score in self._text_matches(rest, search):
            shown = self._collection.find_one({"_id": doc["_id"]}, projection or None)
            items.append({**shown, **dict.fromkeys(scored, score)})
        return ListCursor(items)

    def _text_matches(self, rest: Mapping[str, Any], search: str) -> list[tuple[Document, float]]:
        key = (self._collection.database.name, self._collection.name)
        weights = _TEXT_INDEXES.get(key)
        if weights is None:
            raise mongomock.OperationFailure("text index required for $text query")
        text = TextSearch(search, weights)
        found = []
        for doc in self._collection.find(rest):
            score = text.score(doc)
            if score is not None:
                found.append((doc, score))
        return found

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
        rest, search = _split_text(filter)
        if search is not None:
            return len(self._text_matches(rest, search))
        count: int = self._collection.count_documents(filter)
        return count

    async def create_index(self, keys: Any, **kwargs: Any) -> str:
        name: str = self._collection.create_index(keys, **kwargs)
        text_fields = [field for field, kind in keys if kind == "text"]
        if text_fields:
            weights = kwargs.get("weights") or {}
            _TEXT_INDEXES[(self._collection.database.name, self._collection.name)] = {
                field: float(weights.get(field, 1)) for field in text_fields
            }
        return name

    async def drop_index(self, name: str) -> None:
        info = self._collection.index_information().get(name, {})
        if any(kind == "text" for _, kind in info.get("key", ())):
            _TEXT_INDEXES.pop((self._collection.database.name, self._collection.name), None)
        self._collection.drop_index(name)

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
