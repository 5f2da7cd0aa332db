"""Embedded adapter of :class:`persistence.rooms.ports.RoomStore` on one SQLite file (WAL mode).

One worker thread owns the connection. Calls are queued in order; whatever queues up while a
transaction is being committed goes into the next one (group commit), so the cost of an fsync
is shared by every update that arrived meanwhile instead of paid per keystroke.
``PRAGMA synchronous=FULL`` makes each commit durable before its futures resolve.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from persistence.errors import (
    StorageClosed,
    StorageConflict,
    StorageCorrupted,
    StorageError,
    StorageUnavailable,
)
from persistence.rooms.ports import StoredRoom

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS room_snapshots (
    room TEXT PRIMARY KEY,
    state BLOB NOT NULL,
    updated_at REAL NOT NULL DEFAULT (julianday('now'))
);
CREATE TABLE IF NOT EXISTS room_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS room_journal_room_seq ON room_journal (room, seq);
"""

OpKind = Literal["load", "append", "compact", "close"]


@dataclass(slots=True)
class _Op:
    kind: OpKind
    room: str
    payload: bytes | None
    future: asyncio.Future[object] = field(repr=False)


def _translate(exc: sqlite3.Error) -> StorageError:
    if isinstance(exc, sqlite3.IntegrityError):
        return StorageConflict(str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        return StorageUnavailable(str(exc))
    if isinstance(exc, sqlite3.DatabaseError):
        return StorageCorrupted(str(exc))
    return StorageUnavailable(str(exc))


class SqliteRoomStore:
    """Rooms in a SQLite file. Open with :meth:`open`; close with :meth:`aclose`."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._path = path
        self._loop = loop
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "collab-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._queue: list[_Op] = []
        self._in_flight = False
        self._closed = False
        self.commits = 0

    @classmethod
    async def open(cls, path: Path) -> SqliteRoomStore:
        """Open (creating if needed) the database file; raises StorageUnavailable."""
        store = cls(path, asyncio.get_running_loop())
        try:
            await store._loop.run_in_executor(store._executor, store._connect)
        except sqlite3.Error as exc:
            store._executor.shutdown(wait=False)
            raise _translate(exc) from exc
        except OSError as exc:
            store._executor.shutdown(wait=False)
            raise StorageUnavailable(f"cannot open {path}: {exc}") from exc
        return store

    def _connect(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        self._conn = conn

    async def __aenter__(self) -> SqliteRoomStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the port -------------------------------------------------------------------------

    async def load(self, room: str) -> StoredRoom:
        result = await self._submit("load", room, None)
        assert isinstance(result, StoredRoom)
        return result

    def append(self, room: str, update: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._submit("append", room, update)  # type: ignore[assignment]
        return future

    def compact(self, room: str, state: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self._submit("compact", room, state)  # type: ignore[assignment]
        return future

    async def aclose(self) -> None:
        if self._closed:
            return
        await self._submit("close", "", None)
        self._closed = True
        self._executor.shutdown(wait=True)

    # -- the queue ------------------------------------------------------------------------

    def _submit(self, kind: OpKind, room: str, payload: bytes | None) -> asyncio.Future[object]:
        if self._closed:
            raise StorageClosed("the room store is closed")
        future: asyncio.Future[object] = self._loop.create_future()
        self._queue.append(_Op(kind, room, payload, future))
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
            if op.future.done():
                continue
            if isinstance(result, BaseException):
                op.future.set_exception(result)
            else:
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
            log.error("sqlite transaction of %d operations failed: %s", len(batch), exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [_translate(exc)] * len(batch)
        if batch[-1].kind == "close":
            conn.close()
        return results

    def _run_op(self, conn: sqlite3.Connection, op: _Op) -> object:
        if op.kind == "append":
            conn.execute(
                "INSERT INTO room_journal (room, payload) VALUES (?, ?)", (op.room, op.payload)
            )
            return None
        if op.kind == "compact":
            conn.execute("DELETE FROM room_journal WHERE room = ?", (op.room,))
            conn.execute(
                "INSERT INTO room_snapshots (room, state) VALUES (?, ?) "
                "ON CONFLICT (room) DO UPDATE SET state = excluded.state, "
                "updated_at = excluded.updated_at",
                (op.room, op.payload),
            )
            return None
        if op.kind == "load":
            return self._load(conn, op.room)
        return None

    @staticmethod
    def _load(conn: sqlite3.Connection, room: str) -> StoredRoom:
        row = conn.execute("SELECT state FROM room_snapshots WHERE room = ?", (room,)).fetchone()
        journal = conn.execute(
            "SELECT payload FROM room_journal WHERE room = ? ORDER BY seq", (room,)
        ).fetchall()
        snapshot = row[0] if row is not None else None
        if snapshot is not None and not isinstance(snapshot, bytes):
            raise sqlite3.DatabaseError(f"snapshot of {room!r} is not a blob")
        return StoredRoom(snapshot, tuple(bytes(entry[0]) for entry in journal))
