"""SQL adapter of :class:`.ports.PermissionStore` (both backends)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.relational.engine import SqlDatabase
from persistence.relational.records import (
    ANY_RESOURCE,
    Grant,
    check_level,
    check_moment,
    check_optional_moment,
    check_text,
    check_uuid,
)
from persistence.relational.schema import permissions
from persistence.relational.users import Clock, required

_UPSERT_COLUMNS = ("permission_level", "granted_by", "granted_at", "expires_at")


def _grant(row: sa.Row[Any]) -> Grant:
    return Grant(
        id=row.id,
        user_id=row.user_id,
        resource_type=row.resource_type,
        resource_id=row.resource_id,
        permission_level=row.permission_level,
        granted_by=row.granted_by,
        granted_at=required(row, "granted_at"),
        expires_at=row.expires_at,
    )


def _unexpired(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(permissions.c.expires_at.is_(None), permissions.c.expires_at > now)


def _resource(resource_type: str, resource_id: str) -> tuple[str, str]:
    return check_text(resource_type, "resource_type", 100), check_text(
        resource_id, "resource_id", 255
    )


class SqlPermissionStore:
    """Grants in the ``permissions`` table. Guarantees: :class:`.ports.PermissionStore`."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def grant(
        self,
        user_id: uuid.UUID,
        resource_type: str,
        resource_id: str,
        level: str,
        *,
        granted_by: uuid.UUID | None = None,
        expires_at: datetime | None = None,
        at: datetime | None = None,
    ) -> Grant:
        check_uuid(user_id, "user_id")
        resource_type, resource_id = _resource(resource_type, resource_id)
        if granted_by is not None:
            check_uuid(granted_by, "granted_by")
        values = {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "permission_level": check_level(level),
            "granted_by": granted_by,
            "granted_at": check_moment(at if at is not None else self._clock(), "at"),
            "expires_at": check_optional_moment(expires_at, "expires_at"),
        }
        insert = self._db.insert(permissions).values(values)
        # The schema's UNIQUE(user_id, resource_type, resource_id) is the upsert's arbiter.
        statement = insert.on_conflict_do_update(
            index_elements=[
                permissions.c.user_id,
                permissions.c.resource_type,
                permissions.c.resource_id,
            ],
            set_={name: insert.excluded[name] for name in _UPSERT_COLUMNS},
        ).returning(*permissions.c)

        async def run(conn: AsyncConnection) -> Grant:
            return _grant((await conn.execute(statement)).one())

        return await self._db.write("granting a permission", run)

    async def revoke(self, user_id: uuid.UUID, resource_type: str, resource_id: str) -> bool:
        check_uuid(user_id, "user_id")
        resource_type, resource_id = _resource(resource_type, resource_id)
        statement = (
            permissions.delete()
            .where(
                permissions.c.user_id == user_id,
                permissions.c.resource_type == resource_type,
                permissions.c.resource_id == resource_id,
            )
            .returning(permissions.c.id)
        )

        async def run(conn: AsyncConnection) -> bool:
            return (await conn.execute(statement)).one_or_none() is not None

        return await self._db.write("revoking a permission", run)

    async def for_user(self, user_id: uuid.UUID, *, now: datetime | None = None) -> list[Grant]:
        check_uuid(user_id, "user_id")
        conditions = [permissions.c.user_id == user_id]
        if now is not None:
            conditions.append(_unexpired(check_moment(now, "now")))
        order = (permissions.c.resource_type, permissions.c.resource_id)
        return await self._select("listing a user's grants", conditions, order)

    async def for_resource(
        self, resource_type: str, resource_id: str, *, now: datetime | None = None
    ) -> list[Grant]:
        resource_type, resource_id = _resource(resource_type, resource_id)
        conditions = [
            permissions.c.resource_type == resource_type,
            permissions.c.resource_id == resource_id,
        ]
        if now is not None:
            conditions.append(_unexpired(check_moment(now, "now")))
        order = (permissions.c.granted_at, permissions.c.id)
        return await self._select("listing a resource's grants", conditions, order)

    async def effective_grants(
        self, user_id: uuid.UUID, resource_type: str, resource_id: str, now: datetime
    ) -> list[Grant]:
        check_uuid(user_id, "user_id")
        resource_type, resource_id = _resource(resource_type, resource_id)
        conditions = [
            permissions.c.user_id == user_id,
            permissions.c.resource_type == resource_type,
            permissions.c.resource_id.in_(sorted({resource_id, ANY_RESOURCE})),
            _unexpired(check_moment(now, "now")),
        ]
        # The grant on the resource itself first, then the type-wide one.
        exact_first = sa.case((permissions.c.resource_id == ANY_RESOURCE, 1), else_=0)
        return await self._select("reading effective grants", conditions, (exact_first,))

    async def _select(
        self,
        what: str,
        conditions: list[sa.ColumnElement[bool]],
        order: tuple[sa.ColumnElement[Any], ...],
    ) -> list[Grant]:
        statement = sa.select(permissions).where(*conditions).order_by(*order)

        async def run(conn: AsyncConnection) -> list[Grant]:
            return [_grant(row) for row in await conn.execute(statement)]

        return await self._db.read(what, run)

    async def delete_expired(self, now: datetime) -> int:
        moment = check_moment(now, "now")
        statement = (
            permissions.delete()
            .where(permissions.c.expires_at <= moment)
            .returning(permissions.c.id)
        )

        async def run(conn: AsyncConnection) -> int:
            return len((await conn.execute(statement)).all())

        return await self._db.write("deleting expired grants", run)

    async def get(self, grant_id: uuid.UUID) -> Grant | None:
        check_uuid(grant_id, "grant_id")
        found = await self._select("getting a grant", [permissions.c.id == grant_id], ())
        return found[0] if found else None

    async def revoke_id(self, grant_id: uuid.UUID) -> Grant | None:
        check_uuid(grant_id, "grant_id")
        statement = permissions.delete().where(permissions.c.id == grant_id)

        async def run(conn: AsyncConnection) -> Grant | None:
            row = (await conn.execute(statement.returning(*permissions.c))).one_or_none()
            return None if row is None else _grant(row)

        return await self._db.write("revoking a grant", run)
