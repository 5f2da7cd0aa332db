"""SQL adapter of :class:`.review_ports.NotificationStore` (both backends)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.errors import StorageCorrupted
from persistence.relational.engine import SqlDatabase
from persistence.relational.records import (
    Page,
    check_limit,
    check_moment,
    check_offset,
    check_uuid,
)
from persistence.relational.review_records import (
    MAX_NOTIFICATIONS_PER_CALL,
    NewNotification,
    Notification,
    NotificationCounts,
)
from persistence.relational.schema import notifications as table
from persistence.relational.users import Clock, required

_n = table.c


def _notification(row: sa.Row[Any]) -> Notification:
    return Notification(
        id=row.id,
        user_id=row.user_id,
        type=row.type,
        title=row.title,
        message=row.message,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        read_at=row.read_at,
        created_at=required(row, "created_at"),
    )


def _checked(items: Sequence[NewNotification]) -> list[NewNotification]:
    if isinstance(items, NewNotification):
        raise ValueError("add takes a sequence of NewNotification")
    checked = list(items)
    if len(checked) > MAX_NOTIFICATIONS_PER_CALL:
        raise ValueError(f"at most {MAX_NOTIFICATIONS_PER_CALL} notifications per call")
    for item in checked:
        if not isinstance(item, NewNotification):
            raise ValueError(f"expected NewNotification, not {type(item).__name__}")
    if len({item.id for item in checked}) != len(checked):
        raise ValueError("notification ids must be distinct")
    return checked


class SqlNotificationStore:
    """Notifications in the ``notifications`` table.

    Guarantees: :class:`.review_ports.NotificationStore`.
    """

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def add(self, notifications: Sequence[NewNotification]) -> list[Notification]:
        items = _checked(notifications)
        if not items:
            return []
        now = check_moment(self._clock(), "clock")
        rows = [
            {
                "id": item.id,
                "user_id": item.user_id,
                "type": item.type,
                "title": item.title,
                "message": item.message,
                "resource_type": item.resource_type,
                "resource_id": item.resource_id,
                "read_at": None,
                "created_at": now,
            }
            for item in items
        ]
        ids = [item.id for item in items]
        # Idempotent per id: a retried call finds its rows stored and keeps them as they are.
        insert = self._db.insert(table).on_conflict_do_nothing(index_elements=[_n.id])
        select = sa.select(table).where(_n.id.in_(ids))

        async def run(conn: AsyncConnection) -> list[Notification]:
            await conn.execute(insert, rows)
            stored = {row.id: _notification(row) for row in await conn.execute(select)}
            if len(stored) != len(ids):
                raise StorageCorrupted("notifications vanished while being added")
            return [stored[notification_id] for notification_id in ids]

        return await self._db.write("adding notifications", run, idempotent=True)

    async def list_for_user(
        self, user_id: uuid.UUID, *, unread_only: bool = False, limit: int = 50, offset: int = 0
    ) -> Page[Notification]:
        check_uuid(user_id, "user_id")
        check_limit(limit)
        check_offset(offset)
        conditions = [_n.user_id == user_id]
        if unread_only:
            conditions.append(_n.read_at.is_(None))
        unread_first = sa.case((_n.read_at.is_(None), 0), else_=1)
        count = sa.select(sa.func.count()).select_from(table).where(*conditions)
        page = (
            sa.select(table)
            .where(*conditions)
            .order_by(unread_first, _n.created_at.desc(), _n.id.desc())
            .limit(limit)
            .offset(offset)
        )

        async def run(conn: AsyncConnection) -> Page[Notification]:
            total = await conn.scalar(count)
            rows = await conn.execute(page)
            return Page([_notification(row) for row in rows], int(total or 0))

        return await self._db.read("listing notifications", run)

    async def count(self, user_id: uuid.UUID) -> NotificationCounts:
        check_uuid(user_id, "user_id")
        statement = sa.select(
            sa.func.count(), sa.func.count(sa.case((_n.read_at.is_(None), 1)))
        ).where(_n.user_id == user_id)

        async def run(conn: AsyncConnection) -> NotificationCounts:
            total, unread = (await conn.execute(statement)).one()
            return NotificationCounts(int(total), int(unread))

        return await self._db.read("counting notifications", run)

    async def mark_read(self, notification_id: uuid.UUID, *, user_id: uuid.UUID) -> bool:
        check_uuid(notification_id, "notification_id")
        check_uuid(user_id, "user_id")
        condition = sa.and_(_n.id == notification_id, _n.user_id == user_id)
        return await self._mark(condition, "marking a notification read") == 1

    async def mark_all_read(self, user_id: uuid.UUID) -> int:
        check_uuid(user_id, "user_id")
        return await self._mark(_n.user_id == user_id, "marking notifications read")

    async def _mark(self, condition: sa.ColumnElement[bool], what: str) -> int:
        now = check_moment(self._clock(), "clock")
        statement = (
            table.update()
            .where(condition, _n.read_at.is_(None))
            .values(read_at=now)
            .returning(_n.id)
        )

        async def run(conn: AsyncConnection) -> int:
            return len((await conn.execute(statement)).all())

        return await self._db.write(what, run)
