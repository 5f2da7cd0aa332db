"""MongoDB adapter of :class:`persistence.content.ports.ContentStore` on pymongo's AsyncMongoClient.

The queries stay within what both a real MongoDB and mongomock honour (the contract suite runs
against both): equality, ``$in``/``$all``, ``$or``/``$and``, ``$regex`` with the search text
escaped (never ``$text``), ``$not``/``$elemMatch``, ``$push``/``$pull``, plain projections.
pymongo's errors are translated here, at the edge, into :mod:`persistence.errors`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

from bson import ObjectId
from bson.errors import InvalidBSON, InvalidDocument
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo import errors as mongo_errors

from persistence.content import mongo_search
from persistence.content.mongo_driver import (
    MongoCollection as MongoCollection,
)
from persistence.content.mongo_driver import (
    MongoCommandCursor as MongoCommandCursor,
)
from persistence.content.mongo_driver import (
    MongoCursor as MongoCursor,
)
from persistence.content.mongo_driver import (
    MongoDatabase as MongoDatabase,
)
from persistence.content.mongo_driver import (
    MongoDeleteResult as MongoDeleteResult,
)
from persistence.content.mongo_driver import (
    MongoUpdateResult as MongoUpdateResult,
)
from persistence.content.ports import (
    BUSINESS_DOCUMENTS,
    COLLECTIONS,
    CRDT_STATES,
    HEAVY_REVISION_FIELDS,
    REVISIONS,
    Bound,
    CollectionSpec,
    Document,
    Page,
    Query,
    check_crdt_args,
    check_id,
    check_list_args,
    check_query,
    check_scope,
    collection_spec,
    merge_revisions,
    prepare_insert,
    prepare_revision,
    prepare_update,
    summary,
)
from persistence.content.search import SearchHit, SearchPage, SearchQuery
from persistence.errors import (
    DocumentNotFound,
    DocumentTooLarge,
    StorageClosed,
    StorageConflict,
    StorageCorrupted,
    StorageUnavailable,
)
from persistence.latency import DEPENDENCIES

DUPLICATE_KEY = 11000
# Server-side "document too large" codes: BSONObjectTooLarge, and the update results that
# would exceed the limit.
TOO_LARGE_CODES = frozenset({10334, 17419, 17420})
# IndexOptionsConflict, IndexKeySpecsConflict: an index of that name exists with other options.
INDEX_CONFLICT_CODES = frozenset({85, 86})


# -- error translation -----------------------------------------------------------------------

_CALLS: Final = DEPENDENCIES["mongo"]


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Translate the driver's exceptions raised in the block into persistence errors. Every
    operation of the adapter passes here once: it is timed as one MongoDB call
    (``collab_dependency_call_seconds``), and counted as an error if it raises one."""
    with _CALLS.timed(), _translating(what):
        yield


@contextmanager
def _translating(what: str) -> Iterator[None]:
    try:
        yield
    except mongo_errors.DocumentTooLarge as exc:
        raise DocumentTooLarge(f"{what}: {exc}") from exc
    except InvalidDocument as exc:
        raise ValueError(f"{what}: {exc}") from exc
    except InvalidBSON as exc:
        raise StorageCorrupted(f"{what}: {exc}") from exc
    except mongo_errors.BulkWriteError as exc:
        codes = {error.get("code") for error in exc.details.get("writeErrors", [])}
        if codes == {DUPLICATE_KEY}:
            raise StorageConflict(f"{what}: duplicate key") from exc
        raise StorageUnavailable(f"{what}: {exc}") from exc
    except mongo_errors.OperationFailure as exc:
        raise _operation_failure(what, exc) from exc
    except mongo_errors.InvalidOperation as exc:
        raise StorageClosed(f"{what}: {exc}") from exc
    except mongo_errors.PyMongoError as exc:
        # ConnectionFailure (AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError) and
        # the rest: the server is unreachable or misbehaving; the caller may retry.
        raise StorageUnavailable(f"{what}: {exc}") from exc


