"""Embedded adapter of :class:`persistence.content.cms_ports.CmsQueries` on the file of a
:class:`~persistence.content.sqlite.SqliteContentStore`, through its worker thread: the
``$lookup`` is a join of the record's id array (``json_each``) with the target table, the
pipeline a ``GROUP BY``; every call is one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping

from persistence.content.cms_ports import (
    SALES,
    PipelineGroup,
    check_counters,
    check_lookup,
    check_member,
    in_link_order,
    linked_ids,
)
from persistence.content.ports import CollectionSpec, Document, Query, check_query, collection_spec
from persistence.content.sqlite import SqliteContentStore, _where
from persistence.content.sqlite_json import PIPELINE_COLUMNS, dumps, loads, sort_expression
from persistence.content.sqlite_keys import write_keys


def _number(column: str) -> str:
    return f"(CASE WHEN typeof({column}) IN ('integer', 'real') THEN {column} ELSE 0 END)"


def _text(column: str) -> str:
    return f"(CASE WHEN typeof({column}) = 'text' THEN {column} END)"


class SqliteCmsQueries:
    """The CMS queries on the file of ``store`` (which owns the connection and its thread)."""

    def __init__(self, store: SqliteContentStore) -> None:
        self._store = store

    async def lookup(
        self,
        collection: str,
        doc_id: str,
        field: str,
        target: str,
        *,
        exclude: tuple[str, ...] = (),
    ) -> tuple[Document, list[Document]] | None:
        check_lookup(collection, doc_id, field, target, exclude)
        spec, joined = collection_spec(collection), collection_spec(target)
        return await self._store._call(self._lookup, spec, doc_id, field, joined, exclude)

    def _lookup(
        self,
        spec: CollectionSpec,
        doc_id: str,
        field: str,
        joined: CollectionSpec,
        exclude: tuple[str, ...],
    ) -> tuple[Document, list[Document]] | None:
        conn = self._store._db()
        conn.execute("BEGIN")
        record = self._store._load(spec, doc_id)
        if record is None:
            conn.execute("COMMIT")
            return None
        column = "t.doc"
        if exclude:
            paths = ", ".join(f"'$.\"{name}\"'" for name in exclude)
            column = f"json_remove(t.doc, {paths})"
        rows = conn.execute(
            f'SELECT DISTINCT t.id, {column} FROM "{spec.name}" AS p, '
            f"json_each(p.doc, '$.\"{field}\"') AS link "
            f'JOIN "{joined.name}" AS t ON t.id = link.value '
            "WHERE p.id = ? AND link.type = 'text'",
            (doc_id,),
        ).fetchall()
        found = [loads(text, f"{joined.name} {key!r}") for key, text in rows]
        if joined.has_revisions and "revisions" not in exclude:
            self._store._attach_inline(found, full=False)
        conn.execute("COMMIT")
        return record, in_link_order(linked_ids(record, field), found, joined.id_field)

    async def sales_pipeline(self, query: Query) -> list[PipelineGroup]:
        spec = collection_spec(SALES)
        check_query(spec, query)
        return await self._store._call(self._pipeline, spec, query)

    def _pipeline(self, spec: CollectionSpec, query: Query) -> list[PipelineGroup]:
        where, params = _where(spec, query)
        # The generated columns of the pipeline (sqlite_json.PIPELINE_COLUMNS): without a
        # condition on the JSON, the GROUP BY reads their index only.
        stage, currency, value, probability = (column for column, _ in PIPELINE_COLUMNS)
        rows = (
            self._store._db()
            .execute(
                f"SELECT {_text(stage)}, {_text(currency)}, count(*), total({_number(value)}), "
                f"total({_number(value)} * {_number(probability)} / 100.0) "
                f'FROM "{spec.name}" WHERE {where} GROUP BY {stage}, {currency}',
                params,
            )
            .fetchall()
        )
        merged: dict[tuple[str | None, str | None], list[float]] = {}
        for group_stage, group_currency, count, total, weighted in rows:
            found = merged.setdefault((group_stage, group_currency), [0, 0.0, 0.0])
            found[0] += count
            found[1] += total
            found[2] += weighted
        groups = [
            PipelineGroup(key[0], key[1], int(count), float(total), float(weighted))
            for key, (count, total, weighted) in merged.items()
        ]
        return sorted(groups, key=lambda g: (g.stage or "", g.currency or ""))

    async def increment(self, collection: str, doc_id: str, counters: Mapping[str, int]) -> bool:
        check_counters(collection, doc_id, counters)
        spec = collection_spec(collection)
        return await self._store._call(self._increment, spec, doc_id, dict(counters))

    def _increment(self, spec: CollectionSpec, doc_id: str, counters: dict[str, int]) -> bool:
        conn = self._store._db()
        conn.execute("BEGIN IMMEDIATE")
        doc = self._store._load(spec, doc_id)
        if doc is None:
            conn.execute("COMMIT")
            return False
        for name, amount in counters.items():
            current = doc.get(name)
            if isinstance(current, bool) or not isinstance(current, int | float):
                current = 0
            doc[name] = current + amount
        self._write(spec, doc_id, doc)
        conn.execute("COMMIT")
        return True

    def _write(self, spec: CollectionSpec, doc_id: str, doc: Document) -> None:
        conn = self._store._db()
        conn.execute(
            f'UPDATE "{spec.name}" SET doc = ? WHERE id = ?',
            (dumps(doc, f"{spec.name} {doc_id!r}"), doc_id),
        )
        write_keys(conn, spec, doc_id, doc)

    async def add_member(
        self, collection: str, doc_id: str, field: str, member: str, counter: str
    ) -> bool:
        check_member(collection, doc_id, field, member, counter)
        spec = collection_spec(collection)
        return await self._store._call(self._move, spec, doc_id, field, member, counter, True)

    async def remove_member(
        self, collection: str, doc_id: str, field: str, member: str, counter: str
    ) -> bool:
        check_member(collection, doc_id, field, member, counter)
        spec = collection_spec(collection)
        return await self._store._call(self._move, spec, doc_id, field, member, counter, False)

    def _move(
        self, spec: CollectionSpec, doc_id: str, field: str, member: str, counter: str, add: bool
    ) -> bool:
        conn = self._store._db()
        conn.execute("BEGIN IMMEDIATE")
        doc = self._store._load(spec, doc_id)
        members = doc.get(field) if doc is not None else None
        listed = members if isinstance(members, list) else []
        if doc is None or (member in listed) == add:
            conn.execute("COMMIT")
            return False
        doc[field] = [*listed, member] if add else [m for m in listed if m != member]
        current = doc.get(counter)
        if isinstance(current, bool) or not isinstance(current, int):
            current = 0
        doc[counter] = current + (1 if add else -1)
        self._write(spec, doc_id, doc)
        conn.execute("COMMIT")
        return True

    async def explain(self, collection: str, query: Query) -> str:
        spec = collection_spec(collection)
        sort = check_query(spec, query)
        return await self._store._call(self._explain, spec, query, sort)

    def _explain(self, spec: CollectionSpec, query: Query, sort: str) -> str:
        where, params = _where(spec, query)
        direction = "DESC" if query.descending else "ASC"
        rows = (
            self._store._db()
            .execute(
                f'EXPLAIN QUERY PLAN SELECT id, count(*) OVER () FROM "{spec.name}" '
                f"WHERE {where} ORDER BY {sort_expression(sort)} {direction}, id ASC "
                "LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            )
            .fetchall()
        )
        return "\n".join(str(row[-1]) for row in rows)
