"""Alembic's environment: runs the revisions on the connection the caller hands over.

:func:`persistence.relational.migrate.migrate` (and the ``alembic`` CLI through
:func:`persistence.relational.migrate.alembic_config`) put a synchronous connection, already
in a transaction, in ``config.attributes["connection"]`` and a list in
``config.attributes["applied"]`` that collects the revision ids applied. Offline (SQL script)
mode is not supported: migrations run against a live database.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo

from persistence.relational.schema import METADATA

config = context.config


def _record(
    ctx: MigrationContext,
    step: MigrationInfo,
    heads: Collection[Any],
    run_args: Mapping[str, Any],
) -> None:
    applied: list[str] | None = config.attributes.get("applied")
    if applied is not None and step.is_upgrade and step.up_revision_id is not None:
        applied.append(step.up_revision_id)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if not isinstance(connection, sa.Connection):
        raise RuntimeError("run migrations through persistence.relational.migrate()")
    context.configure(
        connection=connection,
        target_metadata=METADATA,
        # SQLite alters a table by copying it: future revisions get that for free.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        on_version_apply=_record,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