def _operation_failure(what: str, exc: mongo_errors.OperationFailure) -> Exception:
    if exc.code == DUPLICATE_KEY:
        return StorageConflict(f"{what}: duplicate key")
    if exc.code in TOO_LARGE_CODES:
        return DocumentTooLarge(f"{what}: {exc}")
    if exc.code in INDEX_CONFLICT_CODES:
        return StorageConflict(f"{what}: an index conflicts: {exc}")
    return StorageUnavailable(f"{what}: {exc} (code {exc.code})")


def _from_bson(value: Any) -> Any:
    """Driver value -> port value: aware UTC datetimes, ObjectIds as strings, no ``_id``."""
    if isinstance(value, dict):
        return {key: _from_bson(item) for key, item in value.items() if key != "_id"}
    if isinstance(value, list):
        return [_from_bson(item) for item in value]
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC)
    if isinstance(value, ObjectId):
        return str(value)
    return value


def _document(raw: object, what: str) -> Document:
    if not isinstance(raw, dict):
        raise StorageCorrupted(f"{what}: the driver returned a {type(raw).__name__}")
    result: Document = _from_bson(raw)
    return result


# -- queries ---------------------------------------------------------------------------------


def _range(name: str, low: Bound, high: Bound) -> Document:
    """``low <= name <= high``; the type named so that only dates (numbers) match."""
    dated = isinstance(low, datetime) or isinstance(high, datetime)
    bounds: Document = {"$type": "date" if dated else "number"}
    if low is not None:
        bounds["$gte"] = low
    if high is not None:
        bounds["$lte"] = high
    return {name: bounds}


def _mongo_filter(spec: CollectionSpec, query: Query) -> Document:
    clauses: list[Document] = []
    for name, value in query.filters.items():
        # MongoDB keeps bools and numbers apart by itself; mongomock compares with Python's
        # ==, where True == 1. Naming the type makes both agree. None matches missing too.
        if isinstance(value, bool):
            clauses.append({name: {"$eq": value, "$type": "bool"}})
        elif isinstance(value, int | float):
            clauses.append({name: {"$eq": value, "$type": "number"}})
        else:
            clauses.append({name: value})
    if query.tags_all:
        clauses.append({"tags": {"$all": list(query.tags_all)}})
    if query.tags_any:
        clauses.append({"tags": {"$in": list(query.tags_any)}})
    clauses += [{name: value} for name, value in query.holds.items()]
    clauses += [_range(name, low, high) for name, (low, high) in query.ranges.items()]
    if query.accessible_to is not None:
        user = query.accessible_to
        access: list[Document] = [{name: user} for name in spec.access_fields]
        if query.accessible_ids:
            access.append({spec.id_field: {"$in": list(query.accessible_ids)}})
        clauses.append({"$or": access})
    if query.ids is not None:
        clauses.append({spec.id_field: {"$in": list(query.ids)}})
    if query.text is not None:
        # $regex on the escaped text, not $text: mongomock has no text search, and $text
        # matches stemmed words rather than substrings.
        pattern = re.escape(query.text)
        regex = {"$regex": pattern, "$options": "i"}
        clauses.append({"$or": [{name: regex} for name in spec.text_fields]})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _list_projection(spec: CollectionSpec) -> Document:
    projection: Document = {"_id": 0}
    if spec.has_revisions:
        projection.update({f"revisions.{name}": 0 for name in HEAVY_REVISION_FIELDS})
    return projection


