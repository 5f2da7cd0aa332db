"""The four built-in roles in the ``roles`` table, with their permission strings.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

Inserts ``admin``, ``manager``, ``analyst`` and ``viewer`` (the roles ``users.role`` has
always named) unless a role of that name is already stored: an operator's own row wins.
The permission strings are written out here (not imported) so this file keeps meaning what
it meant; ``docs/administration.md`` says what each string allows. Downgrading deletes the
four rows only if they still hold exactly what this revision wrote.

Frozen: later changes go in new revisions.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT_ARRAY = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")

BUILT_IN: dict[str, tuple[str, list[str]]] = {
    "admin": (
        "Everything: every document, users, roles, grants, feature flags, statistics",
        [
            "documents:admin",
            "documents:create",
            "users:manage",
            "roles:manage",
            "permissions:manage",
            "features:manage",
            "stats:read",
            "audit:read",
        ],
    ),
    "manager": (
        "Approves every document, creates documents, reads the audit trail",
        ["documents:approve", "documents:create", "audit:read"],
    ),
    "analyst": ("Creates documents; sees what is shared with them", ["documents:create"]),
    "viewer": ("Sees what is shared with them", []),
}

roles = sa.table(
    "roles",
    sa.column("id", sa.Uuid()),
    sa.column("name", sa.String(100)),
    sa.column("description", sa.Text()),
    sa.column("permissions", TEXT_ARRAY),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def _created_at() -> object:
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "postgresql":
        return now
    # SQLite keeps naive UTC text with microseconds (as schema.UtcDateTime writes it).
    return now.replace(tzinfo=None)


def upgrade() -> None:
    bind = op.get_bind()
    taken = {row[0] for row in bind.execute(sa.select(roles.c.name))}
    rows = [
        {
            "id": uuid.uuid4(),
            "name": name,
            "description": description,
            "permissions": permissions,
            "created_at": _created_at(),
        }
        for name, (description, permissions) in BUILT_IN.items()
        if name not in taken
    ]
    if rows:
        op.bulk_insert(roles, rows)


def downgrade() -> None:
    bind = op.get_bind()
    for name, (_, permissions) in BUILT_IN.items():
        row = bind.execute(
            sa.select(roles.c.id, roles.c.permissions).where(roles.c.name == name)
        ).one_or_none()
        if row is not None and list(row.permissions or ()) == permissions:
            bind.execute(roles.delete().where(roles.c.id == row.id))
