"""A durable local spool of room updates on one SQLite file (WAL mode, ``synchronous=FULL``).

:class:`persistence.rooms.service.ServiceRoomStore` keeps here the updates it cannot append to
the change journal while Redis is unreachable, and moves them to the stream once it is back.
One table, ``spool (seq, room, update)``: ``seq`` orders every update ever added to the file
(it is never reused), so "oldest first" is "by seq".

The file is written through a :class:`~persistence.rooms.sqlite_writer.SqliteWriter`, as in
:mod:`persistence.rooms.sqlite`: one thread owns the connection, calls run in order and
whatever queues up while a transaction is being committed goes into the next one (group
commit), so concurrent ``add`` calls share one fsync. An ``add`` future resolves once
its transaction is committed with ``synchronous=FULL``: the update then survives ``kill -9``
of the process and a power cut.

The file belongs to one process at a time: the connection runs in exclusive locking mode, so
a second :meth:`Spool.open` of the same file fails with StorageUnavailable until the first
is closed (two drainers would race each other). Whatever is still in the file when it is
closed is there again when it is next opened.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import NamedTuple

from persistence.errors import StorageClosed
from persistence.rooms.sqlite_writer import SqliteWriter

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    room TEXT NOT NULL,
    "update" BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_room_seq ON spool (room, seq);
"""


class SpooledUpdate(NamedTuple):
    """One row of the spool: ``(seq, room, update)``."""

    seq: int
    room: str
    update: bytes


class Spool:
    """Room updates waiting in a SQLite file. Open with :meth:`open`; close with :meth:`aclose`.

    ``add`` returns a future at once (resolved with the update's seq once it is durable);
    ``pending``, ``of_room`` and ``remove_through`` are coroutines; ``count`` and ``holds``
    answer from memory (counted at open, kept up to date as transactions commit). Every
    failure of the file is a :class:`~persistence.errors.StorageError` (SQLite errors map
    as in :func:`persistence.rooms.sqlite_writer.translate`); calls after :meth:`aclose`
    raise StorageClosed.
    """

    def __init__(self, path: Path, writer: SqliteWriter, per_room: dict[str, int]) -> None:
        self._path = path
        self._writer = writer
        self._per_room = per_room
        self._count = sum(per_room.values())
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> Spool:
        """Open (creating if needed) the spool file; StorageUnavailable if it cannot be
        opened or another process holds it, StorageCorrupted if it is not a database."""
        writer, per_room = await SqliteWriter.open(path, _prepare, what="spool", exclusive=True)
        return cls(path, writer, per_room)

    async def __aenter__(self) -> Spool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the API --------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def commits(self) -> int:
        """Transactions committed so far (far fewer than the calls: group commit)."""
        return self._writer.commits

    def add(self, room: str, update: bytes) -> asyncio.Future[int]:
        """Queue ``update`` of ``room``; the future resolves with its seq once it is durable.
        ValueError at once for an empty room name or update."""
        if not room:
            raise ValueError("a spooled update needs a room name")
        if not update:
            raise ValueError("a spooled update must be non-empty bytes")
        self._check_open()

        def added(_seq: int) -> None:
            self._count += 1
            self._per_room[room] = self._per_room.get(room, 0) + 1

        return self._writer.submit(lambda conn: _add(conn, room, update), added)

    async def pending(self, limit: int) -> list[SpooledUpdate]:
        """Up to ``limit`` (>= 1) of the oldest updates, oldest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self._check_open()
        return await self._writer.submit(lambda conn: _pending(conn, limit))

    async def of_room(self, room: str) -> list[SpooledUpdate]:
        """Every update of ``room`` in the spool, oldest first."""
        self._check_open()
        return await self._writer.submit(lambda conn: _of_room(conn, room))

    async def remove_through(self, seq: int) -> int:
        """Delete every update with a seq up to ``seq``; returns how many were deleted."""
        self._check_open()
        removed = await self._writer.submit(lambda conn: _remove_through(conn, seq), self._removed)
        return sum(removed.values())

    def count(self) -> int:
        """How many updates the file holds (committed adds minus committed removals)."""
        return self._count

    def holds(self, room: str) -> bool:
        """Whether the file holds an update of ``room`` (committed, not yet removed)."""
        return room in self._per_room

    async def aclose(self) -> None:
        """Wait for the queued calls, then close the file. Idempotent."""
        self._closed = True
        await self._writer.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the spool is closed")

    def _removed(self, per_room: dict[str, int]) -> None:
        """The counts follow what is committed, whether or not the caller still waits."""
        for room, n in per_room.items():
            self._count -= n
            left = self._per_room.get(room, 0) - n
            if left > 0:
                self._per_room[room] = left
            else:
                self._per_room.pop(room, None)


# -- on the writer's thread ---------------------------------------------------------------


def _prepare(conn: sqlite3.Connection) -> dict[str, int]:
    """The schema, then the count of updates per room, in a transaction that takes the
    exclusive lock now rather than at the first add."""
    conn.executescript(_SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    rows = conn.execute("SELECT room, count(*) FROM spool GROUP BY room").fetchall()
    conn.execute("COMMIT")
    return {str(room): int(n) for room, n in rows}


def _row(row: tuple[object, ...]) -> SpooledUpdate:
    seq, room, update = row
    if not isinstance(seq, int) or not isinstance(room, str) or not isinstance(update, bytes):
        raise sqlite3.DatabaseError(f"spool row {seq!r} is malformed")
    return SpooledUpdate(seq, room, update)


def _add(conn: sqlite3.Connection, room: str, update: bytes) -> int:
    cursor = conn.execute('INSERT INTO spool (room, "update") VALUES (?, ?)', (room, update))
    seq = cursor.lastrowid
    assert seq is not None
    return seq


def _pending(conn: sqlite3.Connection, limit: int) -> list[SpooledUpdate]:
    rows = conn.execute(
        'SELECT seq, room, "update" FROM spool ORDER BY seq LIMIT ?', (limit,)
    ).fetchall()
    return [_row(row) for row in rows]


def _of_room(conn: sqlite3.Connection, room: str) -> list[SpooledUpdate]:
    rows = conn.execute(
        'SELECT seq, room, "update" FROM spool WHERE room = ? ORDER BY seq', (room,)
    ).fetchall()
    return [_row(row) for row in rows]


def _remove_through(conn: sqlite3.Connection, seq: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT room, count(*) FROM spool WHERE seq <= ? GROUP BY room", (seq,)
    ).fetchall()
    conn.execute("DELETE FROM spool WHERE seq <= ?", (seq,))
    return {str(room): int(n) for room, n in rows}


__all__ = ["Spool", "SpooledUpdate"]
