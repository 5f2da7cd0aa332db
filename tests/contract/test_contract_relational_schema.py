"""The relational schema and its migrations, and the SQL adapter's edges, on both backends.

Migrations run on empty databases of their own (a SQLite file under tmp_path; a database
created on the test PostgreSQL server and dropped afterwards). The schema tests write rows
with SQLAlchemy Core straight through ``persistence.relational.schema``: they check the
constraints and defaults the migrations created, not the stores.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from persistence.errors import (
    SchemaOutdated,
    StorageClosed,
    StorageConflict,
    StorageUnavailable,
)
from persistence.relational import (
    AuditEntry,
    NewUser,
    RelationalOptions,
    UserQuery,
    head_revision,
    migrate,
    normalize_url,
    open_relational,
)
from persistence.relational.engine import create_engine
from persistence.relational.schema import METADATA
from persistence.relational.schema import comments as comments_table
from persistence.relational.schema import notifications as notifications_table
from persistence.relational.schema import permissions as permissions_table
from persistence.relational.schema import roles as roles_table
from persistence.relational.schema import users as users_table
from tests.services.postgres import RELATIONAL_BACKENDS, T0, Relational

# Every migration the package ships, oldest first: a fresh database gets them all.
ALL_REVISIONS = ["0001", "0002", "0003", "0004"]

SCHEMA_INDEXES = {
    "audit_logs": {"idx_user_action_created", "idx_resource_created"},
    "data_access_logs": {"idx_user_access"},
    "approval_requests": {"idx_status_created"},
    "notifications": {"idx_user_read_created"},
    "comments": {"idx_document_created", "idx_author_created"},
}
SCHEMA_TABLES = {
    "users",
    "permissions",
    "roles",
    "audit_logs",
    "data_access_logs",
    "approval_workflows",
    "approval_requests",
    "approval_steps",
    "notifications",
    "comments",
}

backends = pytest.mark.parametrize("database_url", RELATIONAL_BACKENDS, indirect=True)


@pytest.fixture
async def engine(relational: Relational) -> AsyncIterator[AsyncEngine]:
    """A raw engine on the relational fixture's database (same settings as the stores)."""
    raw = create_engine(relational.url)
    yield raw
    await raw.dispose()


async def run_sync(url: str, fn: Any) -> Any:
    raw = create_engine(url)
    try:
        async with raw.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await raw.dispose()


# -- migrations ------------------------------------------------------------------------------


@backends
async def test_migrate_creates_every_table_and_is_idempotent(
    database_url: tuple[str, str],
) -> None:
    _, url = database_url
    assert await migrate(url) == ALL_REVISIONS
    assert await migrate(url) == []  # re-run: nothing to do
    tables = set(await run_sync(url, lambda conn: sa.inspect(conn).get_table_names()))
    assert tables == SCHEMA_TABLES | {"alembic_version"}
    async with await open_relational(url) as stores:
        await stores.check_schema()
        assert await stores.schema_revision() == head_revision()


@backends
async def test_migrated_schema_matches_the_metadata(database_url: tuple[str, str]) -> None:
    _, url = database_url
    await migrate(url)

    def differences(conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, METADATA))

    assert await run_sync(url, differences) == []


@backends
async def test_migrated_schema_has_the_named_indexes(database_url: tuple[str, str]) -> None:
    _, url = database_url
    await migrate(url)

    def index_names(conn: sa.Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(conn)
        return {
            table: {str(index["name"]) for index in inspector.get_indexes(table)}
            for table in SCHEMA_INDEXES
        }

    found = await run_sync(url, index_names)
    for table, names in SCHEMA_INDEXES.items():
        assert names <= found[table], table


@backends
async def test_concurrent_migrations_apply_each_revision_once(
    database_url: tuple[str, str],
) -> None:
    _, url = database_url
    results = await asyncio.gather(migrate(url), migrate(url), migrate(url))
    assert sorted(results) == [[], [], ALL_REVISIONS]


@backends
async def test_stores_never_migrate_implicitly(database_url: tuple[str, str]) -> None:
    _, url = database_url
    async with await open_relational(url) as stores:
        assert await stores.schema_revision() is None
        with pytest.raises(SchemaOutdated, match="run the migrations"):
            await stores.check_schema()
        with pytest.raises(SchemaOutdated):
            await stores.users.get(uuid.uuid4())
        with pytest.raises(SchemaOutdated):
            await stores.users.add(NewUser("a@example.com", "A", "viewer"))
    tables = await run_sync(url, lambda conn: sa.inspect(conn).get_table_names())
    assert tables == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db:5432/collab", "postgresql+asyncpg://u:***@db:5432/collab"),
        ("postgres://u@db/collab", "postgresql+asyncpg://u@db/collab"),
        (
            "postgresql+asyncpg://db/collab?ssl=require",
            "postgresql+asyncpg://db/collab?ssl=require",
        ),
        ("sqlite:///data/collab.db", "sqlite+aiosqlite:///data/collab.db"),
        ("sqlite:////abs/collab.db", "sqlite+aiosqlite:////abs/collab.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_accepted_urls(url: str, expected: str) -> None:
    assert str(normalize_url(url)) == expected


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u@db/collab",
        "postgresql+psycopg2://db/collab",
        "postgresql://db",
        "sqlite://",
        "sqlite:///:memory:",
        "not a url",
        "",
    ],
)
async def test_refused_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)url"):
        normalize_url(url)
    with pytest.raises(ValueError, match=r"(?i)url"):
        await open_relational(url)
    with pytest.raises(ValueError, match=r"(?i)url"):
        await migrate(url)


