"""Grants administered: rows of the ``permissions`` table (``/api/permissions``,
``docs/administration.md``).

A grant gives one user a level (view, edit, approve, admin) on one resource of the CMS, or
on every resource of a type (resource id ``*``), until ``expiresAt`` if given. The resource
types are those of the collections (:data:`RESOURCE_TYPES`): business documents (where the
rights function and the guard of open sockets read them), and the other collections (where
search and listings read them). Granting the same user the same resource again replaces the
level and the expiry.

Effective within 5 s everywhere: this node drops its cached grants of the user at once; other
nodes' caches expire within the access-cache TTL, and the guard re-checks open sockets each
second (read-only or disconnected as the new right says). Granting and revoking notify the
user (``permission_granted`` / ``permission_revoked``) and are audited
(``permission_change``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Final

from persistence.errors import StorageConflict
from persistence.relational import ANY_RESOURCE, Grant, NewNotification
from server.admin.ports import AdminPorts
from server.errors import InvalidError, NotFoundError
from server.identity.audit import AuditContext

# The resource types a grant may name: one per collection of the CMS (as search names them).
RESOURCE_TYPES: Final = (
    "business_document",
    "project",
    "market_research",
    "strategic_plan",
    "sales_opportunity",
    "knowledge_article",
)
LEVELS: Final = ("view", "edit", "approve", "admin")


def _uuid(value: str, what: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidError(f"{field} must be a {what} id", field=field) from None


class GrantAdmin:
    def __init__(self, ports: AdminPorts) -> None:
        self._ports = ports

    async def grant(
        self,
        actor: AuditContext,
        *,
        user_id: str,
        resource_type: str,
        resource_id: str,
        level: str,
        expires_at: datetime | None = None,
    ) -> Grant:
        user = _uuid(user_id, "user", "userId")
        if resource_type not in RESOURCE_TYPES:
            raise InvalidError(
                f"resourceType must be one of {', '.join(RESOURCE_TYPES)}", field="resourceType"
            )
        if level not in LEVELS:
            raise InvalidError(
                f"permissionLevel must be one of {', '.join(LEVELS)}", field="permissionLevel"
            )
        if not resource_id or len(resource_id) > 255:
            raise InvalidError("resourceId must be 1..255 characters", field="resourceId")
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidError("expiresAt needs a time zone", field="expiresAt")
            if expires_at <= datetime.now(UTC):
                raise InvalidError("expiresAt is in the past", field="expiresAt")
        if await self._ports.users.get(user) is None:
            raise InvalidError(f"no user {user_id}", field="userId")
        try:
            grant = await self._ports.permissions.grant(
                user,
                resource_type,
                resource_id,
                level,
                granted_by=actor.user_id,
                expires_at=expires_at,
            )
        except StorageConflict as exc:  # the user was deleted meanwhile
            raise InvalidError(f"no user {user_id}", field="userId") from exc
        except ValueError as exc:
            raise InvalidError(str(exc)) from exc
        self._changed(actor, grant, "granted")
        return grant

    async def list(
        self,
        *,
        user_id: str | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
    ) -> list[Grant]:
        """A user's grants, or a resource's (``resource_type`` and ``resource_id``), or
        both filters at once."""
        if (resource_type is None) != (resource_id is None):
            raise InvalidError("filter a resource with both resourceType and resourceId")
        if user_id is None and resource_type is None:
            raise InvalidError("filter by userId, or by resourceType and resourceId")
        if resource_type is not None and resource_type not in RESOURCE_TYPES:
            raise InvalidError(
                f"resourceType must be one of {', '.join(RESOURCE_TYPES)}", field="resourceType"
            )
        if user_id is not None:
            grants = await self._ports.permissions.for_user(_uuid(user_id, "user", "userId"))
            if resource_type is not None:
                grants = [
                    g
                    for g in grants
                    if g.resource_type == resource_type and g.resource_id == resource_id
                ]
            return grants
        assert resource_type is not None
        assert resource_id is not None
        return await self._ports.permissions.for_resource(resource_type, resource_id)

    async def revoke(self, actor: AuditContext, grant_id: str) -> Grant:
        try:
            key = uuid.UUID(grant_id)
        except ValueError:
            raise NotFoundError(f"no grant {grant_id!r}", what="grant") from None
        grant = await self._ports.permissions.revoke_id(key)
        if grant is None:
            raise NotFoundError(f"no grant {grant_id}", what="grant")
        self._changed(actor, grant, "revoked")
        return grant

    def _changed(self, actor: AuditContext, grant: Grant, verb: str) -> None:
        user_id = str(grant.user_id)
        self._ports.access.forget_user(user_id)
        if grant.resource_type == "business_document" and grant.resource_id != ANY_RESOURCE:
            self._ports.access.forget(grant.resource_id)
        what = (
            f"every {grant.resource_type}"
            if grant.resource_id == ANY_RESOURCE
            else f"{grant.resource_type} {grant.resource_id}"
        )
        self._ports.audit.record(
            actor.entry(
                "permission_change",
                grant.resource_type,
                grant.resource_id,
                {
                    verb: {
                        "grantId": str(grant.id),
                        "userId": user_id,
                        "level": grant.permission_level,
                        "expiresAt": grant.expires_at.isoformat() if grant.expires_at else None,
                    }
                },
            )
        )
        message = (
            f"You were given {grant.permission_level} access to {what}"
            if verb == "granted"
            else f"Your {grant.permission_level} access to {what} was removed"
        )
        if verb == "granted" and grant.expires_at is not None:
            message += f" until {grant.expires_at.isoformat(timespec='minutes')}"
        self._ports.notifier.send_soon(
            [
                NewNotification(
                    grant.user_id,
                    f"permission_{verb}",
                    f"Access {verb}",
                    message,
                    grant.resource_type,
                    grant.resource_id,
                )
            ]
        )
