"""One SQLite connection written from one thread with group commit, shared by the SQLite
adapters of ``rooms/``: :class:`persistence.rooms.sqlite.SqliteRoomStore` and
:class:`persistence.rooms.sqlite_spool.Spool`.

Guarantees of :class:`SqliteWriter`:

* **One thread owns the connection.** Every piece of work runs on it, in submission order;
  the event loop never blocks on SQLite.
* **Group commit.** Work submitted while a transaction is being committed waits, and all of
  it goes into the next transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): the cost of one
  fsync is shared by every call that arrived meanwhile instead of paid per call.
* **Durable when resolved.** The file is in WAL mode with ``synchronous=FULL``; a future
  resolves only after the ``COMMIT`` of its transaction returned, so what it wrote survives
  ``kill -9`` of the process and a power cut.
* **All or nothing per transaction.** If any work of a transaction raises, the transaction
  is rolled back and every future of it fails: a :class:`sqlite3.Error` translated by
  :func:`translate` (``StorageConflict``, ``StorageUnavailable``, ``StorageCorrupted``),
  any other exception as raised. The next transaction starts clean.
* **Commit hooks run whatever the caller does.** A ``committed`` hook runs on the event loop
  once its transaction is committed, in submission order, before the future resolves, even
  if the caller cancelled its future (an adapter's in-memory counts follow the file).
* **Reads beside the writer.** :class:`SqliteReader` is a second, read-only connection on a
  thread of its own: a read there does not wait behind the writer's commits and sees every
  transaction committed before it began (the room store's loads use it).
* **Closing.** :meth:`SqliteWriter.aclose` waits for everything submitted before it, closes
  the connection (also after a failed last transaction) and stops the thread; it is
  idempotent. :meth:`SqliteWriter.submit` after it raises ``StorageClosed``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any, TypeVar

from persistence.errors import (
    StorageClosed,
    StorageConflict,
    StorageCorrupted,
    StorageError,
    StorageUnavailable,
)
from persistence.latency import Histogram

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]
"""What runs inside a transaction, on the writer's thread."""


