"""The relational tables of ``cms-schema.md`` section 2, once, in SQLAlchemy Core.

This ``METADATA`` is the one source of truth: the Alembic revisions under ``migrations/``
create exactly it (a contract test runs Alembic's ``compare_metadata`` against a migrated
database on both backends), and the stores query through these ``Table`` objects.

Portable types, so PostgreSQL (asyncpg) and SQLite (aiosqlite) store the same values:

* primary keys are ``UUID`` on PostgreSQL and ``CHAR(32)`` on SQLite (``sa.Uuid``), generated
  client-side (uuid4) so both backends agree on how ids are made;
* JSON columns are ``JSONB`` on PostgreSQL and ``JSON`` (text) on SQLite;
* ``ip_address`` is ``INET`` on PostgreSQL and ``VARCHAR(45)`` on SQLite;
* ``roles.permissions`` is ``TEXT[]`` on PostgreSQL and a JSON array on SQLite;
* timestamps are ``TIMESTAMP WITH TIME ZONE`` on PostgreSQL; SQLite keeps them as UTC text
  and :class:`UtcDateTime` gives them back timezone-aware. Naive datetimes are refused.

Beside the schema, the product adds (see ``docs/relational.md``): ``users.suspended_at``;
on ``comments`` ``section_id``, ``anchor``, ``quoted_text``, ``mentions``, ``edited_at``,
``deleted_at``; on ``approval_requests`` ``revision_id`` and ``previous_request_id``
(revision 0002, see ``docs/comments.md``); and indexes for the stores' own queries (``ix_*``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import DDLCompiler
from sqlalchemy.sql.functions import FunctionElement

# Deterministic constraint names: Alembic can address them, both backends agree on them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

METADATA = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """An aware datetime, stored in UTC; comes back aware in UTC on every backend.

    PostgreSQL stores ``TIMESTAMP WITH TIME ZONE``; SQLite stores naive UTC text (which sorts
    in time order, as every value is written in UTC with microseconds). Binding a naive
    datetime raises ValueError (the stores check before any I/O).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("datetimes must be timezone-aware")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite, or CURRENT_TIMESTAMP: UTC by definition
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class empty_array(FunctionElement[Any]):  # named as it reads in SQL
    """Server default of an empty array: ``'{}'`` for ``TEXT[]``, ``'[]'`` for SQLite JSON."""

    name = "empty_array"
    inherit_cache = True


@compiles(empty_array)
def _empty_array_json(element: empty_array, compiler: DDLCompiler, **kw: Any) -> str:
    return "'[]'"


@compiles(empty_array, "postgresql")
def _empty_array_pg(element: empty_array, compiler: DDLCompiler, **kw: Any) -> str:
    return "'{}'::text[]"


# Python None is SQL NULL (not JSON null) in the JSON columns.
JSON_TYPE = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)
INET_TYPE = sa.String(45).with_variant(postgresql.INET(), "postgresql")
TEXT_ARRAY_TYPE = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")


def _id() -> sa.Column[uuid.UUID]:
    return sa.Column("id", sa.Uuid(), primary_key=True, default=uuid.uuid4)


def _now(name: str, *, nullable: bool = True) -> sa.Column[datetime]:
    return sa.Column(name, UtcDateTime(), server_default=sa.func.now(), nullable=nullable)


def _at(name: str) -> sa.Column[datetime]:
    return sa.Column(name, UtcDateTime(), nullable=True)


def _user_fk(name: str, *, nullable: bool = True, ondelete: str | None = None) -> sa.Column[Any]:
    return sa.Column(
        name, sa.Uuid(), sa.ForeignKey("users.id", ondelete=ondelete), nullable=nullable
    )


# -- 2.1 users and permissions ---------------------------------------------------------------