# -- the schema's constraints and defaults ---------------------------------------------------


async def insert_user(conn: Any, email: str = "a@example.com") -> uuid.UUID:
    user_id = uuid.uuid4()
    await conn.execute(users_table.insert().values(id=user_id, email=email, name="A", role="r"))
    return user_id


async def test_server_defaults(relational: Relational, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        user_id = await insert_user(conn)
        await conn.execute(roles_table.insert().values(id=uuid.uuid4(), name="bare"))
        await conn.execute(
            comments_table.insert().values(
                id=uuid.uuid4(), document_id="d1", author_id=user_id, content="hi"
            )
        )
    async with engine.connect() as conn:
        user = (await conn.execute(sa.select(users_table))).one()
        bare = sa.select(roles_table).where(roles_table.c.name == "bare")
        role = (await conn.execute(bare)).one()
        comment = (await conn.execute(sa.select(comments_table))).one()
    assert user.status == "active"
    assert user.created_at.tzinfo == UTC
    assert abs((user.created_at - datetime.now(UTC)).total_seconds()) < 60
    assert list(role.permissions) == []
    assert (comment.resolved, comment.mentions, comment.anchor) == (False, [], None)
    assert comment.created_at is not None


async def test_comment_product_columns_round_trip(
    relational: Relational, engine: AsyncEngine
) -> None:
    anchor = {"start": {"type": "sticky", "item": [12, 3], "assoc": -1}, "end": None}
    async with engine.begin() as conn:
        author = await insert_user(conn)
        parent = uuid.uuid4()
        await conn.execute(
            comments_table.insert().values(
                id=parent,
                document_id="d1",
                author_id=author,
                content="root",
                section_id="d1/s1",
                anchor=anchor,
                quoted_text="Grow by 10%",
                mentions=[str(author)],
                edited_at=T0,
                deleted_at=T0,
            )
        )
        await conn.execute(
            comments_table.insert().values(
                id=uuid.uuid4(),
                document_id="d1",
                author_id=author,
                content="reply",
                parent_comment_id=parent,
            )
        )
        with pytest.raises(sa_exc.IntegrityError):  # a reply to a comment that is not stored
            async with conn.begin_nested():
                await conn.execute(
                    comments_table.insert().values(
                        id=uuid.uuid4(),
                        document_id="d1",
                        author_id=author,
                        content="orphan",
                        parent_comment_id=uuid.uuid4(),
                    )
                )
    async with engine.connect() as conn:
        row = (
            await conn.execute(sa.select(comments_table).where(comments_table.c.id == parent))
        ).one()
    assert (row.section_id, row.anchor, row.quoted_text) == ("d1/s1", anchor, "Grow by 10%")
    assert (row.mentions, row.edited_at, row.deleted_at) == ([str(author)], T0, T0)


async def test_deleting_a_user_cascades_to_grants_and_notifications(
    relational: Relational, engine: AsyncEngine
) -> None:
    user = await relational.stores.users.add(NewUser("a@example.com", "A", "viewer"))
    await relational.stores.permissions.grant(user.id, "document", "d1", "view")
    async with engine.begin() as conn:
        await conn.execute(
            notifications_table.insert().values(
                id=uuid.uuid4(), user_id=user.id, type="document_shared", title="t", message="m"
            )
        )
        await conn.execute(users_table.delete().where(users_table.c.id == user.id))
    async with engine.connect() as conn:
        for table in (permissions_table, notifications_table):
            assert await conn.scalar(sa.select(sa.func.count()).select_from(table)) == 0


async def test_audit_rows_keep_their_user(relational: Relational, engine: AsyncEngine) -> None:
    # audit_logs.user_id has no ON DELETE: a user with an audit trail cannot be deleted.
    user = await relational.stores.users.add(NewUser("a@example.com", "A", "viewer"))
    await relational.stores.audit.append([AuditEntry(user.id, "create", "document", "d1")])
    with pytest.raises(sa_exc.IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(users_table.delete().where(users_table.c.id == user.id))
    assert await relational.stores.users.get(user.id) == user


# -- the adapter's edges ---------------------------------------------------------------------


async def test_calls_after_close_raise(relational: Relational) -> None:
    stores = relational.stores
    await stores.aclose()
    await stores.aclose()  # idempotent
    with pytest.raises(StorageClosed):
        await stores.users.get(uuid.uuid4())
    with pytest.raises(StorageClosed):
        await stores.roles.create("x")
    with pytest.raises(StorageClosed):
        await stores.check_schema()


async def test_stats_name_the_backend(relational: Relational) -> None:
    await relational.stores.users.find(UserQuery())
    stats = relational.stores.stats()
    assert stats.backend == relational.backend == relational.stores.backend
    assert "Pool size" in stats.pool


async def test_unreachable_postgres_is_unavailable_quickly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://collab@127.0.0.1:{port}/collab"
    options = RelationalOptions(connect_timeout=0.5, retries=2, retry_backoff=0.01)
    started = time.monotonic()
    caplog.set_level(logging.WARNING, logger="persistence.relational.engine")
    async with await open_relational(url, options=options) as stores:
        with pytest.raises(StorageUnavailable) as caught:
            await stores.users.get(uuid.uuid4())
        assert isinstance(caught.value.__cause__, OSError)
        retried = [record for record in caplog.records if "retry" in record.getMessage()]
        assert len(retried) == 2  # a read is retried, a bounded number of times
        caplog.clear()
        with pytest.raises(StorageUnavailable):
            await stores.users.add(NewUser("a@example.com", "A", "viewer"))
        assert caplog.records == []  # a write that is not idempotent is tried once
        with pytest.raises(StorageUnavailable):
            await migrate(url, options)
    assert time.monotonic() - started < 3


async def test_silent_postgres_times_out_as_unavailable() -> None:
    # A server that accepts the TCP connection and never answers the startup message.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        options = RelationalOptions(connect_timeout=0.2, retries=1, retry_backoff=0.01)
        started = time.monotonic()
        async with await open_relational(
            f"postgresql://collab@127.0.0.1:{port}/collab", options=options
        ) as stores:
            with pytest.raises(StorageUnavailable):
                await stores.roles.list_all()
        assert time.monotonic() - started < 3


async def test_locked_database_gives_unavailable_not_a_hang(relational: Relational) -> None:
    """PostgreSQL: statement_timeout ends a read stuck behind a lock. SQLite: the busy timeout
    ends a write stuck behind another writer."""
    options = RelationalOptions(statement_timeout=0.2, sqlite_busy_timeout=0.2, retries=0)
    async with await open_relational(relational.url, options=options) as stores:
        user = await stores.users.add(NewUser("a@example.com", "A", "viewer"))
        started = time.monotonic()
        if relational.backend == "postgresql":
            locker = create_engine(relational.url)
            try:
                async with locker.begin() as conn:
                    await conn.execute(sa.text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
                    with pytest.raises(StorageUnavailable, match="timed out"):
                        await stores.users.get(user.id)
            finally:
                await locker.dispose()
        else:
            path = sa.make_url(relational.url).database
            assert path is not None
            locker_conn = sqlite3.connect(path, isolation_level=None)
            try:
                locker_conn.execute("BEGIN IMMEDIATE")
                with pytest.raises(StorageUnavailable):
                    await stores.users.suspend(user.id)
                assert await stores.users.get(user.id) == user  # WAL: reads go on
            finally:
                locker_conn.close()
        assert time.monotonic() - started < 3
        assert (await stores.users.suspend(user.id)).status == "suspended"  # lock gone


async def test_sqlite_creates_its_directory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'relational.db'}"
    assert await migrate(url) == ALL_REVISIONS
    async with await open_relational(url) as stores:
        user = await stores.users.add(NewUser("a@example.com", "A", "viewer"))
    async with await open_relational(url) as reopened:
        assert await reopened.users.get(user.id) == user


async def test_sqlite_unwritable_location_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker / 'relational.db'}"
    with pytest.raises(StorageUnavailable):
        await migrate(url)
    with pytest.raises(StorageUnavailable):
        await open_relational(url)


async def test_conflicts_carry_the_driver_error(relational: Relational) -> None:
    await relational.stores.users.add(NewUser("a@example.com", "A", "viewer"))
    with pytest.raises(StorageConflict) as caught:
        await relational.stores.users.add(NewUser("a@example.com", "B", "viewer"))
    assert isinstance(caught.value.__cause__, sa_exc.IntegrityError)
