"""Roles administered (``/api/roles``, ``docs/administration.md``): list every role, create a
custom one, change or delete it. The four built-in roles are read-only here (a migration
seeds them; an operator may still change their rows in the database).

Permission strings are checked against :data:`server.identity.roles.PERMISSIONS`: a string
the server does not know is refused (a typo would silently grant nothing). A change is
effective on this node at once (the role book is told) and everywhere within the role
book's TTL (2 s by default): open sockets follow through the guard's next round.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from persistence.errors import StorageConflict
from persistence.relational import UNSET, Role, UserQuery
from persistence.relational.records import Unset
from server.admin.ports import AdminPorts
from server.errors import ConflictError, InvalidError, NotFoundError
from server.identity.audit import AuditContext
from server.identity.roles import BUILT_IN_ROLES, PERMISSIONS

RESOURCE: Final = "role"
NAME: Final = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")


def _permissions(values: Sequence[str]) -> list[str]:
    unknown = sorted(set(values) - set(PERMISSIONS))
    if unknown:
        raise InvalidError(
            f"unknown permission strings: {', '.join(unknown)} (known: {', '.join(PERMISSIONS)})",
            field="permissions",
        )
    return list(dict.fromkeys(values))


class RoleAdmin:
    def __init__(self, ports: AdminPorts) -> None:
        self._ports = ports

    async def list(self) -> list[Role]:
        return await self._ports.roles.list_all()

    async def get(self, name: str) -> Role:
        role = await self._ports.roles.get_by_name(name) if NAME.match(name) else None
        if role is None:
            raise NotFoundError(f"no role {name!r}", what="role")
        return role

    async def create(
        self,
        actor: AuditContext,
        *,
        name: str,
        description: str | None,
        permissions: Sequence[str],
    ) -> Role:
        if not NAME.match(name):
            raise InvalidError(
                "a role name is 1-50 of a-z, 0-9, _ and -, starting with a letter", field="name"
            )
        strings = _permissions(permissions)
        try:
            role = await self._ports.roles.create(
                name, description=description, permissions=strings
            )
        except StorageConflict as exc:
            raise ConflictError(f"a role named {name} exists", title="role exists") from exc
        except ValueError as exc:
            raise InvalidError(str(exc)) from exc
        self._changed(actor, "create", role, {"permissions": strings})
        return role

    async def update(
        self,
        actor: AuditContext,
        name: str,
        *,
        description: str | Unset | None = UNSET,
        permissions: Sequence[str] | Unset = UNSET,
    ) -> Role:
        role = await self._custom(name)
        strings: list[str] | Unset = (
            UNSET if isinstance(permissions, Unset) else _permissions(permissions)
        )
        try:
            updated = await self._ports.roles.update(
                role.id, description=description, permissions=strings
            )
        except ValueError as exc:
            raise InvalidError(str(exc)) from exc
        self._changed(
            actor,
            "update",
            updated,
            {"permissions": {"from": list(role.permissions), "to": list(updated.permissions)}},
        )
        return updated

    async def delete(self, actor: AuditContext, name: str) -> None:
        role = await self._custom(name)
        holders = await self._ports.users.find(UserQuery(role=name, limit=1))
        if holders.total:
            raise ConflictError(
                f"{holders.total} user(s) hold the role {name}: give them another role first",
                title="role in use",
            )
        await self._ports.roles.delete(role.id)
        self._changed(actor, "delete", role, None)

    async def _custom(self, name: str) -> Role:
        role = await self.get(name)
        if role.name in BUILT_IN_ROLES:
            raise ConflictError(
                f"{name} is a built-in role: it cannot be changed here", title="built-in role"
            )
        return role

    def _changed(self, actor: AuditContext, action: str, role: Role, changes: object) -> None:
        self._ports.access.roles.forget()
        entry = actor.entry(action, RESOURCE, role.name, changes)
        self._ports.audit.record(entry)
