"""Full-text search on the embedded content store: SQLite FTS5 (``docs/search.md``).

Each searchable collection ``C`` has an FTS5 table ``C__search`` (columns ``title`` and
``body``, Porter stemming over Unicode words, diacritics folded) and a key table
``C__search_keys`` giving each record a stable integer key (the FTS rowid). Triggers on
``C`` keep both in step inside the transaction of every insert, update and delete, whoever
writes: an edit is searchable as soon as the snapshotter's write commits, with no separate
indexing pass. The text columns come from two SQL functions this module registers on the
connection (:func:`register`), which read the record's JSON the way
:mod:`persistence.content.search` says.

A search is one ``UNION ALL`` of a ``MATCH`` per collection joined to the records (so the
rights and filters are applied inside the query, before paging), ranked by ``bm25`` with the
title weighed :data:`~persistence.content.search.TITLE_WEIGHT` times the body, with FTS5's
own snippet around the best match.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from persistence.content.ports import Query, check_scope, collection_spec
from persistence.content.search import (
    RAW_CLOSE,
    RAW_OPEN,
    SEARCH_FIELDS,
    TITLE_WEIGHT,
    SearchHit,
    SearchPage,
    SearchQuery,
    SearchScope,
    body_of,
    finish_snippet,
    spaced,
    strings_at,
    title_of,
    updated_of,
)
from persistence.content.sqlite_json import loads, sort_expression, where_clause

log = logging.getLogger(__name__)

SNIPPET_TOKENS = 24
TOKENIZER = "porter unicode61 remove_diacritics 2"


def _fts(collection: str) -> str:
    return f'"{collection}__search"'


def _keys(collection: str) -> str:
    return f'"{collection}__search_keys"'


def _columns(record: str) -> str:
    """The SQL of a record's (title, body), ``record`` being ``new`` or a table alias."""
    return f"collab_search_title(?, {record}.doc), collab_search_body(?, {record}.doc)"


