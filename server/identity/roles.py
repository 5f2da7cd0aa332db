"""Roles and their permission strings, read from the ``roles`` table (cached).

A role is a name (``users.role``) and a list of permission strings. The strings the server
understands (``docs/administration.md`` lists them with what each allows):

* ``documents:view`` ... ``documents:admin``: that right on every business document, by
  role alone (the highest one listed counts; without any, a user has only the rights the
  documents and the grants give them);
* ``documents:create``: may create documents (and so rooms, by joining them);
* ``users:manage``, ``roles:manage``, ``permissions:manage``, ``features:manage``,
  ``stats:read``, ``audit:read``: the administration endpoints.

Other strings may be stored (for extensions); the server ignores them. A migration seeds the
four built-in roles (``admin``, ``manager``, ``analyst``, ``viewer``) with
:data:`BUILT_IN_ROLES`. :class:`RoleBook` reads the whole table (roles are few) at most once
every ``ttl`` seconds, so a change made anywhere is effective within that time; until the
table was read once, or with no store, it answers from :data:`BUILT_IN_ROLES`; a built-in
role missing from the table keeps its built-in permissions (no emptied table locks the admins
out). While the store is unavailable it keeps answering from the last table it read.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from persistence.errors import StorageError
from persistence.relational import RoleStore
from server.flights import Flights

log = logging.getLogger(__name__)


class Right(enum.IntEnum):
    """What a user may do to one document; each right includes those below it (defined
    here, where roles map to rights; :mod:`server.identity.rights` re-exports it)."""

    NONE = 0
    VIEW = 1
    COMMENT = 2
    EDIT = 3
    APPROVE = 4
    ADMIN = 5

    @property
    def label(self) -> str:
        return self.name.lower()


DOCUMENT_RIGHTS: Final[Mapping[str, Right]] = {
    "documents:view": Right.VIEW,
    "documents:comment": Right.COMMENT,
    "documents:edit": Right.EDIT,
    "documents:approve": Right.APPROVE,
    "documents:admin": Right.ADMIN,
}
CREATE_DOCUMENTS: Final = "documents:create"
MANAGE_USERS: Final = "users:manage"
MANAGE_ROLES: Final = "roles:manage"
MANAGE_PERMISSIONS: Final = "permissions:manage"
MANAGE_FEATURES: Final = "features:manage"
READ_STATS: Final = "stats:read"
READ_AUDIT: Final = "audit:read"

# Every permission string the server honours, with what it allows.
PERMISSIONS: Final[Mapping[str, str]] = {
    "documents:view": "view every business document",
    "documents:comment": "view and comment on every business document",
    "documents:edit": "edit every business document",
    "documents:approve": "edit and approve every business document",
    "documents:admin": "everything on every business document (delete, share, restore)",
    CREATE_DOCUMENTS: "create documents (REST, or by joining a new room)",
    MANAGE_USERS: "list, create, change, suspend and delete users (/api/users)",
    MANAGE_ROLES: "create, change and delete custom roles (/api/roles)",
    MANAGE_PERMISSIONS: "grant and revoke permissions on resources (/api/permissions)",
    MANAGE_FEATURES: "set and delete feature flags (/api/features)",
    READ_STATS: "read the activity counters (/api/stats)",
    READ_AUDIT: "read the audit trail (/api/audit)",
}

# The built-in roles as revision 0003 seeds them.
BUILT_IN_ROLES: Final[Mapping[str, tuple[str, ...]]] = {
    "admin": (
        "documents:admin",
        CREATE_DOCUMENTS,
        MANAGE_USERS,
        MANAGE_ROLES,
        MANAGE_PERMISSIONS,
        MANAGE_FEATURES,
        READ_STATS,
        READ_AUDIT,
    ),
    "manager": ("documents:approve", CREATE_DOCUMENTS, READ_AUDIT),
    "analyst": (CREATE_DOCUMENTS,),
    "viewer": (),
}


@dataclass(frozen=True, slots=True)
class RoleRights:
    """What a role allows: its right on every document, creation, the other strings."""

    document: Right = Right.NONE
    create: bool = False
    permissions: frozenset[str] = frozenset()

    @classmethod
    def of(cls, permissions: Iterable[str]) -> RoleRights:
        held = frozenset(permissions)
        right = max((DOCUMENT_RIGHTS[p] for p in held if p in DOCUMENT_RIGHTS), default=Right.NONE)
        return cls(right, CREATE_DOCUMENTS in held, held)

    def allows(self, permission: str) -> bool:
        return permission in self.permissions


NO_RIGHTS: Final = RoleRights()
BUILT_IN_RIGHTS: Final[Mapping[str, RoleRights]] = {
    name: RoleRights.of(strings) for name, strings in BUILT_IN_ROLES.items()
}


class RoleBook:
    """Role name -> :class:`RoleRights`, from the ``roles`` table, at most ``ttl`` s old."""

    def __init__(
        self,
        store: RoleStore | None,
        *,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._table: Mapping[str, RoleRights] = BUILT_IN_RIGHTS
        self._expires = float("-inf")
        self._loading: Flights[None, None] = Flights()
        self.loads = 0

    async def rights(self, role: str) -> RoleRights:
        """What the role allows (nothing for a role the table does not hold)."""
        if self._store is not None and self._clock() >= self._expires:
            await self._reload()
        return self._table.get(role, NO_RIGHTS)

    async def allows(self, role: str, permission: str) -> bool:
        return (await self.rights(role)).allows(permission)

    def forget(self) -> None:
        """Read the table again at the next question (after a change made here)."""
        self._expires = float("-inf")

    async def _reload(self) -> None:
        await self._loading.run(None, self._read)  # one read for every asker (flights.py)

    async def _read(self) -> None:
        try:
            assert self._store is not None
            roles = await self._store.list_all()
            stored = {role.name: RoleRights.of(role.permissions) for role in roles}
            self._table = {**BUILT_IN_RIGHTS, **stored}
            self.loads += 1
        except StorageError as exc:
            # Keep answering from what was read last (the built-ins before the first read).
            log.warning("reading the roles failed (%s): using the last table read", exc)
        finally:
            self._expires = self._clock() + self._ttl
