"""Data-access rows name the request that made them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Adds ``request_id`` (VARCHAR(128), nullable) to ``data_access_logs``: the request id
(``X-Request-ID``, or the one the server generated; see docs/operations.md) of the HTTP
request or WebSocket upgrade that read the document, so that an access can be matched with
the request's log lines. ``audit_logs`` carries it in ``changes`` (a JSON column it already
had); the data-access table has no such column. Nullable: rows written before this revision
stay valid. Downgrading drops the column (SQLite 3.35 and later drop a column that no index
or constraint uses).

Frozen: later changes go in new revisions.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "data_access_logs"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("request_id", sa.String(128), nullable=True))


def downgrade() -> None:
    op.drop_column(TABLE, "request_id")