def translate(exc: sqlite3.Error) -> StorageError:
    """A SQLite error in the families of :mod:`persistence.errors`: integrity ->
    StorageConflict, operational (locked, I/O, disk full) -> StorageUnavailable, any other
    database error (not a database, malformed) -> StorageCorrupted, the rest ->
    StorageUnavailable."""
    if isinstance(exc, sqlite3.IntegrityError):
        return StorageConflict(str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        return StorageUnavailable(str(exc))
    if isinstance(exc, sqlite3.DatabaseError):
        return StorageCorrupted(str(exc))
    return StorageUnavailable(str(exc))


@dataclass(slots=True)
class _Call:
    work: Work[Any] | None  # None: close the connection after this transaction
    committed: Callable[[Any], None] | None
    future: asyncio.Future[Any] = field(repr=False)


class SqliteWriter:
    """The thread and connection of one SQLite file. Open with :meth:`open`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        executor: concurrent.futures.ThreadPoolExecutor,
        loop: asyncio.AbstractEventLoop,
        what: str,
        commit_latency: Histogram | None = None,
    ) -> None:
        self._conn = conn
        self._executor = executor
        self._loop = loop
        self._what = what
        self._queue: list[_Call] = []
        self._in_flight = False
        self._closing = False
        self._closed = False
        self._commit_latency = commit_latency
        self._batch_started = 0.0
        self.commits = 0
        """Transactions committed so far (group commit makes it far fewer than the calls)."""

    @classmethod
    async def open(
        cls,
        path: Path,
        prepare: Work[T],
        *,
        what: str,
        exclusive: bool = False,
        commit_latency: Histogram | None = None,
    ) -> tuple[SqliteWriter, T]:
        """Open (creating it and its folder if needed) the file at ``path`` in WAL mode with
        ``synchronous=FULL``, run ``prepare`` on it (the schema, a first read) and return
        the writer with what ``prepare`` returned. ``what`` names the file in messages and
        the thread. With ``exclusive``, the connection runs in exclusive locking mode and
        does not wait for a lock: a file another connection holds fails at once.

        StorageUnavailable if the file cannot be opened or is locked, StorageCorrupted if it
        is not a database (any error of ``prepare`` is translated the same way).
        ``commit_latency`` gets the duration of each committed transaction, from the moment
        it was handed to the thread to the moment its result is back on the event loop.
        """
        loop = asyncio.get_running_loop()
        executor = concurrent.futures.ThreadPoolExecutor(1, f"collab-{what}")
        try:
            conn, prepared = await loop.run_in_executor(
                executor, _connect, path, prepare, exclusive
            )
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise translate(exc) from exc
        except OSError as exc:
            executor.shutdown(wait=False)
            raise StorageUnavailable(f"cannot open {path}: {exc}") from exc
        return cls(conn, executor, loop, what, commit_latency), prepared

    def submit(
        self, work: Work[T], committed: Callable[[T], None] | None = None
    ) -> asyncio.Future[T]:
        """Queue ``work`` for the next transaction; the future resolves with what it returned
        once the transaction is committed (see the module docstring for failures).
        ``committed`` runs first, on the event loop, even if the future was cancelled.
        StorageClosed once :meth:`aclose` was called."""
        if self._closing:
            raise StorageClosed(f"the {self._what} is closed")
        return self._queue_call(work, committed)

    async def aclose(self) -> None:
        """Wait for the queued work, close the connection and stop the thread. Idempotent;
        a failure of the last transaction is logged, not raised."""
        if self._closing:
            return
        self._closing = True
        done = self._queue_call(None, None)
        try:
            await asyncio.shield(done)
        except StorageError as exc:
            log.warning("%s: the last transaction before closing failed: %s", self._what, exc)
        finally:
            self._executor.shutdown(wait=True)

    def _queue_call(self, work: Work[Any] | None, committed: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.append(_Call(work, committed, future))
        self._kick()
        return future

    # -- on the event loop ----------------------------------------------------------------

    def _kick(self) -> None:
        if self._in_flight or not self._queue or self._closed:
            return
        batch, self._queue = self._queue, []
        self._in_flight = True
        if self._commit_latency is not None:
            self._batch_started = perf_counter()
        if batch[-1].work is None:
            self._closed = True  # nothing can be queued after the close
        done = self._executor.submit(self._run_batch, batch)
        done.add_done_callback(
            lambda f: self._loop.call_soon_threadsafe(self._batch_done, batch, f)
        )

    def _batch_done(
        self, batch: list[_Call], done: concurrent.futures.Future[list[object]]
    ) -> None:
        self._in_flight = False
        exc = done.exception()
        results: list[object] = [exc] * len(batch) if exc is not None else done.result()
        latency = self._commit_latency
        if latency is not None and not isinstance(results[0], BaseException):
            latency.observe(perf_counter() - self._batch_started)
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                if not call.future.done():
                    call.future.set_exception(result)
                continue
            if call.committed is not None:
                try:
                    call.committed(result)
                except Exception:  # a bug in the hook must not strand the other futures
                    log.exception("%s: a commit hook failed", self._what)
            if not call.future.done():
                call.future.set_result(result)
        self._kick()

    # -- on the writer's thread -----------------------------------------------------------

    def _run_batch(self, batch: list[_Call]) -> list[object]:
        conn = self._conn
        results: list[object]
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [None if call.work is None else call.work(conn) for call in batch]
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            log.error("%s: transaction of %d calls failed: %s", self._what, len(batch), exc)
            results = self._roll_back(conn, translate(exc), len(batch))
        except Exception as exc:
            log.exception("%s: transaction of %d calls failed unexpectedly", self._what, len(batch))
            results = self._roll_back(conn, exc, len(batch))
        if batch[-1].work is None:  # the last call there is: close even after a failure
            conn.close()
        return results

    def _roll_back(self, conn: sqlite3.Connection, error: Exception, n: int) -> list[object]:
        """Roll back the failed transaction; ``error`` is every call's outcome."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error as exc:  # the failure that got us here is what is reported
                log.error("%s: rollback failed too: %s", self._what, exc)
        return [error] * n


class SqliteReader:
    """A second connection to a file a :class:`SqliteWriter` writes, on a thread of its own,
    for reads that must not queue behind the writer's commits and their fsyncs (in WAL mode
    readers and the writer do not block each other). Each read runs in one read
    transaction and sees every transaction committed before it began: every write whose
    future resolved. Open with :meth:`open` once the writer made the schema."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        executor: concurrent.futures.ThreadPoolExecutor,
        what: str,
    ) -> None:
        self._conn = conn
        self._executor = executor
        self._what = what
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, what: str) -> SqliteReader:
        """StorageUnavailable if the file cannot be opened, StorageCorrupted if it is not a
        database."""
        executor = concurrent.futures.ThreadPoolExecutor(1, f"collab-{what}-reader")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, _connect_reader, path)
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise translate(exc) from exc
        return cls(conn, executor, what)

    async def read(self, work: Work[T]) -> T:
        """Run ``work`` in a read transaction on the reader's thread; its errors translated
        by :func:`translate`. StorageClosed once :meth:`aclose` was called."""
        if self._closed:
            raise StorageClosed(f"the {self._what} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, work)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _run(self, work: Work[T]) -> T:
        conn = self._conn
        conn.execute("BEGIN")
        try:
            return work(conn)
        finally:
            conn.execute("COMMIT")

    async def aclose(self) -> None:
        """Let the running read finish, close the connection, stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)


def _connect_reader(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        conn.execute("PRAGMA query_only=1")
    except BaseException:
        conn.close()
        raise
    return conn


def _connect(path: Path, prepare: Work[T], exclusive: bool) -> tuple[sqlite3.Connection, T]:
    path.parent.mkdir(parents=True, exist_ok=True)
    timeout = 0.0 if exclusive else 5.0
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    try:
        if exclusive:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        prepared = prepare(conn)
    except BaseException:
        conn.close()
        raise
    return conn, prepared


__all__ = ["SqliteReader", "SqliteWriter", "Work", "translate"]
