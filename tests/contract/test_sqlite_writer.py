"""The SQLite writer shared by the room store and the spool
(:mod:`persistence.rooms.sqlite_writer`): the guarantees of its docstring.

To put several calls in one transaction deterministically, a first call blocks the writer's
thread on a :class:`threading.Event`; what is submitted meanwhile goes into the next
transaction together.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from persistence.errors import StorageClosed, StorageConflict, StorageError, StorageUnavailable
from persistence.rooms.sqlite_writer import SqliteReader, SqliteWriter

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0


def _schema(conn: sqlite3.Connection) -> str:
    conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    return "ready"


def _insert(k: str, v: int) -> Callable[[sqlite3.Connection], int]:
    def work(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (k, v))
        return v

    return work


def _rows(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    return [(str(k), int(v)) for k, v in conn.execute("SELECT k, v FROM t ORDER BY k")]


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[SqliteWriter]:
    writer, prepared = await SqliteWriter.open(tmp_path / "w.sqlite3", _schema, what="test")
    assert prepared == "ready"
    yield writer
    await writer.aclose()


async def _hold(writer: SqliteWriter) -> tuple[threading.Event, asyncio.Future[None]]:
    """Block the writer's thread in a transaction of its own until the event is set."""
    entered, release = threading.Event(), threading.Event()

    def block(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(WAIT)

    held = writer.submit(block)
    assert await asyncio.to_thread(entered.wait, WAIT)
    return release, held


async def test_calls_queued_during_a_commit_share_the_next_transaction(
    writer: SqliteWriter,
) -> None:
    release, held = await _hold(writer)
    futures = [writer.submit(_insert(f"k{i:03}", i)) for i in range(100)]
    release.set()
    await asyncio.wait_for(held, WAIT)
    assert await asyncio.wait_for(asyncio.gather(*futures), WAIT) == list(range(100))
    assert writer.commits == 2
    rows = await asyncio.wait_for(writer.submit(_rows), WAIT)
    assert rows == [(f"k{i:03}", i) for i in range(100)]


async def test_a_failing_call_rolls_back_its_whole_transaction(writer: SqliteWriter) -> None:
    await asyncio.wait_for(writer.submit(_insert("taken", 0)), WAIT)
    release, held = await _hold(writer)
    before = writer.submit(_insert("a", 1))
    clash = writer.submit(_insert("taken", 2))
    after = writer.submit(_insert("b", 3))
    release.set()
    await asyncio.wait_for(held, WAIT)
    for future in (before, clash, after):
        with pytest.raises(StorageConflict):
            await asyncio.wait_for(future, WAIT)
    # The next transaction starts clean and sees none of the failed one.
    assert await asyncio.wait_for(writer.submit(_insert("c", 4)), WAIT) == 4
    assert await asyncio.wait_for(writer.submit(_rows), WAIT) == [("c", 4), ("taken", 0)]


async def test_an_exception_of_the_caller_rolls_back_and_the_writer_goes_on(
    writer: SqliteWriter,
) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('half', 1)")
        raise KeyError("a bug in the work function")

    with pytest.raises(KeyError):
        await asyncio.wait_for(writer.submit(broken), WAIT)
    assert await asyncio.wait_for(writer.submit(_insert("x", 5)), WAIT) == 5
    assert await asyncio.wait_for(writer.submit(_rows), WAIT) == [("x", 5)]


async def test_the_commit_hook_runs_even_when_the_caller_stopped_waiting(
    writer: SqliteWriter,
) -> None:
    seen: list[int] = []
    release, held = await _hold(writer)
    cancelled = writer.submit(_insert("k", 7), seen.append)
    cancelled.cancel()
    last = writer.submit(_rows)
    release.set()
    await asyncio.wait_for(held, WAIT)
    assert await asyncio.wait_for(last, WAIT) == [("k", 7)]
    assert seen == [7]


async def test_aclose_waits_for_queued_work_then_refuses_calls(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"
    writer, _ = await SqliteWriter.open(path, _schema, what="test")
    futures = [writer.submit(_insert(f"k{i}", i)) for i in range(20)]
    await asyncio.wait_for(writer.aclose(), WAIT)
    assert all(future.done() and future.result() == i for i, future in enumerate(futures))
    with pytest.raises(StorageClosed):
        _ = writer.submit(_rows)
    await writer.aclose()  # idempotent
    reopened, _ = await SqliteWriter.open(path, _schema, what="test")
    assert len(await asyncio.wait_for(reopened.submit(_rows), WAIT)) == 20
    await reopened.aclose()


async def test_an_exclusive_file_cannot_be_opened_twice(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite3"

    def lock(conn: sqlite3.Connection) -> None:
        _schema(conn)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")

    first, _ = await SqliteWriter.open(path, lock, what="test", exclusive=True)
    with pytest.raises(StorageUnavailable):
        await SqliteWriter.open(path, lock, what="test", exclusive=True)
    await first.aclose()
    second, _ = await SqliteWriter.open(path, lock, what="test", exclusive=True)
    await second.aclose()


async def test_a_reader_reads_committed_rows_while_the_writer_is_busy(tmp_path: Path) -> None:
    """The room store's loads: a read on the reader's connection answers while the writer's
    thread is held in a transaction, and sees what was committed before it, not the held
    transaction's rows."""
    path = tmp_path / "w.sqlite3"
    writer, _ = await SqliteWriter.open(path, _schema, what="test")
    reader = await SqliteReader.open(path, what="test")
    try:
        await writer.submit(_insert("a", 1))
        gate = threading.Event()

        def held(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO t (k, v) VALUES ('b', 2)")
            gate.wait(WAIT)

        blocked = writer.submit(held)
        rows = await asyncio.wait_for(reader.read(_rows), WAIT)
        assert rows == [("a", 1)]
        assert not blocked.done()
        gate.set()
        await blocked
        assert await reader.read(_rows) == [("a", 1), ("b", 2)]
        with pytest.raises(StorageError):  # the reader's connection is read-only
            await reader.read(_insert("c", 3))
        assert await reader.read(_rows) == [("a", 1), ("b", 2)]
    finally:
        gate.set()
        await reader.aclose()
        await writer.aclose()
    with pytest.raises(StorageClosed):
        await reader.read(_rows)
