"""Relational storage: the tables of ``cms-schema.md`` section 2 on PostgreSQL or SQLite.

* :mod:`.schema`: the tables, once, in SQLAlchemy Core (the source of truth);
* :mod:`.migrate`: Alembic migrations built from it (``await migrate(url)``);
* :mod:`.ports` and :mod:`.records`: the ports (UserStore, RoleStore, PermissionStore,
  AuditStore), their guarantees and their value types;
* :mod:`.engine`, :mod:`.users`, :mod:`.permissions`, :mod:`.audit`: the SQL adapter, one for
  both backends (asyncpg for PostgreSQL, aiosqlite for SQLite);
* :mod:`.factory`: ``await open_relational(url)``.

See ``docs/relational.md``.
"""

from persistence.relational.engine import RelationalOptions, normalize_url
from persistence.relational.factory import RelationalStats, RelationalStores, open_relational
from persistence.relational.migrate import head_revision, migrate
from persistence.relational.ports import AuditStore, PermissionStore, RoleStore, UserStore
from persistence.relational.records import (
    ANY_RESOURCE,
    PERMISSION_LEVELS,
    UNSET,
    USER_STATUSES,
    AccessQuery,
    AuditEntry,
    AuditQuery,
    CursorPage,
    DataAccessEntry,
    Grant,
    NewUser,
    Page,
    Role,
    User,
    UserChanges,
    UserQuery,
)

__all__ = [
    "ANY_RESOURCE",
    "PERMISSION_LEVELS",
    "UNSET",
    "USER_STATUSES",
    "AccessQuery",
    "AuditEntry",
    "AuditQuery",
    "AuditStore",
    "CursorPage",
    "DataAccessEntry",
    "Grant",
    "NewUser",
    "Page",
    "PermissionStore",
    "RelationalOptions",
    "RelationalStats",
    "RelationalStores",
    "Role",
    "RoleStore",
    "User",
    "UserChanges",
    "UserQuery",
    "UserStore",
    "head_revision",
    "migrate",
    "normalize_url",
    "open_relational",
]
