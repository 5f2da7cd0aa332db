"""The async engine the relational stores share, and the edge where driver errors end.

Accepted URLs (:func:`normalize_url`):

* PostgreSQL: ``postgresql://``, ``postgres://`` and ``postgresql+asyncpg://`` (all run on
  asyncpg), e.g. ``postgresql://collab:secret@db:5432/collab``; query parameters go to
  ``asyncpg.connect`` (``?ssl=require``);
* SQLite: ``sqlite:///relative.db``, ``sqlite:////absolute/path.db`` and the same with
  ``sqlite+aiosqlite://`` (all run on aiosqlite). In-memory databases are refused: every
  pooled connection would see a database of its own.

Anything else raises ValueError. PostgreSQL connections get ``statement_timeout`` set by the
server at connect time and are checked before use (``pool_pre_ping``); SQLite connections run
in WAL mode with ``synchronous=FULL``, foreign keys on, a busy timeout, and explicit
``BEGIN`` / ``BEGIN IMMEDIATE`` (writers take the write lock up front, so two writers wait
for each other instead of failing with "database is locked" half-way).

Driver errors are translated here, once, into :mod:`persistence.errors`; idempotent reads are
retried a bounded number of times with exponential backoff when the failure is transient.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from persistence.errors import (
    SchemaOutdated,
    StorageClosed,
    StorageConflict,
    StorageError,
    StorageUnavailable,
)
from persistence.latency import DEPENDENCIES

T = TypeVar("T")
log = logging.getLogger(__name__)

POSTGRES = "postgresql"
SQLITE = "sqlite"
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})
_SQLITE_SCHEMES = frozenset({"sqlite", "sqlite+aiosqlite"})

# SQLSTATE classes and codes that say "try again": connection exceptions (08), operator
# intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now),
# insufficient resources (53), serialization failure and deadlock (40001, 40P01).
_RETRYABLE_SQLSTATE_CLASSES = ("08", "53")
_RETRYABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01"})
_QUERY_CANCELED = "57014"  # statement_timeout: transient, but a retry would only wait again
_UNDEFINED = frozenset({"42P01", "42703"})  # undefined table / column: not migrated


@dataclass(frozen=True, slots=True)
class RelationalOptions:
    """Tuning of the engine. Durations are float seconds.

    ``retries`` is how many times idempotent work (reads, log appends) is tried again after
    a transient failure (0 turns retrying off); the n-th retry waits about
    ``retry_backoff * 2**n`` (jittered). ``statement_timeout`` is PostgreSQL's, per
    connection; ``connect_timeout`` bounds each connection attempt.
    """

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 5.0
    pool_recycle: float = 1800.0
    connect_timeout: float = 5.0
    statement_timeout: float = 10.0
    retries: int = 2
    retry_backoff: float = 0.05
    sqlite_busy_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.pool_size < 1 or self.max_overflow < 0:
            raise ValueError("retries, pool_size, max_overflow must be >= 0 (pool_size >= 1)")
        for name in ("pool_timeout", "connect_timeout", "statement_timeout", "retry_backoff"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


def normalize_url(url: str) -> sa.URL:
    """The driver URL for a user-given one (see the module docstring); ValueError otherwise."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise ValueError(f"invalid database URL: {exc}") from None
    if parsed.drivername in _POSTGRES_SCHEMES:
        if not parsed.database:
            raise ValueError("a PostgreSQL URL must name a database")
        return parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername in _SQLITE_SCHEMES:
        if (
            not parsed.database
            or parsed.database == ":memory:"
            or parsed.database.startswith("file:")
        ):
            raise ValueError("a SQLite URL must name a file: sqlite:///path/to/collab.db")
        return parsed.set(drivername="sqlite+aiosqlite")
    raise ValueError(
        f"unsupported database URL scheme {parsed.drivername!r}: "
        "use postgresql://... or sqlite:///path"
    )


def create_engine(url: str, options: RelationalOptions | None = None) -> AsyncEngine:
    """An engine for ``url`` (no I/O: connections are made on first use)."""
    options = options or RelationalOptions()
    driver_url = normalize_url(url)
    if driver_url.get_backend_name() == POSTGRES:
        return create_async_engine(
            driver_url,
            pool_size=options.pool_size,
            max_overflow=options.max_overflow,
            pool_timeout=options.pool_timeout,
            pool_recycle=options.pool_recycle,
            pool_pre_ping=True,
            connect_args={
                "timeout": options.connect_timeout,
                "server_settings": {
                    "statement_timeout": str(int(options.statement_timeout * 1000)),
                    "application_name": "collab",
                },
            },
        )
    engine = create_async_engine(
        driver_url,
        pool_size=options.pool_size,
        max_overflow=options.max_overflow,
        pool_timeout=options.pool_timeout,
        connect_args={"timeout": options.sqlite_busy_timeout},
    )
    _configure_sqlite(engine, options)
    return engine