users = sa.Table(
    "users",
    METADATA,
    _id(),
    sa.Column("email", sa.String(255), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("role", sa.String(50), nullable=False),
    sa.Column("department", sa.String(100)),
    sa.Column("status", sa.String(50), server_default="active"),
    _at("last_login"),
    _now("created_at"),
    _now("updated_at"),
    # Product: when the account was suspended (None while it is not).
    _at("suspended_at"),
    sa.UniqueConstraint("email"),
)

permissions = sa.Table(
    "permissions",
    METADATA,
    _id(),
    _user_fk("user_id", nullable=False, ondelete="CASCADE"),
    sa.Column("resource_type", sa.String(100), nullable=False),
    sa.Column("resource_id", sa.String(255), nullable=False),
    sa.Column("permission_level", sa.String(50), nullable=False),
    _user_fk("granted_by"),
    _now("granted_at"),
    _at("expires_at"),
    sa.UniqueConstraint("user_id", "resource_type", "resource_id"),
    # Product: the grants on one resource (the unique constraint serves per-user lookups).
    sa.Index("ix_permissions_resource", "resource_type", "resource_id"),
)

roles = sa.Table(
    "roles",
    METADATA,
    _id(),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("description", sa.Text()),
    sa.Column("permissions", TEXT_ARRAY_TYPE, server_default=empty_array()),
    _now("created_at"),
    sa.UniqueConstraint("name"),
)

# -- 2.2 audit and compliance ----------------------------------------------------------------

audit_logs = sa.Table(
    "audit_logs",
    METADATA,
    _id(),
    _user_fk("user_id", nullable=False),
    sa.Column("action", sa.String(100), nullable=False),
    sa.Column("resource_type", sa.String(100), nullable=False),
    sa.Column("resource_id", sa.String(255)),
    sa.Column("changes", JSON_TYPE),
    sa.Column("ip_address", INET_TYPE),
    sa.Column("user_agent", sa.String(500)),
    sa.Column("status", sa.String(50), server_default="success"),
    sa.Column("error_message", sa.Text()),
    _now("created_at"),
    sa.Index("idx_user_action_created", "user_id", "action", "created_at"),
    sa.Index("idx_resource_created", "resource_type", "resource_id", "created_at"),
    # Product: a user's whole trail in time order, whatever the action.
    sa.Index("ix_audit_logs_user_created", "user_id", "created_at"),
)

data_access_logs = sa.Table(
    "data_access_logs",
    METADATA,
    _id(),
    _user_fk("user_id", nullable=False),
    sa.Column("document_id", sa.String(255), nullable=False),
    sa.Column("access_type", sa.String(50), nullable=False),
    _now("accessed_at"),
    sa.Column("data_sensitivity", sa.String(50)),
    # Not in the schema document: the request that read the document (migration 0004).
    sa.Column("request_id", sa.String(128)),
    sa.Index("idx_user_access", "user_id", "accessed_at"),
)

# -- 2.3 workflow and approvals --------------------------------------------------------------

approval_workflows = sa.Table(
    "approval_workflows",
    METADATA,
    _id(),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("description", sa.Text()),
    sa.Column("resource_type", sa.String(100), nullable=False),
    sa.Column("status", sa.String(50), server_default="active"),
    sa.Column("steps", JSON_TYPE, nullable=False),
    _now("created_at"),
    _user_fk("created_by"),
)

approval_requests = sa.Table(
    "approval_requests",
    METADATA,
    _id(),
    sa.Column("workflow_id", sa.Uuid(), sa.ForeignKey("approval_workflows.id")),
    sa.Column("resource_type", sa.String(100), nullable=False),
    sa.Column("resource_id", sa.String(255), nullable=False),
    _user_fk("requestor_id", nullable=False),
    sa.Column("status", sa.String(50), server_default="pending"),
    sa.Column("current_step", sa.Integer(), server_default=sa.text("1")),
    sa.Column("total_steps", sa.Integer()),
    _now("created_at"),
    _at("completed_at"),
    # Product (revision 0002): the revision of the resource under review, and the rejected
    # request this one resubmits (at most one resubmission each: the unique index).
    sa.Column("revision_id", sa.String(255)),
    sa.Column("previous_request_id", sa.Uuid(), sa.ForeignKey("approval_requests.id")),
    sa.Index("idx_status_created", "status", "created_at"),
    # Product: the approval chain of one resource (cms-schema.md section 4.1).
    sa.Index("ix_approval_requests_resource", "resource_type", "resource_id"),
    sa.Index("ix_approval_requests_previous_request_id", "previous_request_id", unique=True),
)

approval_steps = sa.Table(
    "approval_steps",
    METADATA,
    _id(),
    sa.Column(
        "approval_request_id",
        sa.Uuid(),
        sa.ForeignKey("approval_requests.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("step_number", sa.Integer(), nullable=False),
    sa.Column("required_role", sa.String(100), nullable=False),
    _user_fk("assigned_to"),
    sa.Column("status", sa.String(50), server_default="pending"),
    _at("reviewed_at"),
    _user_fk("reviewed_by"),
    sa.Column("review_comments", sa.Text()),
    sa.UniqueConstraint("approval_request_id", "step_number"),
)

# -- 2.4 notifications -----------------------------------------------------------------------

notifications = sa.Table(
    "notifications",
    METADATA,
    _id(),
    _user_fk("user_id", nullable=False, ondelete="CASCADE"),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("resource_type", sa.String(100)),
    sa.Column("resource_id", sa.String(255)),
    _at("read_at"),
    _now("created_at"),
    sa.Index("idx_user_read_created", "user_id", "read_at", "created_at"),
)

# -- 2.5 collaboration -----------------------------------------------------------------------

comments = sa.Table(
    "comments",
    METADATA,
    _id(),
    sa.Column("document_id", sa.String(255), nullable=False),
    _user_fk("author_id", nullable=False),
    sa.Column("content", sa.Text(), nullable=False),
    sa.Column("parent_comment_id", sa.Uuid(), sa.ForeignKey("comments.id")),
    sa.Column("resolved", sa.Boolean(), server_default=sa.false()),
    _user_fk("resolved_by"),
    _at("resolved_at"),
    _now("created_at"),
    _now("updated_at"),
    # Product: where the comment sits. section_id names the section room (D/S); anchor holds
    # the CRDT sticky-index anchors (crdt.anchors) as JSON; quoted_text is the text commented
    # on when the comment was made; mentions is a JSON array of user ids.
    sa.Column("section_id", sa.String(255)),
    sa.Column("anchor", JSON_TYPE),
    sa.Column("quoted_text", sa.Text()),
    sa.Column("mentions", JSON_TYPE, server_default=sa.text("'[]'")),
    _at("edited_at"),
    _at("deleted_at"),  # soft delete: the thread keeps its shape
    sa.Index("idx_document_created", "document_id", "created_at"),
    sa.Index("idx_author_created", "author_id", "created_at"),
    # Product: the replies of a thread.
    sa.Index("ix_comments_parent_comment_id", "parent_comment_id"),
)

TABLES: tuple[sa.Table, ...] = tuple(METADATA.sorted_tables)
