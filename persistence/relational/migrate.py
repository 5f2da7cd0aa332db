"""Schema migrations: Alembic, from the one source of truth in :mod:`.schema`.

``await migrate(url)`` upgrades the database at ``url`` (any URL :func:`.engine.normalize_url`
accepts) to the newest revision and returns the revision ids it applied, oldest first: all
of them on an empty database, ``[]`` on one already at head (it is idempotent). The whole
upgrade runs in one transaction (PostgreSQL and SQLite both have transactional DDL), so a
failed migration leaves the database as it was. On PostgreSQL a transaction-scoped advisory
lock serialises servers that migrate at the same time: the second waits, then finds nothing
to do. Nothing else in the package migrates implicitly: :func:`.open_relational` never does.

Writing a new revision (developers): ``alembic -c <config>`` is not needed either::

    from alembic import command
    from persistence.relational.migrate import alembic_config
    command.revision(alembic_config(), "add x", rev_id="0002")  # then edit versions/v0002_*.py

and name the file ``v<rev_id>_<slug>.py``. The contract suite checks that the revisions
build exactly :data:`.schema.METADATA` (``compare_metadata`` finds nothing) on both backends.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from persistence.errors import StorageUnavailable
from persistence.relational.engine import (
    POSTGRES,
    SQLITE,
    RelationalOptions,
    create_engine,
    normalize_url,
    translated,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key: "collab" migrations (any constant shared by every server).
ADVISORY_LOCK_KEY = 0x636F6C6C6162


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration for the package's environment, built in code (no .ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


MIGRATION_OPTIONS = RelationalOptions(sqlite_busy_timeout=120.0, statement_timeout=300.0)


def head_revision() -> str:
    """The newest revision id the package ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the package ships no revision"
    return head


def prepare_sqlite_directory(url: str) -> None:
    """Create the parent directory of a SQLite URL's file (SQLite creates only the file).

    Raises StorageUnavailable when it cannot.
    """
    driver_url = normalize_url(url)
    if driver_url.get_backend_name() == SQLITE and driver_url.database:
        directory = Path(driver_url.database).expanduser().parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create {directory}: {exc}") from exc


async def migrate(url: str, options: RelationalOptions | None = None) -> list[str]:
    """Upgrade the database at ``url`` to head; the revision ids applied, oldest first.

    Idempotent. Raises ValueError for a URL it does not accept, StorageUnavailable when the
    database cannot be reached, and lets Alembic's own errors through for a database whose
    stored revision this package does not know (a newer server migrated it).
    """
    prepare_sqlite_directory(url)
    # Migrations hold the write lock for the whole upgrade: a concurrent migrator (another
    # node starting) waits for it rather than failing after the usual busy timeout, and
    # PostgreSQL's DDL gets more than the usual statement timeout.
    engine = create_engine(url, options or MIGRATION_OPTIONS)
    try:
        with translated("migrating"):
            async with engine.connect() as conn:
                writer = await conn.execution_options(collab_write=True)
                async with writer.begin():
                    return await writer.run_sync(_upgrade)
    finally:
        await engine.dispose()


def _upgrade(connection: sa.Connection) -> list[str]:
    if connection.dialect.name == POSTGRES:
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
        )
    applied: list[str] = []
    config = alembic_config(connection)
    config.attributes["applied"] = applied
    command.upgrade(config, "head")
    return applied


def stored_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at (None: never migrated). Synchronous: use run_sync."""
    return MigrationContext.configure(connection).get_current_revision()
