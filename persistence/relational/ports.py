"""The relational ports: users, roles, permission grants, audit trails.

One adapter implements them on SQLAlchemy Core for both backends (:mod:`.sql`): PostgreSQL
through asyncpg (service mode, ``COLLAB_POSTGRES_URL``) and SQLite through aiosqlite (the
embedded default). Both pass ``tests/contract/test_contract_relational.py``.

Guarantees every adapter of every port here gives:

* Input is checked before any I/O (the value types of :mod:`.records` check themselves);
  a bad value raises ValueError and sends nothing to the database.
* Every value in a query is a bound parameter: a filter holding SQL (``' OR 1=1 --``)
  matches nothing and changes nothing.
* Timestamps come back timezone-aware in UTC with microseconds; ids are ``uuid.UUID``.
* Every write is one transaction, committed (durable) when the call returns; a call that
  raised changed nothing, except where a docstring says otherwise.
* Failures raise :mod:`persistence.errors`: StorageUnavailable (the database cannot be
  reached, a statement timed out: transient), StorageConflict (a unique key is taken or a
  referenced row is missing), RecordNotFound (the row addressed is not stored),
  SchemaOutdated (the migrations were not applied), StorageClosed (after ``aclose``).
  Reads are retried a bounded number of times on connection failures before
  StorageUnavailable is raised. Driver exceptions never cross a port.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from persistence.relational.records import (
    UNSET,
    AccessQuery,
    AuditEntry,
    AuditQuery,
    CursorPage,
    DataAccessEntry,
    Grant,
    NewUser,
    Page,
    Role,
    Unset,
    User,
    UserChanges,
    UserQuery,
)


class UserStore(Protocol):
    """The ``users`` table: who may sign in, with which role, in which state.

    * ``add`` stores a new user (created_at = updated_at = now); StorageConflict when the
      email (normalised: stripped, lowercased) or the id is taken.
    * ``get`` / ``get_by_email`` return the user or None (the email is normalised first).
    * ``find`` returns a :class:`Page` of users matching a :class:`UserQuery`.
    * ``update`` sets the fields given in :class:`UserChanges` and bumps ``updated_at``;
      setting ``status`` to ``"suspended"`` stamps ``suspended_at`` (kept if already
      suspended), any other status clears it. ``suspend`` and ``reactivate`` do the same
      for the status alone and are idempotent. All three raise RecordNotFound for an
      unknown id and return the user as stored after the change.
    * ``record_login`` sets ``last_login`` (not ``updated_at``); RecordNotFound if unknown.
    * ``delete`` removes the user (their grants and notifications go with them: ON DELETE
      CASCADE); False if it was not stored; StorageConflict (nothing deleted) while other
      rows name the user (audit trail, comments, approvals...).
    """

    async def add(self, user: NewUser) -> User: ...

    async def get(self, user_id: uuid.UUID) -> User | None: ...

    async def get_by_email(self, email: str) -> User | None: ...

    async def find(self, query: UserQuery) -> Page[User]: ...

    async def update(self, user_id: uuid.UUID, changes: UserChanges) -> User: ...

    async def suspend(self, user_id: uuid.UUID) -> User: ...

    async def reactivate(self, user_id: uuid.UUID) -> User: ...

    async def record_login(self, user_id: uuid.UUID, at: datetime) -> None: ...

    async def delete(self, user_id: uuid.UUID) -> bool: ...


class RoleStore(Protocol):
    """The ``roles`` table: named sets of permission strings (``"document:edit"``...).

    * ``create`` stores a role; StorageConflict if the name is taken. Permission strings
      are kept once each, in the order first given.
    * ``get`` / ``get_by_name`` return the role or None; ``list_all`` returns every role
      ordered by name (roles are few).
    * ``update`` changes the fields given (name, description, the whole permission list);
      StorageConflict for a taken name, RecordNotFound for an unknown id.
    * ``delete`` removes a role; False if it was not stored. (``users.role`` holds a role
      name, not a reference: deleting a role leaves users as they are.)
    """

    async def create(
        self, name: str, *, description: str | None = None, permissions: Sequence[str] = ()
    ) -> Role: ...

    async def get(self, role_id: uuid.UUID) -> Role | None: ...

    async def get_by_name(self, name: str) -> Role | None: ...

    async def list_all(self) -> list[Role]: ...

    async def update(
        self,
        role_id: uuid.UUID,
        *,
        name: str | Unset = UNSET,
        description: str | Unset | None = UNSET,
        permissions: Sequence[str] | Unset = UNSET,
    ) -> Role: ...

    async def delete(self, role_id: uuid.UUID) -> bool: ...


class PermissionStore(Protocol):
    """The ``permissions`` table: per-user grants on resources, optionally expiring.

    * ``grant`` is an upsert on (user_id, resource_type, resource_id), the table's unique
      key: a second grant on the same resource replaces the level, ``granted_by``,
      ``granted_at`` (= ``at``, default now) and ``expires_at`` and keeps the row's id. The
      level is one of :data:`~.records.PERMISSION_LEVELS`. StorageConflict when the user or
      ``granted_by`` is not stored (foreign keys).
    * ``revoke`` deletes the grant; False if there was none.
    * ``for_user`` / ``for_resource`` list grants (of a user ordered by resource type and
      id; on a resource ordered by grant time then id); with ``now`` only those unexpired at
      ``now``.
    * ``effective_grants(user, type, id, now)`` returns the grants that apply to that
      resource at ``now``: the grant on it and the grant on ``(type, "*")`` (every resource
      of the type), each only if ``expires_at`` is None or later than ``now``.
    * ``delete_expired(now)`` deletes the grants expired at ``now``; returns how many.
    * ``get(id)`` returns the grant with that id or None; ``revoke_id(id)`` deletes it and
      returns it as it was (None if there was none).
    * Deleting a user deletes their grants (ON DELETE CASCADE).
    """

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
    ) -> Grant: ...

    async def revoke(self, user_id: uuid.UUID, resource_type: str, resource_id: str) -> bool: ...

    async def for_user(self, user_id: uuid.UUID, *, now: datetime | None = None) -> list[Grant]: ...

    async def for_resource(
        self, resource_type: str, resource_id: str, *, now: datetime | None = None
    ) -> list[Grant]: ...

    async def effective_grants(
        self, user_id: uuid.UUID, resource_type: str, resource_id: str, now: datetime
    ) -> list[Grant]: ...

    async def delete_expired(self, now: datetime) -> int: ...

    async def get(self, grant_id: uuid.UUID) -> Grant | None: ...

    async def revoke_id(self, grant_id: uuid.UUID) -> Grant | None: ...


class AuditStore(Protocol):
    """The ``audit_logs`` and ``data_access_logs`` tables: append-only trails.

    * ``append`` writes every entry in one transaction: all or none. It is idempotent per
      entry id (an entry already stored is skipped), so after StorageUnavailable, when the
      outcome is unknown, appending the same entries again is safe; the adapter does that
      retry itself a bounded number of times. StorageConflict (and nothing written) when an
      entry names a user that is not stored.
    * ``append_access`` writes data-access entries in batches of at most ``batch_size``
      rows, one transaction per batch (a long list never holds one long transaction). It is
      idempotent per entry id like ``append``; if a batch fails the error is raised, the
      batches before it stay written, and calling again with the same entries is safe.
      Returns how many rows it wrote (entries already stored are not counted).
    * ``query`` / ``query_access`` return a :class:`CursorPage`, newest first (ties broken
      by id), filtered by :class:`AuditQuery` / :class:`AccessQuery`; the cursor of a page
      continues exactly after its last row. ValueError for a malformed cursor.
    """

    async def append(self, entries: Sequence[AuditEntry]) -> None: ...

    async def append_access(
        self, entries: Sequence[DataAccessEntry], *, batch_size: int = 500
    ) -> int: ...

    async def query(self, query: AuditQuery) -> CursorPage[AuditEntry]: ...

    async def query_access(self, query: AccessQuery) -> CursorPage[DataAccessEntry]: ...
