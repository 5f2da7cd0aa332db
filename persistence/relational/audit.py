"""SQL adapter of :class:`.ports.AuditStore` (both backends)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.relational.engine import SqlDatabase
from persistence.relational.records import (
    AccessQuery,
    AuditEntry,
    AuditQuery,
    CursorPage,
    DataAccessEntry,
    decode_cursor,
    encode_cursor,
)
from persistence.relational.schema import audit_logs, data_access_logs
from persistence.relational.users import required

T = TypeVar("T")
MAX_BATCH_ROWS = 5000


def _audit_entry(row: sa.Row[Any]) -> AuditEntry:
    return AuditEntry(
        id=row.id,
        user_id=row.user_id,
        action=row.action,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        changes=row.changes,
        # INET comes back as an ipaddress object on PostgreSQL, text on SQLite.
        ip_address=None if row.ip_address is None else str(row.ip_address),
        user_agent=row.user_agent,
        status=row.status or "success",
        error_message=row.error_message,
        created_at=required(row, "created_at"),
    )


def _access_entry(row: sa.Row[Any]) -> DataAccessEntry:
    return DataAccessEntry(
        id=row.id,
        user_id=row.user_id,
        document_id=row.document_id,
        access_type=row.access_type,
        data_sensitivity=row.data_sensitivity,
        accessed_at=required(row, "accessed_at"),
        request_id=row.request_id,
    )


def _time_conditions(
    column: sa.Column[datetime],
    id_column: sa.Column[Any],
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    if cursor is not None:
        moment, row_id = decode_cursor(cursor)
        # Strictly after the cursor's row in (time DESC, id DESC) order.
        conditions.append(sa.or_(column < moment, sa.and_(column == moment, id_column < row_id)))
    return conditions


class SqlAuditStore:
    """The audit and data-access trails. Guarantees: :class:`.ports.AuditStore`."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        rows = [_row(_checked(entry, AuditEntry)) for entry in entries]
        if rows:
            await self._insert("appending audit entries", audit_logs, rows)

    async def append_access(
        self, entries: Sequence[DataAccessEntry], *, batch_size: int = 500
    ) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise ValueError("batch_size must be an int")
        if not 1 <= batch_size <= MAX_BATCH_ROWS:
            raise ValueError(f"batch_size must be in 1..{MAX_BATCH_ROWS}")
        rows = [_row(_checked(entry, DataAccessEntry)) for entry in entries]
        written = 0
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            written += await self._insert("appending data-access entries", data_access_logs, batch)
        return written

    async def _insert(self, what: str, table: sa.Table, rows: list[dict[str, Any]]) -> int:
        # Idempotent per id: an entry already stored (a retried append) is skipped.
        statement = (
            self._db.insert(table)
            .on_conflict_do_nothing(index_elements=[table.c.id])
            .returning(table.c.id)
        )

        async def run(conn: AsyncConnection) -> int:
            return len((await conn.execute(statement, rows)).all())

        return await self._db.write(what, run, idempotent=True)

    async def query(self, query: AuditQuery) -> CursorPage[AuditEntry]:
        table = audit_logs
        conditions = [
            column == value
            for column, value in (
                (table.c.user_id, query.user_id),
                (table.c.action, query.action),
                (table.c.resource_type, query.resource_type),
                (table.c.resource_id, query.resource_id),
            )
            if value is not None
        ]
        conditions += _time_conditions(
            table.c.created_at, table.c.id, query.since, query.until, query.cursor
        )
        return await self._page(
            "querying the audit log", table.c.created_at, conditions, query.limit, _audit_entry
        )

    async def query_access(self, query: AccessQuery) -> CursorPage[DataAccessEntry]:
        table = data_access_logs
        conditions = [
            column == value
            for column, value in (
                (table.c.user_id, query.user_id),
                (table.c.document_id, query.document_id),
                (table.c.access_type, query.access_type),
            )
            if value is not None
        ]
        conditions += _time_conditions(
            table.c.accessed_at, table.c.id, query.since, query.until, query.cursor
        )
        return await self._page(
            "querying the data-access log",
            table.c.accessed_at,
            conditions,
            query.limit,
            _access_entry,
        )

    async def _page(
        self,
        what: str,
        column: sa.Column[datetime],
        conditions: list[sa.ColumnElement[bool]],
        limit: int,
        make: Callable[[sa.Row[Any]], T],
    ) -> CursorPage[T]:
        assert column.table is not None
        id_column = column.table.c.id
        statement = (
            sa.select(column.table)
            .where(*conditions)
            .order_by(column.desc(), id_column.desc())
            .limit(limit + 1)  # one more tells whether there is a next page
        )

        async def run(conn: AsyncConnection) -> CursorPage[T]:
            rows = (await conn.execute(statement)).all()
            items = [make(row) for row in rows[:limit]]
            if len(rows) <= limit:
                return CursorPage(items, None)
            last = rows[limit - 1]
            return CursorPage(items, encode_cursor(getattr(last, column.name), last.id))

        return await self._db.read(what, run)


E = TypeVar("E")


def _checked(entry: object, kind: type[E]) -> E:
    if not isinstance(entry, kind):
        raise ValueError(f"expected {kind.__name__}, not {type(entry).__name__}")
    return entry


def _row(entry: AuditEntry | DataAccessEntry) -> dict[str, Any]:
    """The entry's columns. Shallow: the entries are frozen and their values checked when
    made (``dataclasses.asdict`` deep-copies every value, a good part of a row's cost)."""
    return {column.name: getattr(entry, column.name) for column in fields(entry)}
