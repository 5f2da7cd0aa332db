"""A durable local spool of room updates on one SQLite file (WAL mode, ``synchronous=FULL``).

:class:`persistence.rooms.service.ServiceRoomStore` keeps here the updates it cannot append to
the change journal while Redis is unreachable, and moves them to the stream once it is back.
One table, ``spool (seq, room, update)``: ``seq`` orders every update ever added to the file
(it is never reused), so "oldest first" is "by seq".

One worker thread owns the connection, as in :mod:`persistence.rooms.sqlite`: calls are queued in
order and whatever queues up while a transaction is being committed goes into the next one
(group commit), so concurrent ``add`` calls share one fsync. An ``add`` future resolves once
its transaction is committed with ``synchronous=FULL``: the update then survives ``kill -9``
of the process and a power cut.

The file belongs to one process at a time: the connection runs in exclusive locking mode, so
a second :meth:`Spool.open` of the same file fails with StorageUnavailable until the first
is closed (two drainers would race each other). Whatever is still in the file when it is
closed is there again when it is next opened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from persistence.errors import (
    StorageClosed,
    StorageConflict,
    StorageCorrupted,
    StorageError,
    StorageUnavailable,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    "update" BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_room_seq ON spool (room, seq);
"""

OpKind = Literal["add", "pending", "of_room", "remove", "close"]


class SpooledUpdate(NamedTuple):
    """One row of the spool: ``(seq, room, update)``."""

    seq: int
    room: str
    update: bytes


@dataclass(slots=True)
class _Op:
    kind: OpKind
    room: str
    update: bytes
    number: int  # the limit of ``pending``, the seq of ``remove``
    future: asyncio.Future[object] = field(repr=False)