class MongoContentStore:
    """Content in a MongoDB database. Build with :meth:`from_url`, or pass a database object.

    The store owns (and closes in :meth:`aclose`) only a client it created itself.
    """

    def __init__(
        self, database: MongoDatabase, *, client: AsyncMongoClient[Document] | None = None
    ):
        self._db = database
        self._client = client
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        database: str | None = None,
        *,
        server_selection_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        socket_timeout: float = 30.0,
        max_pool_size: int = 100,
    ) -> MongoContentStore:
        """A store on a new client (no I/O yet: the pool connects on first use).

        ``database`` defaults to the URL's database, else ``collab``. Raises ValueError for a
        malformed URL or option.
        """
        try:
            client: AsyncMongoClient[Document] = AsyncMongoClient(
                url,
                serverSelectionTimeoutMS=int(server_selection_timeout * 1000),
                connectTimeoutMS=int(connect_timeout * 1000),
                socketTimeoutMS=int(socket_timeout * 1000),
                maxPoolSize=max_pool_size,
                retryWrites=True,
                retryReads=True,
                tz_aware=True,
                appname="collab",
            )
        except mongo_errors.ConfigurationError as exc:
            raise ValueError(f"invalid MongoDB URL or option: {exc}") from exc
        db = client[database] if database else client.get_default_database("collab")
        return cls(db, client=client)

    async def __aenter__(self) -> MongoContentStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client if this store created it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._client is not None:
            with _translated("close"):
                await self._client.close()

    def _collection(self, name: str) -> MongoCollection:
        if self._closed:
            raise StorageClosed("the content store is closed")
        return self._db[name]

    # -- generic collection operations -----------------------------------------------------

    async def insert(self, collection: str, doc: Mapping[str, Any]) -> Document:
        spec = collection_spec(collection)
        stored = prepare_insert(spec, doc)
        with _translated(f"insert into {collection}"):
            # insert_one adds _id to the dict it is given: give it a copy.
            await self._collection(collection).insert_one(dict(stored))
        return stored

    async def get(self, collection: str, doc_id: str) -> Document | None:
        spec = collection_spec(collection)
        check_id(doc_id, spec.id_field)
        with _translated(f"get from {collection}"):
            raw = await self._collection(collection).find_one({spec.id_field: doc_id}, {"_id": 0})
        return None if raw is None else _document(raw, collection)

    async def update(
        self,
        collection: str,
        doc_id: str,
        set_fields: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> Document:
        spec = collection_spec(collection)
        check_id(doc_id, spec.id_field)
        fields = prepare_update(spec, set_fields, expected_version)
        selector: Document = {spec.id_field: doc_id}
        if expected_version is not None:
            selector["version"] = expected_version
        table = self._collection(collection)
        with _translated(f"update in {collection}"):
            raw = await table.find_one_and_update(
                selector,
                {"$set": fields},
                projection={"_id": 0},
                return_document=ReturnDocument.AFTER,
            )
            if raw is not None:
                return _document(raw, collection)
            exists = await table.find_one({spec.id_field: doc_id}, {"_id": 1})
        if exists is None:
            raise DocumentNotFound(f"{collection} {doc_id!r} not found")
        raise StorageConflict(f"{collection} {doc_id!r} is not at version {expected_version}")

    async def delete(self, collection: str, doc_id: str) -> bool:
        spec = collection_spec(collection)
        check_id(doc_id, spec.id_field)
        with _translated(f"delete from {collection}"):
            if spec.has_revisions:
                # Archive first: a crash in between leaves no orphan that a new document of
                # the same id would inherit.
                await self._collection(REVISIONS).delete_many({"documentId": doc_id})
            result = await self._collection(collection).delete_one({spec.id_field: doc_id})
        return result.deleted_count == 1

    async def find(self, collection: str, query: Query) -> Page:
        spec = collection_spec(collection)
        sort = check_query(spec, query)
        selector = _mongo_filter(spec, query)
        order = [(sort, -1 if query.descending else 1)]
        if sort != spec.id_field:
            # The business id breaks ties so that pages are stable. Never twice: the driver
            # turns the list into a mapping, where a repeated key keeps the last direction.
            order.append((spec.id_field, 1))
        table = self._collection(collection)
        with _translated(f"find in {collection}"):
            total = await table.count_documents(selector)
            cursor = (
                table.find(selector, _list_projection(spec))
                .sort(order)
                .skip(query.offset)
                .limit(query.limit)
            )
            raw = await cursor.to_list(None)
        return Page([_document(item, collection) for item in raw], total)

    async def search(self, query: SearchQuery) -> SearchPage:
        wanted = query.offset + query.limit
        hits: list[SearchHit] = []
        total = 0
        for scope in query.scopes:
            if not query.applies(scope.collection):
                continue
            spec = check_scope(scope)
            access = _mongo_filter(
                spec,
                Query(
                    accessible_to=scope.accessible_to,
                    accessible_ids=scope.accessible_ids,
                    ids=scope.ids,
                    filters=scope.filters,
                    tags_all=scope.tags_all,
                ),
            )
            clauses = [
                mongo_search.text_condition(query),
                *([access] if access else []),
                *mongo_search.filters(spec.name, query),
            ]
            selector = {"$and": clauses}
            meta = {"$meta": "textScore"}
            projection = {**_list_projection(spec), mongo_search.SCORE: meta}
            table = self._collection(spec.name)
            with _translated(f"search in {spec.name}"):
                total += await table.count_documents(selector)
                cursor = table.find(selector, projection).sort(
                    [(mongo_search.SCORE, meta), (spec.id_field, 1)]
                )
                found = await cursor.limit(wanted).to_list(None)
            for doc in found:
                score = float(doc.pop(mongo_search.SCORE, 0.0) or 0.0)
                hits.append(mongo_search.hit(spec.name, _document(doc, spec.name), score, query))
        hits.sort(key=lambda h: (-h.score, h.collection, h.id))
        return SearchPage(hits[query.offset : wanted], total)

    # -- revisions of business documents ---------------------------------------------------

    async def add_revision(
        self, document_id: str, revision: Mapping[str, Any], *, keep_inline: int
    ) -> None:
        check_id(document_id, "documentId")
        rev = prepare_revision(revision, keep_inline)
        version = rev["version"]
        docs = self._collection(BUSINESS_DOCUMENTS.name)
        with _translated("add a revision"):
            raw = await docs.find_one_and_update(
                {
                    "documentId": document_id,
                    "revisions": {"$not": {"$elemMatch": {"version": {"$gte": version}}}},
                },
                {"$push": {"revisions": rev}},
                projection={"_id": 0, "revisions.revisionId": 1, "revisions.version": 1},
                return_document=ReturnDocument.AFTER,
            )
            if raw is None:
                await self._inline_revisions(document_id)
                raise StorageConflict(f"{document_id!r} has a revision at version >= {version}")
            inline = _document(raw, "revisions").get("revisions", [])
            overflow = inline[: max(0, len(inline) - keep_inline)]
            if overflow:
                await self._archive(document_id, [item["revisionId"] for item in overflow])

    async def _archive(self, document_id: str, revision_ids: list[str]) -> None:
        """Move revisions out of the document: copy to the archive, then pull them.

        Idempotent, so a move interrupted between the two steps completes on the next call.
        """
        docs = self._collection(BUSINESS_DOCUMENTS.name)
        # Only the oldest revisions travel; "documentId": 1 makes this an inclusion
        # projection, so the document's other fields stay on the server.
        projection = {"_id": 0, "documentId": 1, "revisions": {"$slice": len(revision_ids)}}
        raw = await docs.find_one({"documentId": document_id}, projection)
        wanted = set(revision_ids)
        moving = [
            {**item, "documentId": document_id}
            for item in (raw or {}).get("revisions", [])
            if item.get("revisionId") in wanted
        ]
        if moving:
            try:
                await self._collection(REVISIONS).insert_many(moving, ordered=False)
            except mongo_errors.BulkWriteError as exc:
                codes = {error.get("code") for error in exc.details.get("writeErrors", [])}
                if codes != {DUPLICATE_KEY}:
                    raise
                # Already archived by an interrupted earlier move: nothing is lost.
        await docs.update_one(
            {"documentId": document_id},
            {"$pull": {"revisions": {"revisionId": {"$in": revision_ids}}}},
        )

    async def _inline_revisions(self, document_id: str) -> list[Document]:
        """The document's inline revisions; raises DocumentNotFound."""
        docs = self._collection(BUSINESS_DOCUMENTS.name)
        raw = await docs.find_one({"documentId": document_id}, {"_id": 0, "revisions": 1})
        if raw is None:
            raise DocumentNotFound(f"business document {document_id!r} not found")
        revisions: list[Document] = _document(raw, "revisions").get("revisions", [])
        return revisions

    async def list_revisions(
        self, document_id: str, *, limit: int, before_version: int | None = None
    ) -> list[Document]:
        check_list_args(document_id, limit, before_version)
        with _translated("list revisions"):
            inline = [summary(item) for item in await self._inline_revisions(document_id)]
            newest = merge_revisions(inline, [], limit, before_version)
            if len(newest) == limit:
                return newest
            bound = min((item["version"] for item in inline), default=None)
            if before_version is not None:
                bound = before_version if bound is None else min(bound, before_version)
            selector: Document = {"documentId": document_id}
            if bound is not None:
                selector["version"] = {"$lt": bound}
            projection: Document = {"_id": 0, "documentId": 0}
            projection.update(dict.fromkeys(HEAVY_REVISION_FIELDS, 0))
            cursor = (
                self._collection(REVISIONS)
                .find(selector, projection)
                .sort([("version", -1)])
                .limit(limit - len(newest))
            )
            archived = [_document(item, "revision") for item in await cursor.to_list(None)]
        return merge_revisions(newest, archived, limit, before_version)

    async def get_revision(self, document_id: str, revision_id: str) -> Document | None:
        check_id(document_id, "documentId")
        check_id(revision_id, "revisionId")
        with _translated("get a revision"):
            for item in await self._inline_revisions(document_id):
                if item.get("revisionId") == revision_id:
                    return item
            raw = await self._collection(REVISIONS).find_one(
                {"documentId": document_id, "revisionId": revision_id},
                {"_id": 0, "documentId": 0},
            )
        return None if raw is None else _document(raw, "revision")

    # -- CRDT state per room ---------------------------------------------------------------

    async def save_crdt_state(self, room: str, state: bytes, journal_seq: int) -> None:
        check_crdt_args(room, state, journal_seq)
        selector = {"room": room, "journalSeq": {"$lte": journal_seq}}
        update = {
            "$set": {"state": state, "journalSeq": journal_seq, "updatedAt": datetime.now(UTC)}
        }
        states = self._collection(CRDT_STATES)
        with _translated(f"save the CRDT state of {room!r}"):
            try:
                await states.update_one(selector, update, upsert=True)
            except mongo_errors.DuplicateKeyError:
                # The filter missed and the upsert collided with the room's document (unique
                # index): either a newer state is stored, or a concurrent first save of the
                # room won the insert race. Only the second may still apply.
                result = await states.update_one(selector, update)
                if result.matched_count != 1:
                    raise StorageConflict(
                        f"{room!r} has a CRDT state newer than seq {journal_seq}"
                    ) from None

    async def load_crdt_state(self, room: str) -> tuple[bytes, int] | None:
        check_id(room, "room")
        with _translated(f"load the CRDT state of {room!r}"):
            raw = await self._collection(CRDT_STATES).find_one({"room": room}, {"_id": 0})
        if raw is None:
            return None
        state, seq = raw.get("state"), raw.get("journalSeq")
        if not isinstance(state, bytes) or isinstance(seq, bool) or not isinstance(seq, int):
            raise StorageCorrupted(f"the CRDT state of {room!r} is malformed")
        return bytes(state), seq

    # -- indexes (collab migrate) ----------------------------------------------------------

    async def ensure_indexes(self) -> None:
        """Create every index the port relies on. Idempotent (named indexes)."""
        with _translated("ensure indexes"):
            for spec in COLLECTIONS.values():
                await self._ensure_collection_indexes(spec)
            revisions = self._collection(REVISIONS)
            await revisions.create_index(
                [("documentId", 1), ("version", 1)], name="documentId_version", unique=True
            )
            await revisions.create_index(
                [("documentId", 1), ("revisionId", 1)], name="documentId_revisionId"
            )
            await self._collection(CRDT_STATES).create_index(
                [("room", 1)], name="room_unique", unique=True
            )

    async def _ensure_collection_indexes(self, spec: CollectionSpec) -> None:
        table = self._collection(spec.name)
        await table.create_index([(spec.id_field, 1)], name=f"{spec.id_field}_unique", unique=True)
        if spec.slug_unique:
            # Partial rather than sparse: documents without a slug or with a null one coexist.
            await table.create_index(
                [("slug", 1)],
                name="slug_unique",
                unique=True,
                partialFilterExpression={"slug": {"$type": "string"}},
            )
        for name in spec.indexed_fields:
            await table.create_index([(name, 1)], name=name)
        # The one text index a collection may have serves search(); one made by an older
        # version over other fields ("text_search") gives way to it.
        keys, options = mongo_search.text_index(spec.name)
        existing = await table.index_information()
        for name, info in existing.items():
            if name != mongo_search.INDEX_NAME and any(
                kind == "text" for _, kind in info.get("key", ())
            ):
                await table.drop_index(name)
        await table.create_index(keys, **options)
