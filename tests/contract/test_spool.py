"""The local spool (:mod:`persistence.rooms.sqlite_spool`) on its own: durability, order, removal.

What the service-mode room store does with it (a Redis outage) is in
``test_service_store.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from persistence.errors import StorageClosed, StorageCorrupted, StorageUnavailable
from persistence.rooms.sqlite_spool import Spool, SpooledUpdate

pytestmark = pytest.mark.timeout(60)

WAIT = 20.0
ROOT = Path(__file__).resolve().parents[2]

# A child process that spools updates, reports them acknowledged, then dies by SIGKILL.
_CRASHING_WRITER = """
import asyncio, os, signal, sys
from pathlib import Path
sys.path.insert(0, os.getcwd())
from persistence.rooms.sqlite_spool import Spool

async def main() -> None:
    spool = await Spool.open(Path(sys.argv[1]))
    await asyncio.gather(*(spool.add(f"d/s{i % 3}", f"u{i}".encode()) for i in range(60)))
    print("acknowledged", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_added_updates_survive_a_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    async with await Spool.open(path) as spool:
        assert spool.count() == 0
        seqs = await asyncio.wait_for(
            asyncio.gather(*(spool.add(f"d/s{i % 2}", f"u{i}".encode()) for i in range(10))),
            WAIT,
        )
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 10
        assert spool.count() == 10
        assert spool.holds("d/s0")
        assert spool.holds("d/s1")
        assert not spool.holds("d")
    async with await Spool.open(path) as reopened:
        assert reopened.count() == 10
        assert reopened.holds("d/s0")
        assert reopened.holds("d/s1")
        rows = await reopened.pending(100)
        assert rows == [
            SpooledUpdate(seq, f"d/s{i % 2}", f"u{i}".encode()) for i, seq in enumerate(seqs)
        ]
        assert await reopened.of_room("d/s1") == [row for row in rows if row.room == "d/s1"]


async def test_acknowledged_updates_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _CRASHING_WRITER, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert child.returncode == -9, child.stderr
    assert child.stdout.strip() == "acknowledged"
    async with await Spool.open(path) as spool:  # the dead owner's lock is gone with it
        rows = await spool.pending(1000)
    assert [row.update for row in rows] == [f"u{i}".encode() for i in range(60)]
    assert [row.room for row in rows] == [f"d/s{i % 3}" for i in range(60)]


async def test_pending_pages_oldest_first(tmp_path: Path) -> None:
    async with await Spool.open(tmp_path / "spool.sqlite3") as spool:
        for i in range(7):  # one at a time: seven separate commits
            await asyncio.wait_for(spool.add("r", bytes([i + 1])), WAIT)
        first = await spool.pending(3)
        assert [row.update for row in first] == [b"\x01", b"\x02", b"\x03"]
        assert [row.update for row in await spool.pending(100)] == [
            bytes([i + 1]) for i in range(7)
        ]
        assert await spool.of_room("nobody") == []
        with pytest.raises(ValueError, match="limit"):
            await spool.pending(0)


async def test_remove_through_deletes_exactly_the_prefix(tmp_path: Path) -> None:
    async with await Spool.open(tmp_path / "spool.sqlite3") as spool:
        seqs = [await asyncio.wait_for(spool.add(room, b"x"), WAIT) for room in "aabca"]
        assert await spool.remove_through(seqs[2]) == 3  # a, a, b
        assert spool.count() == 2
        assert not spool.holds("b")
        assert spool.holds("a")
        assert spool.holds("c")
        assert [row.seq for row in await spool.pending(10)] == seqs[3:]
        assert await spool.remove_through(seqs[2]) == 0  # already gone: idempotent
        assert await spool.remove_through(seqs[-1]) == 2
        assert spool.count() == 0
        assert not spool.holds("a")
        # Seqs are never reused, even once the spool was empty.
        assert await asyncio.wait_for(spool.add("a", b"y"), WAIT) > seqs[-1]


async def test_concurrent_adds_share_commits(tmp_path: Path) -> None:
    async with await Spool.open(tmp_path / "spool.sqlite3") as spool:
        await asyncio.wait_for(
            asyncio.gather(*(spool.add("r", bytes([i % 250 + 1])) for i in range(200))), WAIT
        )
        assert spool.count() == 200
        assert spool.commits < 200


async def test_a_second_opener_is_refused_while_the_first_holds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    async with await Spool.open(path) as first:
        await asyncio.wait_for(first.add("r", b"x"), WAIT)
        with pytest.raises(StorageUnavailable):
            await Spool.open(path)
    async with await Spool.open(path) as second:
        assert second.count() == 1


async def test_bad_calls_and_calls_after_close(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path / "spool.sqlite3")
    with pytest.raises(ValueError, match="room name"):
        _ = spool.add("", b"x")
    with pytest.raises(ValueError, match="non-empty bytes"):
        _ = spool.add("r", b"")
    await spool.aclose()
    await spool.aclose()  # idempotent
    with pytest.raises(StorageClosed):
        _ = spool.add("r", b"x")
    with pytest.raises(StorageClosed):
        await spool.pending(1)


async def test_a_file_that_is_not_a_spool_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises((StorageCorrupted, StorageUnavailable)):
        await Spool.open(path)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageUnavailable):
        await Spool.open(blocker / "spool.sqlite3")
