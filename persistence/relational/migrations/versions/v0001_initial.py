"""Initial schema: every table of cms-schema.md section 2, plus the product's columns.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Frozen: later changes to ``schema.py`` go in new revisions, never here. Types are written out
(not imported from ``schema.py``) so this file keeps meaning what it meant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
INET = sa.String(45).with_variant(postgresql.INET(), "postgresql")
TEXT_ARRAY = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.Uuid(), nullable=False)


def _ts(name: str, *, now: bool = False) -> sa.Column[Any]:
    default = sa.func.now() if now else None
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=True)


def _fk(name: str, *, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.Uuid(), nullable=nullable)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    empty_array = sa.text("'{}'::text[]" if postgres else "'[]'")

    op.create_table(
        "roles",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("permissions", TEXT_ARRAY, server_default=empty_array),
        _ts("created_at", now=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_roles")),
        sa.UniqueConstraint("name", name=op.f("uq_roles_name")),
    )
    op.create_table(
        "users",
        _id(),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("role", sa.String(50), nullable=False),
        sa.Column("department", sa.String(100)),
        sa.Column("status", sa.String(50), server_default="active"),
        _ts("last_login"),
        _ts("created_at", now=True),
        _ts("updated_at", now=True),
        _ts("suspended_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "permissions",
        _id(),
        _fk("user_id", nullable=False),
        sa.Column("resource_type", sa.String(100), nullable=False),
        sa.Column("resource_id", sa.String(255), nullable=False),
        sa.Column("permission_level", sa.String(50), nullable=False),
        _fk("granted_by"),
        _ts("granted_at", now=True),
        _ts("expires_at"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_permissions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["granted_by"], ["users.id"], name=op.f("fk_permissions_granted_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_permissions")),
        sa.UniqueConstraint(
            "user_id",
            "resource_type",
            "resource_id",
            name=op.f("uq_permissions_user_id_resource_type_resource_id"),
        ),
    )
    op.create_index("ix_permissions_resource", "permissions", ["resource_type", "resource_id"])

    op.create_table(
        "audit_logs",
        _id(),
        _fk("user_id", nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("resource_type", sa.String(100), nullable=False),
        sa.Column("resource_id", sa.String(255)),
        sa.Column("changes", JSON),
        sa.Column("ip_address", INET),
        sa.Column("user_agent", sa.String(500)),
        sa.Column("status", sa.String(50), server_default="success"),
        sa.Column("error_message", sa.Text()),
        _ts("created_at", now=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_audit_logs_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_logs")),
    )
    op.create_index("idx_user_action_created", "audit_logs", ["user_id", "action", "created_at"])
    op.create_index(
        "idx_resource_created", "audit_logs", ["resource_type", "resource_id", "created_at"]
    )
    op.create_index("ix_audit_logs_user_created", "audit_logs", ["user_id", "created_at"])

    op.create_table(
        "data_access_logs",
        _id(),
        _fk("user_id", nullable=False),
        sa.Column("document_id", sa.String(255), nullable=False),
        sa.Column("access_type", sa.String(50), nullable=False),
        _ts("accessed_at", now=True),
        sa.Column("data_sensitivity", sa.String(50)),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_data_access_logs_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_access_logs")),
    )
    op.create_index("idx_user_access", "data_access_logs", ["user_id", "accessed_at"])

    op.create_table(
        "approval_workflows",
        _id(),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("resource_type", sa.String(100), nullable=False),
        sa.Column("status", sa.String(50), server_default="active"),
        sa.Column("steps", JSON, nullable=False),
        _ts("created_at", now=True),
        _fk("created_by"),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_approval_workflows_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_workflows")),
    )
    op.create_table(
        "approval_requests",
        _id(),
        _fk("workflow_id"),
        sa.Column("resource_type", sa.String(100), nullable=False),
        sa.Column("resource_id", sa.String(255), nullable=False),
        _fk("requestor_id", nullable=False),
        sa.Column("status", sa.String(50), server_default="pending"),
        sa.Column("current_step", sa.Integer(), server_default=sa.text("1")),
        sa.Column("total_steps", sa.Integer()),
        _ts("created_at", now=True),
        _ts("completed_at"),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["approval_workflows.id"],
            name=op.f("fk_approval_requests_workflow_id_approval_workflows"),
        ),
        sa.ForeignKeyConstraint(
            ["requestor_id"], ["users.id"], name=op.f("fk_approval_requests_requestor_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_requests")),
    )
    op.create_index("idx_status_created", "approval_requests", ["status", "created_at"])
    op.create_index(
        "ix_approval_requests_resource", "approval_requests", ["resource_type", "resource_id"]
    )
    op.create_table(
        "approval_steps",
        _id(),
        _fk("approval_request_id", nullable=False),
        sa.Column("step_number", sa.Integer(), nullable=False),
        sa.Column("required_role", sa.String(100), nullable=False),
        _fk("assigned_to"),
        sa.Column("status", sa.String(50), server_default="pending"),
        _ts("reviewed_at"),
        _fk("reviewed_by"),
        sa.Column("review_comments", sa.Text()),
        sa.ForeignKeyConstraint(
            ["approval_request_id"],
            ["approval_requests.id"],
            name=op.f("fk_approval_steps_approval_request_id_approval_requests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["assigned_to"], ["users.id"], name=op.f("fk_approval_steps_assigned_to_users")
        ),
        sa.ForeignKeyConstraint(
            ["reviewed_by"], ["users.id"], name=op.f("fk_approval_steps_reviewed_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_steps")),
        sa.UniqueConstraint(
            "approval_request_id",
            "step_number",
            name=op.f("uq_approval_steps_approval_request_id_step_number"),
        ),
    )

    op.create_table(
        "notifications",
        _id(),
        _fk("user_id", nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("resource_type", sa.String(100)),
        sa.Column("resource_id", sa.String(255)),
        _ts("read_at"),
        _ts("created_at", now=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notifications_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index("idx_user_read_created", "notifications", ["user_id", "read_at", "created_at"])

    op.create_table(
        "comments",
        _id(),
        sa.Column("document_id", sa.String(255), nullable=False),
        _fk("author_id", nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        _fk("parent_comment_id"),
        sa.Column("resolved", sa.Boolean(), server_default=sa.false()),
        _fk("resolved_by"),
        _ts("resolved_at"),
        _ts("created_at", now=True),
        _ts("updated_at", now=True),
        sa.Column("section_id", sa.String(255)),
        sa.Column("anchor", JSON),
        sa.Column("quoted_text", sa.Text()),
        sa.Column("mentions", JSON, server_default=sa.text("'[]'")),
        _ts("edited_at"),
        _ts("deleted_at"),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_comments_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["parent_comment_id"],
            ["comments.id"],
            name=op.f("fk_comments_parent_comment_id_comments"),
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by"], ["users.id"], name=op.f("fk_comments_resolved_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
    )
    op.create_index("idx_document_created", "comments", ["document_id", "created_at"])
    op.create_index("idx_author_created", "comments", ["author_id", "created_at"])
    op.create_index("ix_comments_parent_comment_id", "comments", ["parent_comment_id"])


def downgrade() -> None:
    for table in (
        "comments",
        "notifications",
        "approval_steps",
        "approval_requests",
        "approval_workflows",
        "data_access_logs",
        "audit_logs",
        "permissions",
        "users",
        "roles",
    ):
        op.drop_table(table)  # their indexes go with them
