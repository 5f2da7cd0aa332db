"""Embedded adapter of :class:`persistence.rooms.ports.RoomStore` on one SQLite file (WAL mode).

The file is written through a :class:`~persistence.rooms.sqlite_writer.SqliteWriter`: one
thread owns the connection, calls run in order, and whatever queues up while a transaction is
being committed goes into the next one (group commit), so the cost of an fsync is shared by
every update that arrived meanwhile instead of paid per keystroke. ``synchronous=FULL`` makes
each commit durable before its futures resolve. Loads read through a second connection
(:class:`~persistence.rooms.sqlite_writer.SqliteReader`), so that a join does not wait behind
the journal's fsyncs. SQLite errors map as in
:func:`persistence.rooms.sqlite_writer.translate`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from persistence.errors import StorageClosed
from persistence.latency import JOURNAL_COMMITS
from persistence.rooms.ports import StoredRoom
from persistence.rooms.sqlite_writer import SqliteReader, SqliteWriter

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


class SqliteRoomStore:
    """Rooms in a SQLite file. Open with :meth:`open`; close with :meth:`aclose`."""

    def __init__(self, writer: SqliteWriter, reader: SqliteReader) -> None:
        self._writer = writer
        self._reader = reader
        self._closed = False
        # Each room's last write not yet committed: a load waits for it (and no other).
        self._writing: dict[str, asyncio.Future[None]] = {}

    @classmethod
    async def open(cls, path: Path) -> SqliteRoomStore:
        """Open (creating if needed) the database file; StorageUnavailable if it cannot be
        opened, StorageCorrupted if it is not a database."""
        writer, _ = await SqliteWriter.open(
            path, _create_schema, what="sqlite", commit_latency=JOURNAL_COMMITS["sqlite"]
        )
        try:
            reader = await SqliteReader.open(path, what="sqlite")
        except BaseException:
            await writer.aclose()
            raise
        return cls(writer, reader)

    @property
    def commits(self) -> int:
        """Transactions committed so far (far fewer than the calls: group commit)."""
        return self._writer.commits

    async def __aenter__(self) -> SqliteRoomStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the port -------------------------------------------------------------------------

    async def load(self, room: str) -> StoredRoom:
        # On the reader's connection: a room loading (a join) does not queue behind the
        # journal's group commits, only behind the room's own writes issued before it.
        self._check_open()
        writing = self._writing.get(room)
        if writing is not None:
            await asyncio.wait([writing])  # its failure is its caller's; the file tells
        return await self._reader.read(lambda conn: _load(conn, room))

    def append(self, room: str, update: bytes) -> asyncio.Future[None]:
        self._check_open()
        return self._track(room, self._writer.submit(lambda conn: _append(conn, room, update)))

    def compact(self, room: str, state: bytes) -> asyncio.Future[None]:
        self._check_open()
        return self._track(room, self._writer.submit(lambda conn: _compact(conn, room, state)))

    def _track(self, room: str, future: asyncio.Future[None]) -> asyncio.Future[None]:
        self._writing[room] = future

        def done(finished: asyncio.Future[None]) -> None:
            if self._writing.get(room) is finished:
                del self._writing[room]

        future.add_done_callback(done)
        return future

    async def aclose(self) -> None:
        """Wait for the queued writes, then close the file. Idempotent."""
        self._closed = True
        try:
            await self._writer.aclose()
        finally:
            await self._reader.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("the room store is closed")


# -- on the writer's thread ---------------------------------------------------------------


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)


def _append(conn: sqlite3.Connection, room: str, update: bytes) -> None:
    conn.execute("INSERT INTO room_journal (room, payload) VALUES (?, ?)", (room, update))


def _compact(conn: sqlite3.Connection, room: str, state: bytes) -> None:
    conn.execute("DELETE FROM room_journal WHERE room = ?", (room,))
    conn.execute(
        "INSERT INTO room_snapshots (room, state) VALUES (?, ?) "
        "ON CONFLICT (room) DO UPDATE SET state = excluded.state, "
        "updated_at = excluded.updated_at",
        (room, state),
    )


def _load(conn: sqlite3.Connection, room: str) -> StoredRoom:
    row = conn.execute("SELECT state FROM room_snapshots WHERE room = ?", (room,)).fetchone()
    journal = conn.execute(
        "SELECT payload FROM room_journal WHERE room = ? ORDER BY seq", (room,)
    ).fetchall()
    snapshot = row[0] if row is not None else None
    if snapshot is not None and not isinstance(snapshot, bytes):
        raise sqlite3.DatabaseError(f"snapshot of {room!r} is not a blob")
    return StoredRoom(snapshot, tuple(bytes(entry[0]) for entry in journal))
