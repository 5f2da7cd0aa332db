"""The document cache: ``doc:{documentId}`` (1 h TTL, the schema's) in front of the
content store's ``business_documents``, in service mode (``docs/administration.md``).

:class:`CachedContent` is a :class:`~persistence.content.ports.ContentStore` that passes
every call to the store it wraps, except that ``get`` of a business document is answered
from the cache when it holds the record, and every write of one (``insert``, ``update``:
the snapshotter's writes, metadata, status, permissions; ``delete``, ``add_revision``)
invalidates it. Datetimes are kept as ``{"$date": iso}`` (no stored key starts with ``$``).

Never stale after a write:

* on this node, the entry is deleted after the write returns, and a read that began before
  the write does not put what it read (a per-document generation counter: the put is skipped
  when a write happened meanwhile);
* across nodes, the writer deletes the entry again ``settle`` seconds later (1 s), so that
  another node's read that fetched the old record just before the write and cached it just
  after is dropped too; a read slower than ``settle`` is the only window left;
* a failed delete (Redis unavailable) is retried in the background, and until it succeeds
  this node reads that document from the store, never from the cache.

A cache that fails (unavailable, a record over its size limit) is bypassed: the store
answers. After a failure the cache is left alone for ``pause`` seconds (5 s): reads go to
the store, and writes only mark their document for a background delete, so that an outage
of Redis costs no request (nor the shutdown) its retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Final

from persistence.content.ports import ContentStore, Document, Page, Query
from persistence.content.search import SearchPage, SearchQuery
from persistence.coordinator.ports import DocumentCache
from persistence.errors import StorageError

log = logging.getLogger(__name__)

DOCUMENTS: Final = "business_documents"
DATE: Final = "$date"
RETRIES: Final = 8


def encode(value: Any) -> Any:
    """A record as JSON: datetimes as ``{"$date": iso}``."""
    if isinstance(value, datetime):
        return {DATE: value.isoformat()}
    if isinstance(value, Mapping):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    return value


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(DATE), str):
            return datetime.fromisoformat(value[DATE])
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


class CachedContent:
    """A content store with ``doc:{id}`` in front of ``business_documents`` reads."""

    def __init__(
        self,
        inner: ContentStore,
        cache: DocumentCache,
        tasks: asyncio.TaskGroup,
        *,
        settle: float = 1.0,
        pause: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._cache = cache
        self._tasks = tasks
        self._settle = settle
        self._pause = pause
        self._clock = clock
        self._resume_at = float("-inf")
        self._stopped = False
        self._generation: dict[str, int] = {}
        self._dirty: set[str] = set()
        self.hits = 0
        self.misses = 0

    # -- reads -------------------------------------------------------------------------------

    def _paused(self) -> bool:
        return self._clock() < self._resume_at

    def _failed(self, exc: StorageError) -> None:
        if not self._paused():
            log.warning("document cache unavailable (%s): bypassed for %g s", exc, self._pause)
        self._resume_at = self._clock() + self._pause

    async def get(self, collection: str, doc_id: str) -> Document | None:
        if collection != DOCUMENTS or doc_id in self._dirty or self._paused():
            return await self._inner.get(collection, doc_id)
        try:
            cached = await self._cache.get(doc_id)
        except ValueError:
            cached = None
        except StorageError as exc:
            self._failed(exc)
            return await self._inner.get(collection, doc_id)
        if cached is not None:
            self.hits += 1
            record: Document = decode(cached)
            return record
        self.misses += 1
        generation = self._generation.get(doc_id, 0)
        record_or_none = await self._inner.get(collection, doc_id)
        if (
            record_or_none is not None
            and self._generation.get(doc_id, 0) == generation
            and doc_id not in self._dirty
        ):
            try:
                await self._cache.put(doc_id, encode(record_or_none))
            except ValueError as exc:
                log.debug("not caching document %s: %s", doc_id, exc)
            except StorageError as exc:
                self._failed(exc)
            if self._generation.get(doc_id, 0) != generation:
                # A write on this node raced the put: drop what was put.
                await self._invalidate(doc_id)
        return record_or_none

    async def find(self, collection: str, query: Query) -> Page:
        return await self._inner.find(collection, query)

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._inner.search(query)

    async def list_revisions(
        self, document_id: str, *, limit: int, before_version: int | None = None
    ) -> list[Document]:
        return await self._inner.list_revisions(
            document_id, limit=limit, before_version=before_version
        )

    async def get_revision(self, document_id: str, revision_id: str) -> Document | None:
        return await self._inner.get_revision(document_id, revision_id)

    async def load_crdt_state(self, room: str) -> tuple[bytes, int] | None:
        return await self._inner.load_crdt_state(room)

    # -- writes ------------------------------------------------------------------------------

    async def insert(self, collection: str, doc: Mapping[str, Any]) -> Document:
        if collection != DOCUMENTS:
            return await self._inner.insert(collection, doc)
        doc_id = str(doc.get("documentId", ""))
        self._bump(doc_id)
        try:
            return await self._inner.insert(collection, doc)
        finally:
            await self._written(doc_id)

    async def update(
        self,
        collection: str,
        doc_id: str,
        set_fields: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> Document:
        if collection != DOCUMENTS:
            return await self._inner.update(
                collection, doc_id, set_fields, expected_version=expected_version
            )
        self._bump(doc_id)
        try:
            return await self._inner.update(
                collection, doc_id, set_fields, expected_version=expected_version
            )
        finally:
            await self._written(doc_id)

    async def delete(self, collection: str, doc_id: str) -> bool:
        if collection != DOCUMENTS:
            return await self._inner.delete(collection, doc_id)
        self._bump(doc_id)
        try:
            return await self._inner.delete(collection, doc_id)
        finally:
            await self._written(doc_id)

    async def add_revision(
        self, document_id: str, revision: Mapping[str, Any], *, keep_inline: int
    ) -> None:
        self._bump(document_id)
        try:
            await self._inner.add_revision(document_id, revision, keep_inline=keep_inline)
        finally:
            await self._written(document_id)

    async def save_crdt_state(self, room: str, state: bytes, journal_seq: int) -> None:
        await self._inner.save_crdt_state(room, state, journal_seq)

    async def ensure_indexes(self) -> None:
        await self._inner.ensure_indexes()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def stop(self) -> None:
        """The server is stopping: start no more background deletes (those running are
        cancelled with the app's other tasks). A write after this deletes once, inline."""
        self._stopped = True

    # -- invalidation ------------------------------------------------------------------------

    def _bump(self, doc_id: str) -> None:
        self._generation[doc_id] = self._generation.get(doc_id, 0) + 1
        if len(self._generation) > 100_000:
            # Forgetting generations only makes a racing read's put possible again, which
            # the settle delete then drops: bounded memory, same guarantee across nodes.
            self._generation.clear()
            self._generation[doc_id] = 1

    async def _written(self, doc_id: str) -> None:
        """After a write: delete now, and again once the settle delay has passed."""
        self._bump(doc_id)
        await self._invalidate(doc_id)
        if not self._stopped:
            self._tasks.create_task(self._settled(doc_id), name=f"uncache {doc_id}")

    async def _settled(self, doc_id: str) -> None:
        await asyncio.sleep(self._settle)
        await self._invalidate(doc_id)

    async def _invalidate(self, doc_id: str) -> None:
        if doc_id in self._dirty:
            return  # its background delete is pending: the cache is not read for it
        if self._paused():
            self._mark_dirty(doc_id)
            return
        try:
            await self._cache.delete(doc_id)
        except ValueError:
            return  # not an id the cache takes: it was never cached
        except StorageError as exc:
            self._failed(exc)
            self._mark_dirty(doc_id)

    def _mark_dirty(self, doc_id: str) -> None:
        self._dirty.add(doc_id)
        if self._stopped:
            log.error("document %s may stay cached until its TTL: stopping, Redis down", doc_id)
            return
        self._tasks.create_task(self._retry(doc_id), name=f"uncache {doc_id}")

    async def _retry(self, doc_id: str) -> None:
        delay = max(0.5, self._resume_at - self._clock())
        for _ in range(RETRIES):
            await asyncio.sleep(delay)
            if self._stopped:
                break
            try:
                await self._cache.delete(doc_id)
            except StorageError:
                delay = min(delay * 2, 30.0)
                continue
            self._dirty.discard(doc_id)
            return
        log.error("document %s may stay cached until its TTL: the cache is unreachable", doc_id)
