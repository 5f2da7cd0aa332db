"""The embedded adapter's multikey indexes: what MongoDB's index on an array field does, as a
side table per collection.

For the fields of a collection's ``multikey_fields`` (``tags``, ``stakeholders.userId``,
``approvers``, ``linkedDocuments``...), every string the field holds (the field itself when
it is a string, each string of an array, each string at ``b`` of the objects of an array
``a`` for a path ``a.b``: exactly what ``json_each`` finds) is a row ``(field, value, id)``
of ``"{collection}__keys"``. The rows of a record are rewritten with the record in the same
transaction, deleted with it, and made at open for the records of a file that has none yet.
A condition "the field holds one of these values" is then ``id IN (SELECT id FROM keys
WHERE field = ? AND value IN (...))``, which the table's primary key serves.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

from persistence.content.ports import COLLECTIONS, CollectionSpec


def keys_table(spec: CollectionSpec) -> str:
    return f"{spec.name}__keys"


def keys_ddl() -> list[str]:
    """The side tables of the collections that have multikey fields (idempotent)."""
    ddl = []
    for spec in COLLECTIONS.values():
        if spec.multikey_fields:
            table = keys_table(spec)
            ddl.append(
                f'CREATE TABLE IF NOT EXISTS "{table}" (field TEXT NOT NULL, value TEXT NOT NULL,'
                " id TEXT NOT NULL, PRIMARY KEY (field, value, id)) WITHOUT ROWID"
            )
            ddl.append(f'CREATE INDEX IF NOT EXISTS "{table}_id" ON "{table}" (id)')
    return ddl


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        yield from (item for item in value if isinstance(item, str))


def values_at(doc: Mapping[str, Any], field: str) -> set[str]:
    """The strings ``json_each`` finds at ``field`` (see the module docstring)."""
    head, _, tail = field.partition(".")
    value = doc.get(head)
    if not tail:
        return set(_strings(value))
    if isinstance(value, dict):
        return set(_strings(value.get(tail)))
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                found.update(_strings(item.get(tail)))
    return found


def write_keys(
    conn: sqlite3.Connection, spec: CollectionSpec, doc_id: str, doc: Mapping[str, Any]
) -> None:
    """Replace the key rows of one record (inside the caller's transaction)."""
    if not spec.multikey_fields:
        return
    table = keys_table(spec)
    conn.execute(f'DELETE FROM "{table}" WHERE id = ?', (doc_id,))
    rows = [
        (field, value, doc_id)
        for field in sorted(spec.multikey_fields)
        for value in sorted(values_at(doc, field))
    ]
    conn.executemany(f'INSERT INTO "{table}" (field, value, id) VALUES (?, ?, ?)', rows)


def drop_keys(conn: sqlite3.Connection, spec: CollectionSpec, doc_id: str) -> None:
    if spec.multikey_fields:
        conn.execute(f'DELETE FROM "{keys_table(spec)}" WHERE id = ?', (doc_id,))


def backfill(conn: sqlite3.Connection, decode: Any) -> None:
    """Make the key rows of every record of a collection whose side table is empty (a file
    written before the table existed); ``decode(text, what)`` reads a record."""
    for spec in COLLECTIONS.values():
        if not spec.multikey_fields:
            continue
        table = keys_table(spec)
        if conn.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone() is not None:
            continue
        for doc_id, text in conn.execute(f'SELECT id, doc FROM "{spec.name}"').fetchall():
            write_keys(conn, spec, doc_id, decode(text, f"{spec.name} {doc_id!r}"))


def keyed(spec: CollectionSpec, field: str, values: tuple[str, ...]) -> tuple[str, list[object]]:
    """The condition "``field`` holds one of ``values``" through the side table."""
    marks = ", ".join("?" * len(values))
    return (
        f'id IN (SELECT id FROM "{keys_table(spec)}" WHERE field = ? AND value IN ({marks}))',
        [field, *values],
    )
