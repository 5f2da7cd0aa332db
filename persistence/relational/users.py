"""SQL adapters of :class:`.ports.UserStore` and :class:`.ports.RoleStore` (both backends)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from persistence.errors import RecordNotFound, StorageCorrupted
from persistence.relational.engine import SqlDatabase
from persistence.relational.records import (
    UNSET,
    NewUser,
    Page,
    Role,
    Unset,
    User,
    UserChanges,
    UserQuery,
    check_email,
    check_moment,
    check_optional_text,
    check_permission_strings,
    check_text,
    check_uuid,
)
from persistence.relational.schema import UtcDateTime, roles, users

Clock = Callable[[], datetime]


def required(row: sa.Row[Any], name: str) -> Any:
    """A column the stores always write; StorageCorrupted if another writer left it NULL."""
    value = getattr(row, name)
    if value is None:
        raise StorageCorrupted(f"{name} of row {getattr(row, 'id', '?')} is NULL")
    return value


def _user(row: sa.Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        department=row.department,
        status=row.status or "active",
        last_login=row.last_login,
        suspended_at=row.suspended_at,
        created_at=required(row, "created_at"),
        updated_at=required(row, "updated_at"),
    )


def _role(row: sa.Row[Any]) -> Role:
    return Role(
        id=row.id,
        name=row.name,
        description=row.description,
        permissions=tuple(row.permissions or ()),
        created_at=required(row, "created_at"),
    )


class SqlUserStore:
    """Users in the ``users`` table. Guarantees: :class:`.ports.UserStore`."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def add(self, user: NewUser) -> User:
        now = check_moment(self._clock(), "clock")
        values = {
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "role": user.role,
            "department": user.department,
            "status": user.status,
            "suspended_at": now if user.status == "suspended" else None,
            "created_at": now,
            "updated_at": now,
        }

        async def run(conn: AsyncConnection) -> User:
            result = await conn.execute(users.insert().values(values).returning(*users.c))
            return _user(result.one())

        return await self._db.write("adding a user", run)

    async def get(self, user_id: uuid.UUID) -> User | None:
        check_uuid(user_id, "user_id")
        return await self._one("getting a user", users.c.id == user_id)

    async def get_by_email(self, email: str) -> User | None:
        try:
            normalized = check_email(email)
        except ValueError:
            return None  # no stored email looks like that
        return await self._one("getting a user by email", users.c.email == normalized)

    async def _one(self, what: str, condition: sa.ColumnElement[bool]) -> User | None:
        async def run(conn: AsyncConnection) -> User | None:
            row = (await conn.execute(sa.select(users).where(condition))).one_or_none()
            return None if row is None else _user(row)

        return await self._db.read(what, run)

    async def find(self, query: UserQuery) -> Page[User]:
        conditions = [
            column == value
            for column, value in (
                (users.c.role, query.role),
                (users.c.status, query.status),
                (users.c.department, query.department),
            )
            if value is not None
        ]
        column = users.c[query.sort]
        order = [column.desc(), users.c.id.desc()] if query.descending else [column, users.c.id]

        async def run(conn: AsyncConnection) -> Page[User]:
            count = sa.select(sa.func.count()).select_from(users).where(*conditions)
            total = await conn.scalar(count)
            page = sa.select(users).where(*conditions).order_by(*order)
            rows = await conn.execute(page.limit(query.limit).offset(query.offset))
            return Page([_user(row) for row in rows], int(total or 0))

        return await self._db.read("listing users", run)

    async def update(self, user_id: uuid.UUID, changes: UserChanges) -> User:
        check_uuid(user_id, "user_id")
        return await self._change(user_id, changes.values(), "updating a user")

    async def suspend(self, user_id: uuid.UUID) -> User:
        check_uuid(user_id, "user_id")
        return await self._change(user_id, {"status": "suspended"}, "suspending a user")

    async def reactivate(self, user_id: uuid.UUID) -> User:
        check_uuid(user_id, "user_id")
        return await self._change(user_id, {"status": "active"}, "reactivating a user")

    async def _change(self, user_id: uuid.UUID, values: dict[str, Any], what: str) -> User:
        now = check_moment(self._clock(), "clock")
        statement = (
            users.update().where(users.c.id == user_id).values({**values, "updated_at": now})
        )
        if values.get("status") == "suspended":
            stamp = sa.bindparam(None, now, type_=UtcDateTime())
            statement = statement.values(suspended_at=sa.func.coalesce(users.c.suspended_at, stamp))
        elif "status" in values:
            statement = statement.values(suspended_at=None)

        async def run(conn: AsyncConnection) -> User:
            row = (await conn.execute(statement.returning(*users.c))).one_or_none()
            if row is None:
                raise RecordNotFound(f"user {user_id} not found")
            return _user(row)

        return await self._db.write(what, run)

    async def record_login(self, user_id: uuid.UUID, at: datetime) -> None:
        check_uuid(user_id, "user_id")
        moment = check_moment(at, "at")
        statement = users.update().where(users.c.id == user_id).values(last_login=moment)

        async def run(conn: AsyncConnection) -> None:
            if (await conn.execute(statement.returning(users.c.id))).one_or_none() is None:
                raise RecordNotFound(f"user {user_id} not found")

        await self._db.write("recording a login", run)

    async def delete(self, user_id: uuid.UUID) -> bool:
        check_uuid(user_id, "user_id")
        statement = users.delete().where(users.c.id == user_id).returning(users.c.id)

        async def run(conn: AsyncConnection) -> bool:
            return (await conn.execute(statement)).one_or_none() is not None

        return await self._db.write("deleting a user", run)


