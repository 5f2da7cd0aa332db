"""The audit pipeline (server/identity/audit.py): batching, retries, conflicts, the bound, the
tally.

The store tests run on both relational backends (the ``relational`` fixture: SQLite and a
throwaway PostgreSQL). The outage test starts a PostgreSQL of its own, stops it for 30 s
while entries keep coming, starts it again, and checks that nothing was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from persistence.errors import StorageUnavailable
from persistence.relational import (
    AccessQuery,
    AuditEntry,
    AuditQuery,
    CursorPage,
    DataAccessEntry,
    NewUser,
    User,
    migrate,
    open_relational,
)
from persistence.relational.engine import RelationalOptions
from persistence.relational.ports import AuditStore
from server.identity.audit import AuditContext, AuditTrail, EditTally
from tests.services.postgres import (
    ROOT_PREFIX,
    START_TIMEOUT,
    Relational,
    ThrowawayPostgres,
    _free_port,
    _os_user,
    _pg_bin,
)

WAIT = 10.0  # seconds any single wait in these tests may take before it is a failure
AUDIT_LOGGER = "server.identity.audit"


class ScriptedStore:
    """An AuditStore around another one: counts the calls, fails as told.

    ``unavailable`` calls raise StorageUnavailable before the inner store is reached (all of
    them when ``inner`` is None). ``changed`` is set after every successful call.
    """

    def __init__(self, inner: AuditStore | None, *, unavailable: int = 0) -> None:
        self.inner = inner
        self.unavailable = unavailable
        self.append_calls = 0
        self.access_calls = 0
        self.append_sizes: list[int] = []
        self.access_sizes: list[int] = []
        self.appended: list[AuditEntry] = []
        self.changed = asyncio.Event()
        self.first_failure = asyncio.Event()

    def _gate(self) -> AuditStore:
        if self.inner is None or self.unavailable > 0:
            self.unavailable -= 1
            self.first_failure.set()
            raise StorageUnavailable("scripted outage")
        return self.inner

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        self.append_calls += 1
        await self._gate().append(entries)
        self.append_sizes.append(len(entries))
        self.appended.extend(entries)
        self.changed.set()

    async def append_access(
        self, entries: Sequence[DataAccessEntry], *, batch_size: int = 500
    ) -> int:
        self.access_calls += 1
        written = await self._gate().append_access(entries, batch_size=batch_size)
        self.access_sizes.append(len(entries))
        self.changed.set()
        return written

    async def query(self, query: AuditQuery) -> CursorPage[AuditEntry]:
        assert self.inner is not None
        return await self.inner.query(query)

    async def query_access(self, query: AccessQuery) -> CursorPage[DataAccessEntry]:
        assert self.inner is not None
        return await self.inner.query_access(query)

    async def wait_for(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:
        """Wait until ``condition()`` holds, re-checking after each successful write."""
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


async def add_user(relational: Relational, name: str = "ana") -> User:
    return await relational.stores.users.add(NewUser(f"{name}@example.com", name, "analyst"))


def entries_of(user: User, count: int, action: str = "update") -> list[AuditEntry]:
    return [
        AuditEntry(user.id, action, "business_document", f"doc-{n}", changes={"n": n})
        for n in range(count)
    ]


async def stored_audit(
    store: AuditStore, *, user_id: uuid.UUID | None = None, action: str | None = None
) -> list[AuditEntry]:
    """Every audit row matching the filters, across pages."""
    rows: list[AuditEntry] = []
    cursor: str | None = None
    while True:
        query = AuditQuery(user_id=user_id, action=action, limit=200, cursor=cursor)
        page = await store.query(query)
        rows.extend(page.items)
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


async def stored_access(store: AuditStore, user_id: uuid.UUID) -> list[DataAccessEntry]:
    rows: list[DataAccessEntry] = []
    cursor: str | None = None
    while True:
        page = await store.query_access(AccessQuery(user_id=user_id, limit=200, cursor=cursor))
        rows.extend(page.items)
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == AUDIT_LOGGER and record.levelno == level
    ]


# -- batching on the real backends -----------------------------------------------------------


async def test_records_are_stored_in_few_transactions(relational: Relational) -> None:
    user = await add_user(relational)
    store = ScriptedStore(relational.stores.audit)
    entries = entries_of(user, 2000)
    async with AuditTrail(store, batch_size=500) as trail:
        for entry in entries:
            trail.record(entry)
        await asyncio.wait_for(trail.flush(), WAIT)
        assert store.append_sizes == [500, 500, 500, 500]
        stats = trail.stats()
        assert stats["written"] == 2000
        assert stats["queued"] == 0
    stored = await stored_audit(relational.stores.audit, user_id=user.id)
    assert {row.id for row in stored} == {entry.id for entry in entries}
    assert len(stored) == 2000
    sample = next(row for row in stored if row.id == entries[7].id)
    assert sample.changes == {"n": 7}
    assert sample.resource_id == "doc-7"


async def test_entries_arriving_during_writes_share_transactions(relational: Relational) -> None:
    """A steady stream (a few entries per loop turn) is not written one row per transaction."""
    user = await add_user(relational)
    store = ScriptedStore(relational.stores.audit)
    entries = entries_of(user, 1000)
    async with AuditTrail(store, batch_size=200, flush_interval=0.2) as trail:
        for start in range(0, len(entries), 5):
            for entry in entries[start : start + 5]:
                trail.record(entry)
            await asyncio.sleep(0)  # let the writer run between arrivals
        await asyncio.wait_for(trail.flush(), WAIT)
    assert sum(store.append_sizes) == 1000
    # 200 loop turns of arrivals; at most one partial batch per flush_interval, plus full ones.
    assert store.append_calls <= 20, store.append_sizes
    stored = await stored_audit(relational.stores.audit, user_id=user.id)
    assert {row.id for row in stored} == {entry.id for entry in entries}


async def test_an_idle_writer_writes_at_once_then_coalesces(relational: Relational) -> None:
    user = await add_user(relational)
    store = ScriptedStore(relational.stores.audit)
    entries = entries_of(user, 16)
    async with AuditTrail(store, batch_size=10, flush_interval=60) as trail:
        trail.record(entries[0])
        # No flush: an idle writer does not wait for the interval.
        await store.wait_for(lambda: store.append_sizes == [1])
        for entry in entries[1:6]:
            trail.record(entry)
            await asyncio.sleep(0)
        assert store.append_sizes == [1]  # within the interval: they wait to share a write
        await asyncio.wait_for(trail.flush(), WAIT)
        assert store.append_sizes == [1, 5]
        for entry in entries[6:16]:
            trail.record(entry)
        # A full batch is written without waiting for the interval, and without a flush.
        await store.wait_for(lambda: store.append_sizes == [1, 5, 10])
    stored = await stored_audit(relational.stores.audit, user_id=user.id)
    assert len(stored) == 16


async def test_access_entries_are_stored_in_batches(relational: Relational) -> None:
    user = await add_user(relational)
    store = ScriptedStore(relational.stores.audit)
    entries = [
        DataAccessEntry(user.id, f"doc-{n % 7}", "join", "confidential" if n % 2 else None)
        for n in range(1200)
    ]
    async with AuditTrail(store, batch_size=500) as trail:
        for entry in entries:
            trail.access(entry)
        await asyncio.wait_for(trail.flush(), WAIT)
        assert trail.stats()["access_written"] == 1200
    assert store.access_sizes == [500, 500, 200]
    assert store.append_calls == 0
    stored = await stored_access(relational.stores.audit, user.id)
    assert {row.id for row in stored} == {entry.id for entry in entries}
    by_id = {row.id: row for row in stored}
    assert by_id[entries[1].id].data_sensitivity == "confidential"
    assert by_id[entries[2].id].data_sensitivity is None


async def test_aclose_writes_what_is_queued_and_later_records_are_dropped(
    relational: Relational, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    user = await add_user(relational)
    trail = AuditTrail(relational.stores.audit, flush_interval=60)
    await trail.start()
    entries = entries_of(user, 300)
    for entry in entries:
        trail.record(entry)
    trail.access(DataAccessEntry(user.id, "plan", "read"))
    await asyncio.wait_for(trail.aclose(), WAIT)  # no flush: closing writes everything
    late = AuditEntry(user.id, "delete", "business_document", "late")
    trail.record(late)  # must not raise
    trail.access(DataAccessEntry(user.id, "plan", "export"))
    stats = trail.stats()
    assert stats["written"] == 300
    assert stats["access_written"] == 1
    assert stats["dropped"] == 2
    assert stats["unwritten"] == 0
    stored = await stored_audit(relational.stores.audit, user_id=user.id)
    assert {row.id for row in stored} == {entry.id for entry in entries}
    assert len(await stored_access(relational.stores.audit, user.id)) == 1
    closed_lines = [m for m in messages(caplog, logging.ERROR) if "closed" in m]
    assert len(closed_lines) == 1  # one line, not one per dropped entry
    await trail.aclose()  # idempotent


# -- failures --------------------------------------------------------------------------------


async def test_unavailable_store_is_retried_until_it_works(
    relational: Relational, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    user = await add_user(relational)
    store = ScriptedStore(relational.stores.audit, unavailable=4)
    entries = entries_of(user, 40)
    accesses = [DataAccessEntry(user.id, "plan", "read") for _ in range(3)]
    async with AuditTrail(store, max_backoff=0.2) as trail:
        for entry in entries:
            trail.record(entry)
        for access in accesses:
            trail.access(access)
        await asyncio.wait_for(trail.flush(), WAIT)
        stats = trail.stats()
    assert stats["retries"] == 4
    assert stats["written"] == 40
    assert stats["access_written"] == 3
    assert stats["outage_seconds"] == 0
    assert stats["last_error"] == "StorageUnavailable: scripted outage"
    stored = await stored_audit(relational.stores.audit, user_id=user.id)
    assert {row.id for row in stored} == {entry.id for entry in entries}
    assert len(await stored_access(relational.stores.audit, user.id)) == 3
    # One line when the outage starts, one when writes resume: not one per retry.
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 1
    assert "unavailable" in warnings[0]
    resumed = [m for m in messages(caplog, logging.INFO) if "back after" in m]
    assert len(resumed) == 1


async def test_a_conflicting_entry_is_rejected_alone(
    relational: Relational, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    user = await add_user(relational)
    store = ScriptedStore(relational.stores.audit)
    entries = entries_of(user, 50)
    stranger = uuid.uuid4()  # not a stored user: the foreign key refuses the row
    entries[17] = AuditEntry(stranger, "permission_change", "business_document", "poisoned")
    async with AuditTrail(store, batch_size=500) as trail:
        for entry in entries:
            trail.record(entry)
        await asyncio.wait_for(trail.flush(), WAIT)
        stats = trail.stats()
    assert stats["rejected"] == 1
    assert stats["written"] == 49
    assert stats["retries"] == 0
    assert store.append_calls == 1 + 50  # the batch, then each entry alone
    stored = await stored_audit(relational.stores.audit)
    assert {row.id for row in stored} == {e.id for e in entries if e.user_id == user.id}
    assert len(stored) == 49
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1
    assert "permission_change business_document/poisoned" in errors[0]
    assert str(stranger) in errors[0]


async def test_the_queue_is_bounded_and_aclose_gives_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    store = ScriptedStore(None)  # always unavailable
    trail = AuditTrail(store, max_queued=10, max_backoff=0.05)
    await trail.start()
    user_id = uuid.uuid4()
    entries = [AuditEntry(user_id, "update", "business_document", f"d{n}") for n in range(25)]
    for entry in entries[:10]:
        trail.record(entry)
    assert trail.stats()["dropped"] == 0
    trail.record(entries[10])
    assert trail.stats()["dropped"] == 1
    assert trail.stats()["queued"] == 10
    await asyncio.wait_for(store.first_failure.wait(), WAIT)
    for entry in entries[11:]:
        trail.record(entry)
    trail.access(DataAccessEntry(user_id, "plan", "join"))
    assert trail.stats()["dropped"] == 1 + 14 + 1
    full_lines = [m for m in messages(caplog, logging.ERROR) if "full" in m]
    assert len(full_lines) == 1  # once for the episode, not per entry
    waiting = asyncio.create_task(trail.flush())
    await asyncio.sleep(0)
    assert not waiting.done()

    await asyncio.wait_for(trail.aclose(timeout=0.3), WAIT)
    stats = trail.stats()
    assert stats["unwritten"] == 10
    assert stats["queued"] == 10
    assert stats["written"] == 0
    assert isinstance(stats["retries"], int)
    assert stats["retries"] >= 1
    assert stats["last_error"] == "StorageUnavailable: scripted outage"
    unwritten = [m for m in messages(caplog, logging.ERROR) if "unwritten" in m]
    assert len(unwritten) == 1
    assert "10 entries unwritten" in unwritten[0]
    with pytest.raises(RuntimeError, match="10 entries are not written"):
        await asyncio.wait_for(waiting, WAIT)
    with pytest.raises(RuntimeError):
        await trail.flush()


async def test_flush_without_a_writer_fails_instead_of_hanging() -> None:
    trail = AuditTrail(ScriptedStore(None))
    await trail.flush()  # nothing queued: nothing to wait for
    trail.record(AuditEntry(uuid.uuid4(), "update", "business_document", "d"))
    with pytest.raises(RuntimeError, match="never started"):
        await trail.flush()
    await trail.aclose(timeout=0.05)
    assert trail.stats()["unwritten"] == 1


# -- the edit tally --------------------------------------------------------------------------


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_edit_tally_emits_one_row_per_user_and_section(relational: Relational) -> None:
    ana, bo = await add_user(relational, "ana"), await add_user(relational, "bo")
    clock = ManualClock()
    expected: dict[tuple[uuid.UUID, str], list[int]] = {}
    async with AuditTrail(relational.stores.audit) as trail:
        tally = EditTally(trail, window=5.0, clock=clock)
        for n in range(1000):
            user = (ana, bo)[n % 2]
            section = ("market", "risks")[(n // 2) % 2]
            inserted, deleted = n % 7, n % 3
            tally.count(
                user.id, "q3-plan", section, inserted=inserted, deleted=deleted, ip="192.0.2.9"
            )
            sums = expected.setdefault((user.id, section), [0, 0, 0])
            sums[0] += 1
            sums[1] += inserted
            sums[2] += deleted
        assert tally.emit_due() == 0  # the window is still open
        clock.now += 4.9
        assert tally.emit_due() == 0
        clock.now += 0.1
        assert tally.emit_due() == 4
        await asyncio.wait_for(trail.flush(), WAIT)
        clock.now += 60  # a window without edits emits nothing
        assert tally.emit_due() == 0
        await asyncio.wait_for(trail.flush(), WAIT)
        assert trail.stats()["written"] == 4
        await tally.aclose()
    rows = await stored_audit(relational.stores.audit, action="edit")
    assert len(rows) == 4
    got = {
        (row.user_id, row.changes["section"]): [
            row.changes["updates"],
            row.changes["inserted"],
            row.changes["deleted"],
        ]
        for row in rows
    }
    assert got == expected
    assert sum(sums[0] for sums in got.values()) == 1000
    for row in rows:
        assert row.resource_type == "business_document"
        assert row.resource_id == "q3-plan"
        assert row.ip_address == "192.0.2.9"
        first = datetime.fromisoformat(row.changes["first_at"])
        last = datetime.fromisoformat(row.changes["last_at"])
        assert first.utcoffset() is not None
        assert first <= last


async def test_edit_tally_task_emits_each_window_and_aclose_emits_the_rest(
    relational: Relational,
) -> None:
    user = await add_user(relational)
    store = ScriptedStore(relational.stores.audit)

    def edits() -> list[AuditEntry]:
        return [entry for entry in store.appended if entry.action == "edit"]

    async with AuditTrail(store) as trail:
        tally = EditTally(trail, window=0.05)
        await tally.start()
        for _ in range(3):
            tally.count(user.id, "memo", None, inserted=2, deleted=0)
        await store.wait_for(lambda: len(edits()) == 1)
        assert edits()[0].changes["updates"] == 3
        assert edits()[0].changes["section"] is None
        tally.count(user.id, "memo", "intro", inserted=0, deleted=4, user_agent="ua/1")
        tally.count(user.id, "memo", "intro", inserted=1, deleted=0)
        await tally.aclose()  # emits the open window at once
        tally.count(user.id, "memo", "intro", inserted=1, deleted=0)  # ignored after close
        await asyncio.wait_for(trail.flush(), WAIT)
        assert tally.stats() == {"tally_pending": 0, "tally_emitted": 2}
    rows = await stored_audit(relational.stores.audit, action="edit")
    assert len(rows) == 2
    intro = next(row for row in rows if row.changes["section"] == "intro")
    assert intro.changes["updates"] == 2
    assert (intro.changes["inserted"], intro.changes["deleted"]) == (1, 4)
    assert intro.user_agent == "ua/1"


# -- request context -------------------------------------------------------------------------


def test_audit_context_builds_success_and_failure_entries() -> None:
    user_id = uuid.uuid4()
    context = AuditContext(user_id, "2001:0db8::0001", "agent/" + "x" * 600)
    ok = context.entry("update", "business_document", "plan", {"title": "New"})
    assert (ok.status, ok.error_message) == ("success", None)
    assert ok.ip_address == "2001:db8::1"
    assert ok.user_agent is not None
    assert len(ok.user_agent) == 500
    failed = context.entry("delete", "business_document", "plan", error="not allowed")
    assert (failed.status, failed.error_message) == ("failure", "not allowed")
    assert failed.user_id == user_id
    assert AuditContext(user_id, "not an address").ip is None
    access = context.access("plan", "export", "confidential")
    assert (access.user_id, access.access_type, access.data_sensitivity) == (
        user_id,
        "export",
        "confidential",
    )


# -- a real outage ---------------------------------------------------------------------------


class RestartablePostgres(ThrowawayPostgres):
    """The throwaway server of tests/services/postgres.py, stoppable and startable again."""

    def options(self) -> str:
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )

    def stop_fast(self) -> None:
        self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")

    def start_again(self) -> None:
        self._run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-w", "-t", str(int(START_TIMEOUT)),
            "-l", str(self.root / "server.log"), "-o", self.options(),
        )  # fmt: skip


class Recorder:
    """Records an audit entry every ``period`` seconds until stopped; keeps every id."""

    def __init__(self, trail: AuditTrail, user_id: uuid.UUID, period: float = 0.01) -> None:
        self.trail = trail
        self.user_id = user_id
        self.period = period
        self.ids: list[uuid.UUID] = []
        self._milestones: list[tuple[int, asyncio.Event]] = []
        self._stop = asyncio.Event()

    def after(self, more: int) -> asyncio.Event:
        """An event set once ``more`` further entries have been recorded."""
        event = asyncio.Event()
        self._milestones.append((len(self.ids) + more, event))
        return event

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            entry = AuditEntry(
                self.user_id, "update", "business_document", "outage", {"n": len(self.ids)}
            )
            self.trail.record(entry)
            self.ids.append(entry.id)
            for target, event in self._milestones:
                if len(self.ids) >= target:
                    event.set()
            await asyncio.sleep(self.period)  # the pace of the load, not a synchronisation


@pytest.mark.slow
async def test_nothing_is_lost_when_postgres_is_down_for_30_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    # A server of this test's own: stopping the session's shared one would break the others.
    root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
    server = RestartablePostgres(_pg_bin(), root, _free_port(), _os_user())
    try:
        await asyncio.to_thread(server.start)
        await migrate(server.url)
        options = RelationalOptions(
            connect_timeout=1.0, statement_timeout=2.0, pool_timeout=2.0, retries=0
        )
        async with await open_relational(server.url, options=options) as stores:
            user = await stores.users.add(NewUser("ops@example.com", "Ops", "admin"))
            trail = AuditTrail(stores.audit, max_backoff=2.0)
            await trail.start()
            recorder = Recorder(trail, user.id)
            recording = asyncio.create_task(recorder.run())
            try:
                await asyncio.wait_for(recorder.after(100).wait(), WAIT)
                await asyncio.wait_for(trail.flush(), WAIT)
                written_before = trail.stats()["written"]
                assert isinstance(written_before, int)
                assert written_before >= 100

                await asyncio.to_thread(server.stop_fast)
                outage = recorder.after(3000)  # 30 s at 100 entries/s
                await asyncio.wait_for(outage.wait(), 60)
                during = trail.stats()
                assert isinstance(during["outage_seconds"], float)
                assert during["outage_seconds"] > 20
                assert isinstance(during["queued"], int)
                assert during["queued"] >= 3000
                assert during["dropped"] == 0

                await asyncio.to_thread(server.start_again)
                # Writes resume while entries keep coming.
                await asyncio.wait_for(recorder.after(100).wait(), WAIT)
                await asyncio.wait_for(trail.flush(), 30)
                assert trail.stats()["outage_seconds"] == 0
            finally:
                recorder.stop()
                await asyncio.wait_for(recording, WAIT)
                await trail.aclose(timeout=30)
            stats = trail.stats()
            assert stats["unwritten"] == 0
            assert stats["dropped"] == 0
            assert stats["rejected"] == 0
            assert isinstance(stats["retries"], int)
            assert stats["retries"] > 5
            stored = await stored_audit(stores.audit, user_id=user.id)
        assert len(recorder.ids) > 3200
        assert {row.id for row in stored} == set(recorder.ids)
        assert len(stored) == len(recorder.ids)  # idempotent retries: no duplicates
        assert len(messages(caplog, logging.WARNING)) == 1
        resumed = [m for m in messages(caplog, logging.INFO) if "back after" in m]
        assert len(resumed) == 1
    finally:
        with contextlib.suppress(RuntimeError):
            await asyncio.to_thread(server.stop)  # -m immediate, then the directory goes
        shutil.rmtree(root, ignore_errors=True)