def _enable_wal(cursor: Any, timeout: float) -> None:
    """Switch the database to WAL (a persistent setting: done once per file). Changing the
    journal mode needs the database to itself and SQLite answers "locked" at once, without
    its busy handler, while another connection (a concurrent migrator) is in it: retry."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        cursor.execute("PRAGMA journal_mode")
        row = cursor.fetchone()
        if row is not None and str(row[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver's OperationalError, through its adapter
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        # Connection setup runs synchronously (SQLAlchemy adapts the async driver): a short
        # blocking wait, only while a first connection switches a new file to WAL.
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _configure_sqlite(engine: AsyncEngine, options: RelationalOptions) -> None:
    busy_ms = int(options.sqlite_busy_timeout * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        _enable_wal(cursor, options.sqlite_busy_timeout)
        for pragma in ("synchronous=FULL", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("collab_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# -- error translation -----------------------------------------------------------------------


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def classify(exc: BaseException, what: str) -> tuple[StorageError, bool] | None:
    """The persistence error for a driver exception and whether a read may retry it.

    None for exceptions that are not the driver's (they propagate unchanged).
    """
    if isinstance(exc, StorageError):
        return None
    state = _sqlstate(exc)
    message = f"{what}: {getattr(exc, 'orig', None) or exc}"
    if isinstance(exc, sa_exc.IntegrityError) or (state or "").startswith("23"):
        return StorageConflict(message), False
    if state in _UNDEFINED or _sqlite_undefined(exc):
        return SchemaOutdated(f"{message} (run the migrations)"), False
    if state == _QUERY_CANCELED:
        return StorageUnavailable(f"{what}: the statement timed out"), False
    if state is not None and (
        state in _RETRYABLE_SQLSTATES or state.startswith(_RETRYABLE_SQLSTATE_CLASSES)
    ):
        return StorageUnavailable(message), True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return StorageUnavailable(message), True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.InterfaceError | sa_exc.OperationalError):
        return StorageUnavailable(message), True  # pool timeout, lost link, SQLite busy
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return StorageUnavailable(message), True  # refused, unreachable, connect timeout
    if isinstance(exc, sa_exc.DBAPIError) or state is not None:
        return StorageUnavailable(message), False
    if isinstance(exc, sa_exc.StatementError) and isinstance(exc.orig, ValueError):
        return None  # a value a column type refused: handled by the caller below
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return StorageUnavailable(message), False  # the engine's own failures (pool, state)
    return None


def _sqlite_undefined(exc: BaseException) -> bool:
    if not isinstance(exc, sa_exc.OperationalError):
        return False
    text = str(exc.orig)
    return text.startswith(("no such table", "no such column"))


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Translate the driver's exceptions raised in the block into persistence errors."""
    try:
        yield
    except (sa_exc.SQLAlchemyError, OSError, TimeoutError) as exc:
        classified = classify(exc, what)
        if classified is None:
            _raise_value_error(exc, what)
            raise
        raise classified[0] from exc


def _raise_value_error(exc: BaseException, what: str) -> None:
    """A bound value a column type refused is the caller's error: ValueError, not the driver's."""
    if isinstance(exc, sa_exc.StatementError) and isinstance(exc.orig, ValueError):
        raise ValueError(f"{what}: {exc.orig}") from exc


# -- the database the stores share -----------------------------------------------------------


class SqlDatabase:
    """An engine plus the policy around it: translation, retries, closing.

    ``read`` runs a function in a read transaction and retries it on transient failures
    (only idempotent work may go through it); ``write`` runs one in a write transaction,
    retried only when the caller says it is idempotent. Both raise StorageClosed after
    :meth:`aclose`. The function runs on a pooled connection that goes back to the pool
    (or is discarded, if it broke) whatever happens, cancellation included.
    """

    def __init__(self, engine: AsyncEngine, options: RelationalOptions) -> None:
        self.engine = engine
        self.options = options
        self.dialect: str = engine.dialect.name
        self._closed = False
        # Each transaction on PostgreSQL is one timed call (collab_dependency_call_seconds);
        # the embedded SQLite file is not a dependency.
        self._calls = DEPENDENCIES["postgres"] if self.dialect == POSTGRES else None

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT construct (it has ``on_conflict_do_update/nothing``)."""
        return postgresql_insert(table) if self.dialect == POSTGRES else sqlite_insert(table)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the relational stores are closed")

    async def read(self, what: str, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``fn`` in a read transaction; retried on transient failures."""
        return await self._run(what, fn, write=False, retry=True)

    async def write(
        self,
        what: str,
        fn: Callable[[AsyncConnection], Awaitable[T]],
        *,
        idempotent: bool = False,
    ) -> T:
        """Run ``fn`` in a write transaction; retried only if ``idempotent``."""
        return await self._run(what, fn, write=True, retry=idempotent)

    async def _run(
        self,
        what: str,
        fn: Callable[[AsyncConnection], Awaitable[T]],
        *,
        write: bool,
        retry: bool,
    ) -> T:
        attempt = 0
        calls = self._calls
        while True:
            self._check_open()
            started = time.perf_counter()
            try:
                async with self.engine.connect() as conn:
                    if write:
                        conn = await conn.execution_options(collab_write=True)
                    async with conn.begin():
                        result = await fn(conn)
            except (sa_exc.SQLAlchemyError, OSError, TimeoutError) as exc:
                classified = classify(exc, what)
                if calls is not None:
                    calls.latency.observe(time.perf_counter() - started)
                    if classified is not None and not isinstance(
                        classified[0], StorageConflict | StorageClosed
                    ):
                        calls.errors += 1  # the server failed (see DependencyCalls.timed)
                if classified is None:
                    _raise_value_error(exc, what)
                    raise
                error, retryable = classified
                if not (retry and retryable) or attempt >= self.options.retries:
                    raise error from exc
            else:
                if calls is not None:
                    calls.latency.observe(time.perf_counter() - started)
                return result
            delay = self.options.retry_backoff * 2**attempt * (0.5 + random.random())
            attempt += 1
            log.warning("%s failed transiently; retry %d in %.3fs", what, attempt, delay)
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Close the pool (idempotent). Connections in use are closed when returned."""
        if self._closed:
            return
        self._closed = True
        with translated("closing the pool"):
            await self.engine.dispose()