def search_ddl() -> list[str]:
    """The tables and triggers of every searchable collection; each statement idempotent.

    A key row also holds ``who``: the user ids of the record's access fields, as a small
    JSON array, so that the rights test of a search reads the key, not the record.
    """
    ddl: list[str] = []
    for name in SEARCH_FIELDS:
        table, fts, keys = f'"{name}"', _fts(name), _keys(name)
        literal = f"'{name}'"
        key_of = f"(SELECT key FROM {keys} WHERE doc_id = {{row}}.id)"
        insert = (
            f"INSERT INTO {fts} (rowid, title, body) VALUES ({key_of.format(row='new')}, "
            f"collab_search_title({literal}, new.doc), collab_search_body({literal}, new.doc));"
        )
        who = f"collab_search_who({literal}, new.doc)"
        ddl += [
            f"CREATE TABLE IF NOT EXISTS {keys} "
            "(key INTEGER PRIMARY KEY, doc_id TEXT NOT NULL UNIQUE, who TEXT NOT NULL)",
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5(title, body, "
            f"tokenize = '{TOKENIZER}')",
            f'CREATE TRIGGER IF NOT EXISTS "{name}__search_insert" AFTER INSERT ON {table} '
            f"BEGIN INSERT INTO {keys} (doc_id, who) VALUES (new.id, {who}) "
            f"ON CONFLICT (doc_id) DO UPDATE SET who = excluded.who; {insert} END",
            f'CREATE TRIGGER IF NOT EXISTS "{name}__search_update" AFTER UPDATE OF doc ON {table} '
            f"BEGIN DELETE FROM {fts} WHERE rowid = {key_of.format(row='old')}; "
            f"UPDATE {keys} SET who = {who} WHERE doc_id = new.id; {insert} END",
            f'CREATE TRIGGER IF NOT EXISTS "{name}__search_delete" AFTER DELETE ON {table} '
            f"BEGIN DELETE FROM {fts} WHERE rowid = {key_of.format(row='old')}; "
            f"DELETE FROM {keys} WHERE doc_id = old.id; END",
        ]
    return ddl


def _record(collection: object, text: object) -> dict[str, Any] | None:
    if collection not in SEARCH_FIELDS or not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None  # never fails a write: the record is then found by nothing
    return value if isinstance(value, dict) else None


def _title(collection: object, text: object) -> str:
    record = _record(collection, text)
    return "" if record is None else spaced(title_of(str(collection), record))


def _body(collection: object, text: object) -> str:
    record = _record(collection, text)
    return "" if record is None else spaced(body_of(str(collection), record))


def _who(collection: object, text: object) -> str:
    record = _record(collection, text)
    if record is None:
        return "[]"
    fields = collection_spec(str(collection)).access_fields
    return json.dumps(sorted({user for path in fields for user in strings_at(record, path)}))


def register(conn: sqlite3.Connection) -> None:
    """The SQL functions the triggers call (on every connection that writes)."""
    conn.create_function("collab_search_title", 2, _title, deterministic=True)
    conn.create_function("collab_search_body", 2, _body, deterministic=True)
    conn.create_function("collab_search_who", 2, _who, deterministic=True)


def backfill(conn: sqlite3.Connection, progress: Callable[[str], None] = log.info) -> int:
    """Index the records written before the search tables existed (a store made by an
    older version): a collection whose key count differs from its record count is indexed
    again from scratch, in one transaction. Returns how many records were indexed."""
    done = 0
    for name in SEARCH_FIELDS:
        table, fts, keys = f'"{name}"', _fts(name), _keys(name)
        (records,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        (indexed,) = conn.execute(f"SELECT count(*) FROM {keys}").fetchone()
        if records == indexed:
            continue
        progress(f"search: indexing {records} records of {name}")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"DELETE FROM {fts}")
        conn.execute(f"DELETE FROM {keys}")
        conn.execute(
            f"INSERT INTO {keys} (doc_id, who) SELECT id, collab_search_who(?, doc) "
            f"FROM {table} ORDER BY rowid",
            (name,),
        )
        conn.execute(
            f"INSERT INTO {fts} (rowid, title, body) SELECT k.key, {_columns('r')} "
            f"FROM {keys} AS k JOIN {table} AS r ON r.id = k.doc_id",
            (name, name),
        )
        conn.execute("COMMIT")
        done += records
    return done


def _match(terms: tuple[str, ...]) -> str:
    """The FTS5 query: every term as a quoted string (a phrase for spaced runs), ANDed.
    Terms hold only letters, digits and spaces (:func:`search_terms`): nothing is syntax."""
    return " AND ".join('"' + term.replace('"', '""') + '"' for term in terms)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _conditions(scope: SearchScope, query: SearchQuery) -> tuple[str, list[object], bool]:
    """The WHERE conditions of one scope (rights, then the filters), their parameters, and
    whether they read the record (``r``) rather than only its key (``k``)."""
    spec = check_scope(scope)
    fields = SEARCH_FIELDS[scope.collection]
    clauses: list[str] = []
    params: list[object] = []

    reads = False

    def add(condition: Query) -> None:
        nonlocal reads
        clause, values = where_clause(spec, condition)
        clauses.append(clause)
        params.extend(values)
        reads = True

    if scope.filters or scope.tags_all:
        add(Query(filters=scope.filters, tags_all=scope.tags_all))
    if scope.ids is not None:
        clauses.append(f"k.doc_id IN ({', '.join('?' * len(scope.ids))})" if scope.ids else "0")
        params.extend(scope.ids)
    if scope.accessible_to is not None:
        # The key's copy of the access fields (``who``): no read of the record itself.
        access = "EXISTS (SELECT 1 FROM json_each(k.who) WHERE value = ?)"
        values: list[object] = [scope.accessible_to]
        if scope.accessible_ids:
            access = f"({access} OR k.doc_id IN ({', '.join('?' * len(scope.accessible_ids))}))"
            values += scope.accessible_ids
        clauses.append(access)
        params.extend(values)
    if query.status is not None:
        add(Query(filters={fields.status: query.status}))
    if query.owner is not None:
        add(Query(filters={fields.owner: query.owner}))
    if query.tag is not None:
        add(Query(tags_all=(query.tag,)))
    date = sort_expression(fields.updated)
    reads = reads or query.updated_from is not None or query.updated_to is not None
    if query.updated_from is not None:
        clauses.append(f"{date} >= ?")
        params.append(_iso(query.updated_from))
    if query.updated_to is not None:
        clauses.append(f"{date} <= ?")
        params.append(_iso(query.updated_to))
    return " AND ".join(clauses) or "1", params, reads


def search(conn: sqlite3.Connection, query: SearchQuery) -> SearchPage:
    """Run a search (worker thread, one read transaction): rank every match without
    touching its text (bm25 only), then read the page's records and cut their snippets."""
    match = _match(query.terms)
    arms: list[str] = []
    params: list[object] = []
    for scope in query.scopes:
        if not query.applies(scope.collection):
            continue
        name = scope.collection
        where, values, reads = _conditions(scope, query)
        # The records are joined only when a condition reads them (the filters).
        records = f'JOIN "{name}" AS r ON r.id = k.doc_id ' if reads else ""
        arms.append(
            f"SELECT '{name}' AS collection, k.key AS key, k.doc_id AS id, "
            f"bm25({_fts(name)}, {TITLE_WEIGHT}, 1.0) AS rank FROM {_fts(name)} "
            f"JOIN {_keys(name)} AS k ON k.key = {_fts(name)}.rowid "
            f"{records}WHERE {_fts(name)} MATCH ? AND {where}"
        )
        params += [match, *values]
    if not arms:
        return SearchPage([], 0)
    union = " UNION ALL ".join(arms)
    conn.execute("BEGIN")
    try:
        (total,) = conn.execute(f"SELECT count(*) FROM ({union})", params).fetchone()
        page = conn.execute(
            f"SELECT collection, key, id, rank FROM ({union}) "
            "ORDER BY rank, collection, id LIMIT ? OFFSET ?",
            [*params, query.limit, query.offset],
        ).fetchall()
        hits = [_hit(conn, match, *row) for row in page]
    finally:
        conn.execute("COMMIT")
    return SearchPage(hits, total)


def _hit(
    conn: sqlite3.Connection, match: str, collection: str, key: int, doc_id: str, rank: float
) -> SearchHit:
    """One hit of the page: its record and FTS5's snippet of its best-matching column."""
    (snip,) = conn.execute(
        f"SELECT snippet({_fts(collection)}, -1, '{RAW_OPEN}', '{RAW_CLOSE}', '…', "
        f"{SNIPPET_TOKENS}) FROM {_fts(collection)} "
        f"WHERE {_fts(collection)} MATCH ? AND rowid = ?",
        (match, key),
    ).fetchone()
    (text,) = conn.execute(f'SELECT doc FROM "{collection}" WHERE id = ?', (doc_id,)).fetchone()
    doc: dict[str, Any] = loads(text, collection)
    return SearchHit(
        collection=collection,
        id=doc_id,
        title=title_of(collection, doc),
        score=round(-rank, 6),  # bm25 is lower for better matches
        snippet=finish_snippet(snip),
        updated_at=updated_of(collection, doc),
        record=doc,
    )