class SqlRoleStore:
    """Roles in the ``roles`` table. Guarantees: :class:`.ports.RoleStore`."""

    def __init__(self, db: SqlDatabase, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def create(
        self, name: str, *, description: str | None = None, permissions: Sequence[str] = ()
    ) -> Role:
        values = {
            "id": uuid.uuid4(),
            "name": check_text(name, "name", 100),
            "description": check_optional_text(description, "description", 1_000_000),
            "permissions": list(check_permission_strings(permissions)),
            "created_at": check_moment(self._clock(), "clock"),
        }

        async def run(conn: AsyncConnection) -> Role:
            result = await conn.execute(roles.insert().values(values).returning(*roles.c))
            return _role(result.one())

        return await self._db.write("creating a role", run)

    async def get(self, role_id: uuid.UUID) -> Role | None:
        check_uuid(role_id, "role_id")
        return await self._one("getting a role", roles.c.id == role_id)

    async def get_by_name(self, name: str) -> Role | None:
        check_text(name, "name", 1_000_000)
        return await self._one("getting a role by name", roles.c.name == name)

    async def _one(self, what: str, condition: sa.ColumnElement[bool]) -> Role | None:
        async def run(conn: AsyncConnection) -> Role | None:
            row = (await conn.execute(sa.select(roles).where(condition))).one_or_none()
            return None if row is None else _role(row)

        return await self._db.read(what, run)

    async def list_all(self) -> list[Role]:
        async def run(conn: AsyncConnection) -> list[Role]:
            rows = await conn.execute(sa.select(roles).order_by(roles.c.name, roles.c.id))
            return [_role(row) for row in rows]

        return await self._db.read("listing roles", run)

    async def update(
        self,
        role_id: uuid.UUID,
        *,
        name: str | Unset = UNSET,
        description: str | Unset | None = UNSET,
        permissions: Sequence[str] | Unset = UNSET,
    ) -> Role:
        check_uuid(role_id, "role_id")
        values: dict[str, Any] = {}
        if not isinstance(name, Unset):
            values["name"] = check_text(name, "name", 100)
        if not isinstance(description, Unset):
            values["description"] = check_optional_text(description, "description", 1_000_000)
        if not isinstance(permissions, Unset):
            values["permissions"] = list(check_permission_strings(permissions))
        if not values:
            raise ValueError("nothing to change")
        statement = roles.update().where(roles.c.id == role_id).values(values)

        async def run(conn: AsyncConnection) -> Role:
            row = (await conn.execute(statement.returning(*roles.c))).one_or_none()
            if row is None:
                raise RecordNotFound(f"role {role_id} not found")
            return _role(row)

        return await self._db.write("updating a role", run)

    async def delete(self, role_id: uuid.UUID) -> bool:
        check_uuid(role_id, "role_id")
        statement = roles.delete().where(roles.c.id == role_id).returning(roles.c.id)

        async def run(conn: AsyncConnection) -> bool:
            return (await conn.execute(statement)).one_or_none() is not None

        return await self._db.write("deleting a role", run)
