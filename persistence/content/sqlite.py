"""Embedded adapter of :class:`persistence.content.ports.ContentStore` on one SQLite file (WAL
mode).

Where things are:

* each collection is a table ``(id, slug, doc)``: the business id and the slug as columns
  with unique indexes, the document as JSON text (:mod:`persistence.content.sqlite_json`); filters
  and sorts read it with ``json_extract``, backed by expression indexes;
* every revision of a business document is a row of ``document_revisions`` with an
  ``inline`` flag: the port's "inline" revisions (the newest ``keep_inline``) are the flagged
  rows, assembled into the document's ``revisions[]`` when it is read, and archiving one is
  clearing its flag. Adding a revision therefore never rewrites the document's JSON;
* CRDT states are rows of ``crdt_states``.

One worker thread owns the connection; each call is one transaction, committed with
``synchronous=FULL`` (content writes are not on the keystroke path: no group commit needed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from persistence.content import sqlite_search
from persistence.content.ports import (
    BUSINESS_DOCUMENTS,
    CollectionSpec,
    Document,
    Page,
    Query,
    check_crdt_args,
    check_id,
    check_list_args,
    check_query,
    collection_spec,
    prepare_insert,
    prepare_revision,
    prepare_update,
)
from persistence.content.search import SearchPage, SearchQuery
from persistence.content.sqlite_json import (
    MAX_DOCUMENT_BYTES,
    PIPELINE_TABLE,
    REVISION_SUMMARY,
    SCHEMA,
    collections_ddl,
    dumps,
    icontains,
    loads,
    pipeline_ddl,
    sort_expression,
    where_clause,
)
from persistence.content.sqlite_keys import backfill, drop_keys, keys_ddl, write_keys
from persistence.errors import (
    DocumentNotFound,
    DocumentTooLarge,
    StorageClosed,
    StorageConflict,
    StorageCorrupted,
    StorageError,
    StorageUnavailable,
)

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
_NO_BOUND = 2**63 - 1
_DOCS = BUSINESS_DOCUMENTS.name


def _translate(exc: sqlite3.Error) -> StorageError:
    if isinstance(exc, sqlite3.IntegrityError):
        return StorageConflict(f"duplicate key: {exc}")
    if isinstance(exc, sqlite3.OperationalError):
        return StorageUnavailable(str(exc))
    if isinstance(exc, sqlite3.DatabaseError):
        return StorageCorrupted(str(exc))
    return StorageUnavailable(str(exc))


def _slug(spec: CollectionSpec, doc: Mapping[str, Any]) -> str | None:
    slug = doc.get("slug")
    return slug if spec.slug_unique and isinstance(slug, str) else None


class SqliteContentStore:
    """Content in a SQLite file. Open with :meth:`open`; close with :meth:`aclose`."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._path = path
        self._loop = loop
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "collab-sqlite-content")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> SqliteContentStore:
        """Open (creating if needed) the file, its tables and indexes.

        Raises StorageUnavailable (cannot open) or StorageCorrupted (not a database).
        """
        store = cls(path, asyncio.get_running_loop())
        try:
            await store._call(store._connect)
        except OSError as exc:
            store._executor.shutdown(wait=False)
            raise StorageUnavailable(f"cannot open {path}: {exc}") from exc
        except StorageError:
            store._executor.shutdown(wait=False)
            raise
        return store

    async def __aenter__(self) -> SqliteContentStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Let the calls already made finish, then close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._loop.run_in_executor(self._executor, self._disconnect)
        finally:
            self._executor.shutdown(wait=True)

    # -- the worker thread -----------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StorageClosed("the content store is closed")
        return await self._loop.run_in_executor(
            self._executor, functools.partial(self._run, fn, *args)
        )

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one call in the worker thread: any failure rolls its transaction back."""
        try:
            return fn(*args)
        except BaseException as exc:
            conn = self._conn
            if conn is not None and conn.in_transaction:
                conn.rollback()
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc) from exc
            raise

    def _connect(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.create_function("collab_icontains", 2, icontains, deterministic=True)
            sqlite_search.register(conn)
            conn.executescript(SCHEMA)
            self._conn = conn
            self._ensure_indexes()
        except BaseException:
            self._conn = None
            conn.close()
            raise

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "used before open()"
        return self._conn

    def _ensure_indexes(self) -> None:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        for statement in (*collections_ddl(), *sqlite_search.search_ddl()):
            conn.execute(statement)
        columns = {row[1] for row in conn.execute(f'PRAGMA table_xinfo("{PIPELINE_TABLE}")')}
        for statement in [*pipeline_ddl(columns), *keys_ddl()]:
            conn.execute(statement)
        backfill(conn, loads)
        conn.execute("COMMIT")
        sqlite_search.backfill(conn)

    # -- rows <-> documents (worker thread) ------------------------------------------------

    def _load(self, spec: CollectionSpec, doc_id: str) -> Document | None:
        sql = f'SELECT doc FROM "{spec.name}" WHERE id = ?'
        row = self._db().execute(sql, (doc_id,)).fetchone()
        return None if row is None else loads(row[0], f"{spec.name} {doc_id!r}")

    def _attach_inline(self, items: list[Document], *, full: bool) -> None:
        """Fill the ``revisions[]`` of business documents from their inline rows."""
        owners = {item["documentId"]: item for item in items if "revisions" in item}
        if not owners:
            return
        column = "revision" if full else REVISION_SUMMARY
        marks = ", ".join("?" * len(owners))
        rows = self._db().execute(
            f"SELECT document_id, {column} FROM document_revisions "
            f"WHERE inline = 1 AND document_id IN ({marks}) ORDER BY document_id, version",
            list(owners),
        )
        for owner in owners.values():
            owner["revisions"] = []
        for document_id, text in rows:
            owners[document_id]["revisions"].append(loads(text, "revision"))

    def _check_size(self, document_id: str, doc_bytes: int) -> None:
        """Refuse a business document that, inline revisions included, passes 16 MiB."""
        (inline,) = (
            self._db()
            .execute(
                "SELECT coalesce(sum(length(CAST(revision AS BLOB))), 0) "
                "FROM document_revisions WHERE inline = 1 AND document_id = ?",
                (document_id,),
            )
            .fetchone()
        )
        if doc_bytes + inline > MAX_DOCUMENT_BYTES:
            raise DocumentTooLarge(f"business document {document_id!r} would exceed 16 MiB")

    def _require_document(self, document_id: str) -> None:
        sql = f'SELECT 1 FROM "{_DOCS}" WHERE id = ?'
        if self._db().execute(sql, (document_id,)).fetchone() is None:
            raise DocumentNotFound(f"business document {document_id!r} not found")

    # -- generic collection operations -----------------------------------------------------

    async def insert(self, collection: str, doc: Mapping[str, Any]) -> Document:
        spec = collection_spec(collection)
        stored = prepare_insert(spec, doc)
        await self._call(self._insert, spec, stored)
        return stored

    def _insert(self, spec: CollectionSpec, stored: Document) -> None:
        conn = self._db()
        doc_id = stored[spec.id_field]
        revisions: list[Document] = stored.get("revisions", []) if spec.has_revisions else []
        head = (
            {**stored, "revisions": []} if spec.has_revisions and "revisions" in stored else stored
        )
        text = dumps(head, f"{spec.name} {doc_id!r}")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            f'INSERT INTO "{spec.name}" (id, slug, doc) VALUES (?, ?, ?)',
            (doc_id, _slug(spec, stored), text),
        )
        write_keys(conn, spec, doc_id, stored)
        if revisions:
            conn.executemany(
                "INSERT INTO document_revisions VALUES (?, ?, ?, 1, ?)",
                [(doc_id, r["version"], r["revisionId"], dumps(r, "revision")) for r in revisions],
            )
            self._check_size(doc_id, len(text.encode()))
        conn.execute("COMMIT")

    async def get(self, collection: str, doc_id: str) -> Document | None:
        spec = collection_spec(collection)
        check_id(doc_id, spec.id_field)
        return await self._call(self._get, spec, doc_id)

    def _get(self, spec: CollectionSpec, doc_id: str) -> Document | None:
        conn = self._db()
        conn.execute("BEGIN")  # the document and its inline revisions as of one moment
        doc = self._load(spec, doc_id)
        if doc is not None and spec.has_revisions:
            self._attach_inline([doc], full=True)
        conn.execute("COMMIT")
        return doc

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
        return await self._call(self._update, spec, doc_id, fields, expected_version)

    def _update(
        self, spec: CollectionSpec, doc_id: str, fields: Document, expected: int | None
    ) -> Document:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        doc = self._load(spec, doc_id)
        if doc is None:
            raise DocumentNotFound(f"{spec.name} {doc_id!r} not found")
        stored = doc.get("version")
        if expected is not None and (isinstance(stored, bool) or stored != expected):
            raise StorageConflict(f"{spec.name} {doc_id!r} is not at version {expected}")
        doc.update(fields)
        text = dumps(doc, f"{spec.name} {doc_id!r}")
        if spec.has_revisions:
            self._check_size(doc_id, len(text.encode()))
        conn.execute(
            f'UPDATE "{spec.name}" SET slug = ?, doc = ? WHERE id = ?',
            (_slug(spec, doc), text, doc_id),
        )
        write_keys(conn, spec, doc_id, doc)
        if spec.has_revisions:
            self._attach_inline([doc], full=True)
        conn.execute("COMMIT")
        return doc

    async def delete(self, collection: str, doc_id: str) -> bool:
        spec = collection_spec(collection)
        check_id(doc_id, spec.id_field)
        return await self._call(self._delete, spec, doc_id)

    def _delete(self, spec: CollectionSpec, doc_id: str) -> bool:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        if spec.has_revisions:
            conn.execute("DELETE FROM document_revisions WHERE document_id = ?", (doc_id,))
        deleted = conn.execute(f'DELETE FROM "{spec.name}" WHERE id = ?', (doc_id,)).rowcount
        drop_keys(conn, spec, doc_id)
        conn.execute("COMMIT")
        return deleted == 1

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._call(self._search, query)

    def _search(self, query: SearchQuery) -> SearchPage:
        return sqlite_search.search(self._db(), query)

    async def find(self, collection: str, query: Query) -> Page:
        spec = collection_spec(collection)
        sort = check_query(spec, query)
        return await self._call(self._find, spec, query, sort)

    def _find(self, spec: CollectionSpec, query: Query, sort: str) -> Page:
        conn = self._db()
        where, params = _where(spec, query)
        table = f'"{spec.name}"'
        direction = "DESC" if query.descending else "ASC"
        conn.execute("BEGIN")  # one snapshot for the count and the page
        # One pass over the matches gives the page's ids and the total (a window count);
        # the records of the page are then read by id, so the sort carries ids only.
        ranked = conn.execute(
            f"SELECT id, count(*) OVER () FROM {table} WHERE {where} "
            f"ORDER BY {sort_expression(sort)} {direction}, id ASC LIMIT ? OFFSET ?",
            [*params, query.limit, query.offset],
        ).fetchall()
        if ranked:
            total = ranked[0][1]
        elif query.offset == 0:
            total = 0
        else:  # past the last match: the window saw no row, count apart
            sql = f"SELECT count(*) FROM {table} WHERE {where}"
            (total,) = conn.execute(sql, params).fetchone()
        ids = [doc_id for doc_id, _ in ranked]
        texts = dict(
            conn.execute(f"SELECT id, doc FROM {table} WHERE {_id_in(ids)}", ids).fetchall()
        )
        items = [loads(texts[doc_id], f"{spec.name} {doc_id!r}") for doc_id in ids]
        if spec.has_revisions:
            self._attach_inline(items, full=False)
        conn.execute("COMMIT")
        return Page(items, int(total))

    # -- revisions of business documents ---------------------------------------------------

    async def add_revision(
        self, document_id: str, revision: Mapping[str, Any], *, keep_inline: int
    ) -> None:
        check_id(document_id, "documentId")
        rev = prepare_revision(revision, keep_inline)
        text = dumps(rev, "revision")
        await self._call(self._add_revision, document_id, rev, text, keep_inline)

    def _add_revision(self, document_id: str, rev: Document, text: str, keep_inline: int) -> None:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute(
            f"SELECT json_type(doc, '$.revisions'), "
            "(SELECT max(version) FROM document_revisions WHERE document_id = ?) "
            f'FROM "{_DOCS}" WHERE id = ?',
            (document_id, document_id),
        ).fetchone()
        if row is None:
            raise DocumentNotFound(f"business document {document_id!r} not found")
        marker, newest = row
        if newest is not None and newest >= rev["version"]:
            raise StorageConflict(f"{document_id!r} has a revision at version >= {rev['version']}")
        if marker is None:  # the document's first revision: it now has a revisions[] field
            conn.execute(
                f"UPDATE \"{_DOCS}\" SET doc = json_set(doc, '$.revisions', json('[]')) "
                "WHERE id = ?",
                (document_id,),
            )
        conn.execute(
            "INSERT INTO document_revisions VALUES (?, ?, ?, 1, ?)",
            (document_id, rev["version"], rev["revisionId"], text),
        )
        # Archive the oldest inline revisions beyond keep_inline: clear their flag.
        conn.execute(
            "UPDATE document_revisions SET inline = 0 WHERE document_id = ? AND inline = 1 "
            "AND version < (SELECT min(version) FROM (SELECT version FROM document_revisions "
            "WHERE document_id = ? AND inline = 1 ORDER BY version DESC LIMIT ?))",
            (document_id, document_id, keep_inline),
        )
        (doc_bytes,) = conn.execute(
            f'SELECT length(CAST(doc AS BLOB)) FROM "{_DOCS}" WHERE id = ?', (document_id,)
        ).fetchone()
        self._check_size(document_id, doc_bytes)
        conn.execute("COMMIT")

    async def list_revisions(
        self, document_id: str, *, limit: int, before_version: int | None = None
    ) -> list[Document]:
        check_list_args(document_id, limit, before_version)
        return await self._call(self._list_revisions, document_id, limit, before_version)

    def _list_revisions(
        self, document_id: str, limit: int, before_version: int | None
    ) -> list[Document]:
        conn = self._db()
        conn.execute("BEGIN")
        self._require_document(document_id)
        rows = conn.execute(
            f"SELECT {REVISION_SUMMARY} FROM document_revisions "
            "WHERE document_id = ? AND version < ? ORDER BY version DESC LIMIT ?",
            (document_id, _NO_BOUND if before_version is None else before_version, limit),
        ).fetchall()
        conn.execute("COMMIT")
        return [loads(text, "revision") for (text,) in rows]

    async def get_revision(self, document_id: str, revision_id: str) -> Document | None:
        check_id(document_id, "documentId")
        check_id(revision_id, "revisionId")
        return await self._call(self._get_revision, document_id, revision_id)

    def _get_revision(self, document_id: str, revision_id: str) -> Document | None:
        conn = self._db()
        conn.execute("BEGIN")
        self._require_document(document_id)
        row = conn.execute(
            "SELECT revision FROM document_revisions WHERE document_id = ? AND revision_id = ?",
            (document_id, revision_id),
        ).fetchone()
        conn.execute("COMMIT")
        return None if row is None else loads(row[0], "revision")

    # -- CRDT state per room ---------------------------------------------------------------

    async def save_crdt_state(self, room: str, state: bytes, journal_seq: int) -> None:
        check_crdt_args(room, state, journal_seq)
        await self._call(self._save_crdt_state, room, state, journal_seq)

    def _save_crdt_state(self, room: str, state: bytes, journal_seq: int) -> None:
        cursor = self._db().execute(
            "INSERT INTO crdt_states (room, state, journal_seq, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (room) DO UPDATE SET state = excluded.state, "
            "journal_seq = excluded.journal_seq, updated_at = excluded.updated_at "
            "WHERE excluded.journal_seq >= crdt_states.journal_seq",
            (room, state, journal_seq, datetime.now(UTC).isoformat()),
        )
        if cursor.rowcount != 1:
            raise StorageConflict(f"{room!r} has a CRDT state newer than seq {journal_seq}")

    async def load_crdt_state(self, room: str) -> tuple[bytes, int] | None:
        check_id(room, "room")
        return await self._call(self._load_crdt_state, room)

    def _load_crdt_state(self, room: str) -> tuple[bytes, int] | None:
        sql = "SELECT state, journal_seq FROM crdt_states WHERE room = ?"
        row = self._db().execute(sql, (room,)).fetchone()
        if row is None:
            return None
        state, seq = row
        if not isinstance(state, bytes) or not isinstance(seq, int):
            raise StorageCorrupted(f"the CRDT state of {room!r} is malformed")
        return state, seq

    # -- indexes ---------------------------------------------------------------------------

    async def ensure_indexes(self) -> None:
        """Create every table and index (:meth:`open` already did). Idempotent."""
        await self._call(self._ensure_indexes)


def _where(spec: CollectionSpec, query: Query) -> tuple[str, list[object]]:
    """The WHERE condition of a checked query: :func:`where_clause`, plus the conditions on
    business ids (``ids``, and ``accessible_ids`` joined to the ``accessible_to`` test)."""
    if query.ids is None and not query.accessible_ids:
        return where_clause(spec, query)
    where, params = where_clause(
        spec, replace(query, accessible_to=None, accessible_ids=(), ids=None)
    )
    clauses = [where]
    if query.accessible_to is not None:
        access, access_params = where_clause(spec, Query(accessible_to=query.accessible_to))
        if query.accessible_ids:
            access = f"({access} OR {_id_in(query.accessible_ids)})"
            access_params = [*access_params, *query.accessible_ids]
        clauses.append(access)
        params = [*params, *access_params]
    if query.ids is not None:
        clauses.append(_id_in(query.ids))
        params = [*params, *query.ids]
    return " AND ".join(clauses), params


def _id_in(ids: Sequence[str]) -> str:
    """``id IN (?, ...)``; an empty list matches nothing."""
    return f"id IN ({', '.join('?' * len(ids))})" if ids else "0"
