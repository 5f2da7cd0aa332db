"""Users administered: list, get, create, change, suspend, reactivate, delete (``/api/users``
and ``collab user ...``, ``docs/administration.md``).

Every change is audited (resource type ``user``) and drops this node's cached copy of the
user, so the next request sees it at once; other nodes see it within the authenticator's
cache TTL. A suspended (or deleted) user's REST calls are refused from then on, and the guard
(:mod:`server.realtime.guard`), which re-checks every open socket each second, closes their
sockets (4403) within the cache TTL plus a second: under 5 s.

Deleting a user removes the row (their grants and notifications go with it). A user who
left a trail (audit rows, comments, approvals) cannot be removed without rewriting history:
then the user is deactivated instead (status ``deactivated``: no sign-in, no right), and the
answer says so.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

from persistence.errors import StorageConflict
from persistence.relational import (
    UNSET,
    USER_STATUSES,
    NewUser,
    Page,
    User,
    UserChanges,
    UserQuery,
)
from persistence.relational.records import Unset
from server.admin.ports import AdminPorts
from server.errors import ConflictError, InvalidError, NotFoundError
from server.identity.audit import AuditContext
from server.identity.roles import BUILT_IN_ROLES

RESOURCE: Final = "user"


@dataclass(frozen=True, slots=True)
class Removal:
    """What ``delete`` did: removed the row, or (the user has history) deactivated them."""

    user: User
    removed: bool


def user_id_of(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFoundError(f"no user {value!r}", what="user") from None


class UserAdmin:
    """The user operations, each checked, stored, audited and made effective."""

    def __init__(self, ports: AdminPorts) -> None:
        self._ports = ports

    async def roles(self) -> set[str]:
        """The role names a user may be given: the built-ins and every stored role."""
        stored = {role.name for role in await self._ports.roles.list_all()}
        return stored | set(BUILT_IN_ROLES)

    async def list(
        self,
        *,
        role: str | None = None,
        status: str | None = None,
        department: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[User]:
        try:
            query = UserQuery(
                role=role, status=status, department=department, limit=limit, offset=offset
            )
        except ValueError as exc:
            raise InvalidError(str(exc)) from exc
        return await self._ports.users.find(query)

    async def get(self, user_id: str) -> User:
        user = await self._ports.users.get(user_id_of(user_id))
        if user is None:
            raise NotFoundError(f"no user {user_id}", what="user")
        return user

    async def create(
        self,
        actor: AuditContext,
        *,
        email: str,
        name: str,
        role: str,
        department: str | None = None,
    ) -> User:
        await self._check_role(role)
        try:
            new = NewUser(email, name, role, department)
        except ValueError as exc:
            raise InvalidError(str(exc)) from exc
        if await self._ports.users.get_by_email(new.email) is not None:
            raise ConflictError(f"a user with email {new.email} exists", title="email taken")
        try:
            user = await self._ports.users.add(new)
        except StorageConflict as exc:
            raise ConflictError(str(exc), title="email taken") from exc
        self._audit(actor, "create", user.id, {"email": user.email, "role": role})
        return user

    async def update(
        self,
        actor: AuditContext,
        user_id: str,
        *,
        name: str | Unset = UNSET,
        department: str | Unset | None = UNSET,
        role: str | Unset = UNSET,
        status: str | Unset = UNSET,
    ) -> User:
        """Change a user's name, department, role and/or status (``suspended`` suspends,
        ``active`` reactivates)."""
        key = user_id_of(user_id)
        before = await self.get(user_id)
        if not isinstance(role, Unset):
            await self._check_role(role)
        if not isinstance(status, Unset) and status not in USER_STATUSES:
            raise InvalidError(f"status must be one of {', '.join(USER_STATUSES)}", field="status")
        if key == actor.user_id and (
            (not isinstance(status, Unset) and status != "active")
            or (not isinstance(role, Unset) and role != before.role)
        ):
            raise ConflictError(
                "an admin may not suspend themselves or change their own role",
                title="not on yourself",
            )
        try:
            changes = UserChanges(name=name, role=role, status=status, department=department)
        except ValueError as exc:
            raise InvalidError(str(exc)) from exc
        user = await self._ports.users.update(key, changes)
        self._ports.authn.forget_user(user_id)
        diff = {
            field: {"from": getattr(before, field), "to": value}
            for field, value in changes.values().items()
            if getattr(before, field) != value
        }
        action = "status_change" if "status" in diff else "update"
        self._audit(actor, action, user.id, diff)
        return user

    async def suspend(self, actor: AuditContext, user_id: str) -> User:
        return await self.update(actor, user_id, status="suspended")

    async def reactivate(self, actor: AuditContext, user_id: str) -> User:
        return await self.update(actor, user_id, status="active")

    async def delete(self, actor: AuditContext, user_id: str) -> Removal:
        key = user_id_of(user_id)
        user = await self.get(user_id)
        if key == actor.user_id:
            raise ConflictError("an admin may not delete themselves", title="not on yourself")
        try:
            removed = await self._ports.users.delete(key)
        except StorageConflict:
            removed = False
        if not removed:
            # The user left a trail that names them: deactivate instead of rewriting it.
            user = await self._ports.users.update(key, UserChanges(status="deactivated"))
        self._ports.authn.forget_user(user_id)
        self._ports.access.forget_user(user_id)
        self._audit(actor, "delete", key, {"email": user.email, "removed": removed})
        return Removal(user, removed)

    async def _check_role(self, role: str) -> None:
        known = await self.roles()
        if role not in known:
            raise InvalidError(f"role must be one of {', '.join(sorted(known))}", field="role")

    def _audit(self, actor: AuditContext, action: str, user_id: uuid.UUID, changes: Any) -> None:
        self._ports.audit.record(actor.entry(action, RESOURCE, str(user_id), changes))
