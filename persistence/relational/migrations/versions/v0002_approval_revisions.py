"""Approval requests name the revision under review and the request they resubmit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Adds to ``approval_requests``: ``revision_id`` (VARCHAR(255), nullable) and
``previous_request_id`` (UUID, nullable, referencing ``approval_requests.id``) with the unique
index ``ix_approval_requests_previous_request_id`` (a rejected request is resubmitted at most
once). Both columns are nullable, so rows written before this revision stay valid.

SQLite cannot add a constraint to an existing table, only a column with an inline reference;
PostgreSQL gets the named constraint of the naming convention. Rebuilding the table instead
(Alembic's batch mode) would drop ``approval_requests`` with foreign keys on, which cascades
to ``approval_steps``: never done here.

Frozen: later changes go in new revisions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "approval_requests"
FK_NAME = "fk_approval_requests_previous_request_id_approval_requests"
INDEX_NAME = "ix_approval_requests_previous_request_id"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column(TABLE, sa.Column("revision_id", sa.String(255), nullable=True))
    if postgres:
        op.add_column(TABLE, sa.Column("previous_request_id", sa.Uuid(), nullable=True))
        op.create_foreign_key(op.f(FK_NAME), TABLE, TABLE, ["previous_request_id"], ["id"])
    else:
        op.add_column(
            TABLE,
            sa.Column(
                "previous_request_id",
                sa.Uuid(),
                sa.ForeignKey(f"{TABLE}.id", name=op.f(FK_NAME)),
                nullable=True,
            ),
            inline_references=True,
        )
    op.create_index(INDEX_NAME, TABLE, ["previous_request_id"], unique=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        # SQLite drops no column that a foreign key uses, and a table rebuild would cascade.
        raise NotImplementedError("revision 0002 cannot be downgraded on SQLite")
    op.drop_index(INDEX_NAME, table_name=TABLE)
    op.drop_constraint(op.f(FK_NAME), TABLE, type_="foreignkey")
    op.drop_column(TABLE, "previous_request_id")
    op.drop_column(TABLE, "revision_id")