def _translate(exc: sqlite3.Error) -> StorageError:
    """SQLite errors in the families of :mod:`persistence.errors` (as
    :mod:`persistence.rooms.sqlite`)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return StorageConflict(str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        return StorageUnavailable(str(exc))
    if isinstance(exc, sqlite3.DatabaseError):
        return StorageCorrupted(str(exc))
    return StorageUnavailable(str(exc))


def _row(row: tuple[object, ...]) -> SpooledUpdate:
    seq, room, update = row
    if not isinstance(seq, int) or not isinstance(room, str) or not isinstance(update, bytes):
        raise sqlite3.DatabaseError(f"spool row {seq!r} is malformed")
    return SpooledUpdate(seq, room, update)


@dataclass(slots=True)
class _Removed:
    """What ``remove_through`` deleted, per room (the worker's answer)."""

    per_room: dict[str, int]


class Spool:
    """Room updates waiting in a SQLite file. Open with :meth:`open`; close with :meth:`aclose`.

    ``add`` returns a future at once (resolved with the update's seq once it is durable);
    ``pending``, ``of_room`` and ``remove_through`` are coroutines; ``count`` and ``holds``
    answer from memory (counted at open, kept up to date as transactions commit). Every
    failure of the file is a :class:`~persistence.errors.StorageError` (SQLite errors map
    as in :mod:`persistence.rooms.sqlite`); calls after :meth:`aclose` raise StorageClosed.
    """

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._path = path
        self._loop = loop
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "collab-spool")
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Op] = []
        self._in_flight = False
        self._closed = False
        self._per_room: dict[str, int] = {}
        self._count = 0
        self.commits = 0

    @classmethod
    async def open(cls, path: Path) -> Spool:
        """Open (creating if needed) the spool file; StorageUnavailable if it cannot be
        opened or another process holds it, StorageCorrupted if it is not a database."""
        spool = cls(path, asyncio.get_running_loop())
        try:
            per_room = await spool._loop.run_in_executor(spool._executor, spool._connect)
        except sqlite3.Error as exc:
            spool._executor.shutdown(wait=False)
            raise _translate(exc) from exc
        except OSError as exc:
            spool._executor.shutdown(wait=False)
            raise StorageUnavailable(f"cannot open {path}: {exc}") from exc
        spool._per_room = per_room
        spool._count = sum(per_room.values())
        return spool

    def _connect(self) -> dict[str, int]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, not at first add
            rows = conn.execute("SELECT room, count(*) FROM spool GROUP BY room").fetchall()
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return {str(room): int(n) for room, n in rows}

    async def __aenter__(self) -> Spool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the API --------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    def add(self, room: str, update: bytes) -> asyncio.Future[int]:
        """Queue ``update`` of ``room``; the future resolves with its seq once it is durable.
        ValueError at once for an empty room name or update."""
        if not room:
            raise ValueError("a spooled update needs a room name")
        if not update:
            raise ValueError("a spooled update must be non-empty bytes")
        future: asyncio.Future[int] = self._submit("add", room, update, 0)  # type: ignore[assignment]
        return future

    async def pending(self, limit: int) -> list[SpooledUpdate]:
        """Up to ``limit`` (>= 1) of the oldest updates, oldest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        result = await self._submit("pending", "", b"", limit)
        assert isinstance(result, list)
        return result

    async def of_room(self, room: str) -> list[SpooledUpdate]:
        """Every update of ``room`` in the spool, oldest first."""
        result = await self._submit("of_room", room, b"", 0)
        assert isinstance(result, list)
        return result

    async def remove_through(self, seq: int) -> int:
        """Delete every update with a seq up to ``seq``; returns how many were deleted."""
        result = await self._submit("remove", "", b"", seq)
        assert isinstance(result, int)
        return result

    def count(self) -> int:
        """How many updates the file holds (committed adds minus committed removals)."""
        return self._count

    def holds(self, room: str) -> bool:
        """Whether the file holds an update of ``room`` (committed, not yet removed)."""
        return room in self._per_room

    async def aclose(self) -> None:
        """Wait for the queued calls, then close the file. Idempotent."""
        if self._closed:
            return
        await self._submit("close", "", b"", 0)
        self._closed = True
        self._executor.shutdown(wait=True)

    # -- the queue ------------------------------------------------------------------------

    def _submit(
        self, kind: OpKind, room: str, update: bytes, number: int
    ) -> asyncio.Future[object]:
        if self._closed:
            raise StorageClosed("the spool is closed")
        future: asyncio.Future[object] = self._loop.create_future()
        self._queue.append(_Op(kind, room, update, number, future))
        if kind == "close":
            self._closed = True
        self._kick()
        return future

    def _kick(self) -> None:
        if self._in_flight or not self._queue:
            return
        batch, self._queue = self._queue, []
        self._in_flight = True
        done = self._executor.submit(self._run_batch, batch)
        done.add_done_callback(
            lambda f: self._loop.call_soon_threadsafe(self._batch_done, batch, f)
        )

    def _batch_done(self, batch: list[_Op], done: concurrent.futures.Future[list[object]]) -> None:
        self._in_flight = False
        exc = done.exception()
        results: list[object] = [exc] * len(batch) if exc is not None else done.result()
        for op, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                if not op.future.done():
                    op.future.set_exception(result)
                continue
            # The counts follow what is committed, whether or not the caller still waits.
            if op.kind == "add":
                self._count += 1
                self._per_room[op.room] = self._per_room.get(op.room, 0) + 1
            elif op.kind == "remove":
                assert isinstance(result, _Removed)
                for room, n in result.per_room.items():
                    self._count -= n
                    left = self._per_room.get(room, 0) - n
                    if left > 0:
                        self._per_room[room] = left
                    else:
                        self._per_room.pop(room, None)
                result = sum(result.per_room.values())
            if not op.future.done():
                op.future.set_result(result)
        self._kick()

    # -- the worker thread ----------------------------------------------------------------

    def _run_batch(self, batch: list[_Op]) -> list[object]:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [self._run_op(conn, op) for op in batch]
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            log.error("spool transaction of %d operations failed: %s", len(batch), exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error: StorageError = _translate(exc)
            results = [error] * len(batch)
        if batch[-1].kind == "close":  # the last call there is: close even after a failure
            conn.close()
        return results

    @staticmethod
    def _run_op(conn: sqlite3.Connection, op: _Op) -> object:
        if op.kind == "add":
            cursor = conn.execute(
                'INSERT INTO spool (room, "update") VALUES (?, ?)', (op.room, op.update)
            )
            return cursor.lastrowid
        if op.kind == "pending":
            rows = conn.execute(
                'SELECT seq, room, "update" FROM spool ORDER BY seq LIMIT ?', (op.number,)
            ).fetchall()
            return [_row(row) for row in rows]
        if op.kind == "of_room":
            rows = conn.execute(
                'SELECT seq, room, "update" FROM spool WHERE room = ? ORDER BY seq', (op.room,)
            ).fetchall()
            return [_row(row) for row in rows]
        if op.kind == "remove":
            rows = conn.execute(
                "SELECT room, count(*) FROM spool WHERE seq <= ? GROUP BY room", (op.number,)
            ).fetchall()
            conn.execute("DELETE FROM spool WHERE seq <= ?", (op.number,))
            return _Removed({str(room): int(n) for room, n in rows})
        return None


__all__ = ["Spool", "SpooledUpdate"]
