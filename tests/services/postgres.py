"""Fixtures for tests that need PostgreSQL: a throwaway server for the session.

``postgres_server`` gives the URL of a PostgreSQL server the tests may create databases on:

* ``COLLAB_TEST_POSTGRES_URL`` when it is set (a role allowed to ``CREATE DATABASE``); the
  suite only ever drops the databases it created, named ``collab_test_<run>_<n>``;
* otherwise a server of its own, started from the PostgreSQL binaries of this machine
  (``pg_ctl`` on PATH, else the newest ``/usr/lib/postgresql/*/bin``; ``COLLAB_TEST_PG_BIN``
  names another directory) in a temporary directory, on a free port of 127.0.0.1, with
  ``fsync=off`` (nothing of it outlives the session). ``initdb`` refuses to run as root, so
  under root the server is initialised and run as an unprivileged OS user (``postgres``, or
  ``COLLAB_TEST_PG_OS_USER``) through ``runuser``. The server is stopped and its directory
  removed when the session ends.

Missing binaries fail the suite rather than skip it: the PostgreSQL adapter must be tested.
The server pytest-postgresql starts is not used because its ``initdb`` runs as the current
user, which fails under root (CI runs as root). The server itself is
:class:`loadtests.services.ThrowawayPostgres`; this plugin adds the owner file, the reaping of
stale servers and the ``COLLAB_TEST_*`` variables.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from loadtests import services
from persistence.relational import RelationalStores, migrate, open_relational
from persistence.relational.schema import METADATA

T = TypeVar("T")
RUN_ID = uuid.uuid4().hex[:8]
START_TIMEOUT = services.POSTGRES_START_TIMEOUT
ROOT_PREFIX = "collab-pg-"
OWNER_FILE = "owner.pid"


def run_in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a loop of its own, even from inside a running loop
    (session fixtures may be first requested from an async fixture)."""
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


def _pg_bin() -> Path:
    configured = os.environ.get("COLLAB_TEST_PG_BIN")
    if configured:
        return Path(configured)
    found = services.postgres_bin_dir()
    if found is None:
        pytest.fail(
            "no PostgreSQL binaries (pg_ctl) found: install PostgreSQL, set COLLAB_TEST_PG_BIN, "
            "or set COLLAB_TEST_POSTGRES_URL to a server the tests may create databases on"
        )
    return found


_free_port = services.free_port


class ThrowawayPostgres(services.ThrowawayPostgres):
    """:class:`loadtests.services.ThrowawayPostgres` (``fsync=off``) that records which
    process started it (``owner.pid``): a later session reaps the server if that process
    dies without stopping it (kill -9, a CI timeout)."""

    def start(self) -> None:
        (self.root / OWNER_FILE).write_text(str(os.getpid()))
        super().start()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_stale_servers(bin_dir: Path, os_user: str | None) -> None:
    """Stop and remove the throwaway servers of test sessions that died without doing it.

    Only directories this fixture made (``collab-pg-*`` with an owner file) whose owner
    process is gone are touched: servers of sessions still running are left alone.
    """
    for root in Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _process_alive(owner):
            continue
        stale = ThrowawayPostgres(bin_dir, root, 0, os_user)
        if (stale.data_dir / "postmaster.pid").exists():
            # Already stopped (pg_ctl fails) or not: its directory goes either way.
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                stale.stop()
        shutil.rmtree(root, ignore_errors=True)


def _os_user() -> str | None:
    name = os.environ.get("COLLAB_TEST_PG_OS_USER", services.POSTGRES_OS_USER)
    try:
        return services.postgres_os_user(name)
    except services.ServiceUnavailableError as exc:
        pytest.fail(f"{exc} (set COLLAB_TEST_PG_OS_USER)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL (``postgresql://...``, maintenance database) of a server for this session."""
    configured = os.environ.get("COLLAB_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    bin_dir, os_user = _pg_bin(), _os_user()
    _reap_stale_servers(bin_dir, os_user)
    # Not under pytest's tmp dir: that one is private to root and the server runs as postgres.
    server = ThrowawayPostgres.launch(bin_dir=bin_dir, os_user=os_user, prefix=ROOT_PREFIX)
    try:
        yield server.url
    finally:
        server.stop()


def _asyncpg_url(url: str, database: str) -> sa.URL:
    return make_url(url).set(drivername="postgresql+asyncpg", database=database)


class PostgresDatabases:
    """Creates databases named ``collab_test_<run>_<n>`` and drops exactly those.

    ``CREATE DATABASE`` takes about half a second, so the store tests share one migrated
    database (``shared``) whose tables are emptied before each test; the migration tests
    get empty databases of their own (``create``).
    """

    def __init__(self, server_url: str) -> None:
        self._server_url = server_url
        self._count = 0
        self._shared: str | None = None

    async def _admin(self, *statements: str, database: str | None = None) -> None:
        maintenance = database or make_url(self._server_url).database or "postgres"
        engine = create_async_engine(
            _asyncpg_url(self._server_url, maintenance), isolation_level="AUTOCOMMIT"
        )
        try:
            async with engine.connect() as conn:
                for statement in statements:
                    await conn.execute(sa.text(statement))
        finally:
            await engine.dispose()

    def _name(self) -> str:
        self._count += 1
        return f"collab_test_{RUN_ID}_{self._count}"

    def url(self, name: str) -> str:
        return _asyncpg_url(self._server_url, name).render_as_string(hide_password=False)

    async def create(self) -> str:
        """A new, empty database and its URL."""
        name = self._name()
        await self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    async def shared(self) -> str:
        """The session's migrated database, every table emptied; its URL."""
        if self._shared is None:
            name = self._name()
            await self._admin(f'CREATE DATABASE "{name}"')
            await migrate(self.url(name))
            self._shared = name
        tables = ", ".join(f'"{table.name}"' for table in METADATA.sorted_tables)
        await self._admin(f"TRUNCATE {tables} CASCADE", database=self._shared)
        return self.url(self._shared)

    async def drop(self, url: str) -> None:
        name = make_url(url).database
        assert name is not None
        assert name.startswith(f"collab_test_{RUN_ID}_")
        if name != self._shared:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._admin(f'DROP DATABASE IF EXISTS "{self._shared}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_databases(postgres_server: str) -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases(postgres_server)
    yield databases
    run_in_thread(databases.aclose())


@pytest.fixture
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """``(backend, url)`` of a fresh, empty database; parametrise ``backend`` indirectly."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield backend, f"sqlite+aiosqlite:///{tmp_path / 'relational.sqlite3'}"
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    url = await databases.create()
    try:
        yield backend, url
    finally:
        await databases.drop(url)


# -- the relational stores on a migrated database --------------------------------------------

RELATIONAL_BACKENDS = ["sqlite", "postgresql"]
T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


class FakeClock:
    """The stores' clock in tests: a fixed moment that tests move by hand."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Relational:
    """What a relational contract test gets: the stores, their database and their clock."""

    backend: str
    url: str
    stores: RelationalStores
    clock: FakeClock


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; tests get copies of it."""
    path = tmp_path_factory.mktemp("relational-template") / "template.sqlite3"
    run_in_thread(migrate(f"sqlite:///{path}"))
    return path


async def _migrated_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "relational.sqlite3"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    return await databases.shared()


@pytest.fixture(params=RELATIONAL_BACKENDS)
async def relational(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Relational]:
    """The relational stores of one backend on a fresh database migrated to head."""
    backend: str = request.param
    url = await _migrated_url(request, backend, tmp_path)
    clock = FakeClock()
    async with await open_relational(url, clock=clock) as stores:
        yield Relational(backend, url, stores, clock)
