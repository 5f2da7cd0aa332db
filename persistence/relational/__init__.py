"""Relational storage: the tables of ``cms-schema.md`` section 2 on PostgreSQL or SQLite.

* :mod:`.schema`: the tables, once, in SQLAlchemy Core (the source of truth);
* :mod:`.migrate`: Alembic migrations built from it (``await migrate(url)``);
* :mod:`.ports` and :mod:`.records`: the ports (UserStore, RoleStore, PermissionStore,
  AuditStore), their guarantees and their value types;
* :mod:`.review_ports` and :mod:`.review_records`: the review ports (CommentStore,
  NotificationStore, ApprovalStore) and their value types (``docs/comments.md``);
* :mod:`.engine`, :mod:`.users`, :mod:`.permissions`, :mod:`.audit`, :mod:`.comments`,
  :mod:`.notifications`, :mod:`.approvals`: the SQL adapter, one for both backends (asyncpg
  for PostgreSQL, aiosqlite for SQLite);
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
from persistence.relational.review_ports import ApprovalStore, CommentStore, NotificationStore
from persistence.relational.review_records import (
    DECISIONS,
    REQUEST_STATUSES,
    STEP_STATUSES,
    ApprovalQuery,
    ApprovalRequest,
    ApprovalStep,
    ChainLink,
    Comment,
    CommentQuery,
    InvalidTransitionError,
    NewApprovalRequest,
    NewComment,
    NewNotification,
    NewWorkflow,
    Notification,
    NotificationCounts,
    NotPermittedError,
    Workflow,
    WorkflowStep,
)

__all__ = [
    "ANY_RESOURCE",
    "DECISIONS",
    "PERMISSION_LEVELS",
    "REQUEST_STATUSES",
    "STEP_STATUSES",
    "UNSET",
    "USER_STATUSES",
    "AccessQuery",
    "ApprovalQuery",
    "ApprovalRequest",
    "ApprovalStep",
    "ApprovalStore",
    "AuditEntry",
    "AuditQuery",
    "AuditStore",
    "ChainLink",
    "Comment",
    "CommentQuery",
    "CommentStore",
    "CursorPage",
    "DataAccessEntry",
    "Grant",
    "InvalidTransitionError",
    "NewApprovalRequest",
    "NewComment",
    "NewNotification",
    "NewUser",
    "NewWorkflow",
    "NotPermittedError",
    "Notification",
    "NotificationCounts",
    "NotificationStore",
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
    "Workflow",
    "WorkflowStep",
    "head_revision",
    "migrate",
    "normalize_url",
    "open_relational",
]
