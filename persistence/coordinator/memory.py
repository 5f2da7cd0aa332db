"""In-process adapter of :class:`persistence.coordinator.ports.Coordinator` (the embedded default).

Everything lives in dictionaries of one process and nothing survives it. Every operation
runs without awaiting in the middle, so each is atomic for the tasks of the event loop.
TTLs are deadlines on an injectable clock (``clock``, Unix seconds; ``time.time`` by
default): tests move a fake clock instead of sleeping. Values are stored as the JSON the
Redis adapter would store, so both adapters accept and return exactly the same things.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from crdt.ids import check_document_id, check_section_id
from persistence.coordinator.memory_kv import (
    Clock,
    Expiring,
    MemoryCache,
    MemoryFlags,
    MemoryNotifications,
    MemoryRateLimits,
    MemorySessions,
    MemoryStats,
    Shared,
)
from persistence.coordinator.values import (
    FIRST_ENTRY_ID,
    MAX_CURSOR_BYTES,
    Cursor,
    DurabilityReport,
    JournalEntry,
    Lock,
    Presence,
    check_connection,
    check_count,
    check_join,
    check_section,
    check_timeout,
    check_token,
    check_ttl,
    check_update,
    decode_json,
    encode_json,
    parse_entry_id,
)
from persistence.errors import DocumentFrozen


def _presence_order(entry: Presence) -> tuple[str, str, str, str]:
    return (entry.section_id or "", entry.user_id, entry.node_id, entry.connection_id)


# -- presence and cursors --------------------------------------------------------------------


class MemoryPresence:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self.entries: dict[str, dict[tuple[str, str], Presence]] = {}
        self.cursors: dict[str, dict[tuple[str | None, str], Cursor]] = {}
        self._nodes: dict[str, float] = {}
        self._node_docs: dict[str, set[str]] = {}

    def alive(self, node_id: str, now: float) -> bool:
        return self._nodes.get(node_id, -1.0) > now

    def _revive(self, node_id: str, now: float, ttl: float) -> bool:
        was_alive = self.alive(node_id, now)
        if not was_alive:
            self._remove_node(node_id)
        self._nodes[node_id] = now + ttl
        return was_alive

    def _remove_node(self, node_id: str) -> int:
        removed = 0
        for document_id in self._node_docs.pop(node_id, set()):
            entries = self.entries.get(document_id, {})
            for key in [key for key in entries if key[0] == node_id]:
                del entries[key]
                removed += 1
            self.drop_orphan_cursors(document_id)
        return removed

    def drop_orphan_cursors(self, document_id: str) -> None:
        cursors = self.cursors.get(document_id)
        if not cursors:
            return
        entries = self.entries.get(document_id, {})
        pairs = {(entry.section_id, entry.user_id) for entry in entries.values()}
        for pair in [pair for pair in cursors if pair not in pairs]:
            del cursors[pair]

    def purge(self, document_id: str, now: float) -> dict[tuple[str, str], Presence]:
        """Drop the entries of dead nodes (and orphaned cursors); the live entries."""
        entries = self.entries.get(document_id, {})
        for key in [key for key in entries if not self.alive(key[0], now)]:
            del entries[key]
        self.drop_orphan_cursors(document_id)
        return entries

    async def join(
        self,
        document_id: str,
        section_id: str | None,
        user_id: str,
        node_id: str,
        connection_id: str,
        ttl: float,
    ) -> Presence:
        ttl = check_join(document_id, section_id, user_id, node_id, connection_id, ttl)
        now = self._shared.now()
        self._revive(node_id, now, ttl)
        entry = Presence(document_id, section_id, user_id, node_id, connection_id, now)
        entries = self.entries.setdefault(document_id, {})
        replaced = entries.get((node_id, connection_id))
        entries[node_id, connection_id] = entry
        self._node_docs.setdefault(node_id, set()).add(document_id)
        if replaced is not None:  # only a moved connection can leave a cursor orphaned
            self.drop_orphan_cursors(document_id)
        return entry

    async def leave(self, document_id: str, node_id: str, connection_id: str) -> bool:
        check_document_id(document_id)
        check_connection(node_id, connection_id)
        self._shared.now()
        entries = self.entries.get(document_id, {})
        removed = entries.pop((node_id, connection_id), None) is not None
        if not any(key[0] == node_id for key in entries):
            self._node_docs.get(node_id, set()).discard(document_id)
        self.drop_orphan_cursors(document_id)
        return removed

    async def heartbeat(self, node_id: str, ttl: float) -> bool:
        check_token(node_id, "node id")
        ttl = check_ttl(ttl)
        return self._revive(node_id, self._shared.now(), ttl)

    async def members(self, document_id: str) -> list[Presence]:
        check_document_id(document_id)
        entries = self.purge(document_id, self._shared.now())
        return sorted(entries.values(), key=_presence_order)

    async def drop_node(self, node_id: str) -> int:
        check_token(node_id, "node id")
        self._shared.now()
        self._nodes.pop(node_id, None)
        return self._remove_node(node_id)


class MemoryCursors:
    def __init__(self, shared: Shared, presence: MemoryPresence) -> None:
        self._shared = shared
        self._presence = presence

    def _check(self, document_id: str, section_id: str | None, user_id: str) -> float:
        check_document_id(document_id)
        check_section(section_id)
        check_token(user_id, "user id")
        return self._shared.now()

    async def set(self, document_id: str, section_id: str | None, user_id: str, value: Any) -> bool:
        data = encode_json(value, "cursor", MAX_CURSOR_BYTES, object_only=False)
        now = self._check(document_id, section_id, user_id)
        entries = self._presence.purge(document_id, now)
        if not any((e.section_id, e.user_id) == (section_id, user_id) for e in entries.values()):
            return False
        cursor = Cursor(document_id, section_id, user_id, data, now)
        self._presence.cursors.setdefault(document_id, {})[section_id, user_id] = cursor
        return True

    @staticmethod
    def _decoded(cursor: Cursor) -> Cursor:
        return replace(cursor, value=decode_json(cursor.value, "cursor"))

    async def get(self, document_id: str, section_id: str | None, user_id: str) -> Cursor | None:
        now = self._check(document_id, section_id, user_id)
        self._presence.purge(document_id, now)
        cursor = self._presence.cursors.get(document_id, {}).get((section_id, user_id))
        return None if cursor is None else self._decoded(cursor)

    async def remove(self, document_id: str, section_id: str | None, user_id: str) -> bool:
        self._check(document_id, section_id, user_id)
        return (
            self._presence.cursors.get(document_id, {}).pop((section_id, user_id), None) is not None
        )

    async def of_document(self, document_id: str) -> list[Cursor]:
        check_document_id(document_id)
        self._presence.purge(document_id, self._shared.now())
        cursors = self._presence.cursors.get(document_id, {}).values()
        ordered = sorted(cursors, key=lambda cursor: (cursor.section_id or "", cursor.user_id))
        return [self._decoded(cursor) for cursor in ordered]


# -- locks -----------------------------------------------------------------------------------


class MemoryLocks:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._locks = Expiring()
        self._fences: dict[tuple[str, str], int] = {}

    def _check(self, document_id: str, section_id: str, *owner: str) -> float:
        check_document_id(document_id)
        check_section_id(section_id)
        for name in owner:
            check_token(name, "lock owner")
        return self._shared.now()

    async def acquire(
        self, document_id: str, section_id: str, owner: str, ttl: float
    ) -> Lock | None:
        ttl = check_ttl(ttl)
        now = self._check(document_id, section_id, owner)
        key = (document_id, section_id)
        current: Lock | None = self._locks.get(key, now)
        if current is not None and current.owner != owner:
            return None
        if current is None:
            self._fences[key] = token = self._fences.get(key, 0) + 1
            current = Lock(document_id, section_id, owner, token, now, now + ttl)
        lock = replace(current, expires_at=now + ttl)
        self._locks.put(key, lock, lock.expires_at, now)
        return lock

    async def renew(self, document_id: str, section_id: str, owner: str, ttl: float) -> Lock | None:
        ttl = check_ttl(ttl)
        now = self._check(document_id, section_id, owner)
        current: Lock | None = self._locks.get((document_id, section_id), now)
        if current is None or current.owner != owner:
            return None
        lock = replace(current, expires_at=now + ttl)
        self._locks.put((document_id, section_id), lock, lock.expires_at, now)
        return lock

    async def release(
        self, document_id: str, section_id: str, owner: str, *, force: bool = False
    ) -> bool:
        now = self._check(document_id, section_id, owner)
        current: Lock | None = self._locks.get((document_id, section_id), now)
        if current is None or (current.owner != owner and not force):
            return False
        return self._locks.delete((document_id, section_id), now)

    async def holder(self, document_id: str, section_id: str) -> Lock | None:
        now = self._check(document_id, section_id)
        lock: Lock | None = self._locks.get((document_id, section_id), now)
        return lock

    async def held(self, document_id: str) -> list[Lock]:
        check_document_id(document_id)
        now = self._shared.now()
        keys = sorted(key for key in list(self._locks.items) if key[0] == document_id)
        return [lock for key in keys if (lock := self._locks.get(key, now)) is not None]


# -- the change journal ----------------------------------------------------------------------


@dataclass
class _Stream:
    entries: list[tuple[tuple[int, int], JournalEntry]] = field(default_factory=list)
    last: tuple[int, int] = (0, 0)


class MemoryJournal:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._streams: dict[str, _Stream] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._frozen: set[str] = set()

    async def freeze(self, document_id: str) -> None:
        self._frozen.add(check_document_id(document_id))

    async def thaw(self, document_id: str) -> None:
        self._frozen.discard(check_document_id(document_id))

    async def append(
        self,
        document_id: str,
        section_id: str | None,
        update: bytes,
        *,
        origin: str | None = None,
        force: bool = False,
    ) -> str:
        check_document_id(document_id)
        check_section(section_id)
        check_update(update)
        if origin is not None:
            check_token(origin, "origin")
        if document_id in self._frozen and not force:
            raise DocumentFrozen(f"document {document_id} is frozen (in review)")
        now_ms = int(self._shared.now() * 1000)
        stream = self._streams.setdefault(document_id, _Stream())
        # Like Redis: ids follow the clock but never go backwards.
        key = (now_ms, 0) if now_ms > stream.last[0] else (stream.last[0], stream.last[1] + 1)
        stream.last = key
        entry = JournalEntry(f"{key[0]}-{key[1]}", document_id, section_id, update, origin)
        stream.entries.append((key, entry))
        self.wake()
        return entry.id

    def wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def _after(self, document_id: str, after: tuple[int, int], count: int) -> list[JournalEntry]:
        stream = self._streams.get(document_id)
        if stream is None:
            return []
        return [entry for key, entry in stream.entries if key > after][:count]

    async def read(
        self, document_id: str, after_id: str | None = None, count: int = 100
    ) -> list[JournalEntry]:
        check_document_id(document_id)
        after = (-1, -1) if after_id is None else parse_entry_id(after_id)
        count = check_count(count)
        self._shared.now()
        return self._after(document_id, after, count)

    async def last_id(self, document_id: str) -> str:
        check_document_id(document_id)
        self._shared.now()
        stream = self._streams.get(document_id)
        return stream.entries[-1][1].id if stream and stream.entries else FIRST_ENTRY_ID

    def wake_group(self, document_id: str) -> int | None:
        """No wake groups: one tail waits on every document."""
        check_document_id(document_id)
        return None

    async def wake_position(self, group: int) -> str:
        raise ValueError("no wake groups in memory: tail the documents instead")

    async def woken(self, group: int, after: str, *, timeout: float) -> tuple[str, list[str]]:
        raise ValueError("no wake groups in memory: tail the documents instead")

    async def tail(
        self, positions: Mapping[str, str], *, timeout: float, count: int = 100
    ) -> list[JournalEntry]:
        after = {check_document_id(doc): parse_entry_id(pos) for doc, pos in positions.items()}
        timeout = check_timeout(timeout)
        count = check_count(count)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._shared.now()
            found = [e for doc, pos in after.items() for e in self._after(doc, pos, count)]
            remaining = deadline - loop.time()
            if found or remaining <= 0:
                return found
            waiter = loop.create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                self._waiters.discard(waiter)

    async def trim(self, document_id: str, up_to_id: str) -> int:
        check_document_id(document_id)
        up_to = parse_entry_id(up_to_id)
        self._shared.now()
        stream = self._streams.get(document_id)
        if stream is None:
            return 0
        kept = [(key, entry) for key, entry in stream.entries if key > up_to]
        removed = len(stream.entries) - len(kept)
        stream.entries = kept
        return removed


class MemoryCoordinator:
    """The coordinator of one process. ``clock`` gives Unix seconds (inject a fake in tests)."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._shared = Shared(clock)
        self.presence = MemoryPresence(self._shared)
        self.cursors = MemoryCursors(self._shared, self.presence)
        self.locks = MemoryLocks(self._shared)
        self.journal = MemoryJournal(self._shared)
        self.signals = MemoryJournal(self._shared)
        self.cache = MemoryCache(self._shared)
        self.sessions = MemorySessions(self._shared)
        self.flags = MemoryFlags(self._shared)
        self.rate_limits = MemoryRateLimits(self._shared)
        self.stats = MemoryStats(self._shared)
        self.notifications = MemoryNotifications(self._shared)

    async def durability(self) -> DurabilityReport:
        self._shared.now()
        return DurabilityReport("memory", False, None, "in-process: nothing outlives the process")

    async def aclose(self) -> None:
        self._shared.closed = True
        self.journal.wake()
        self.signals.wake()

    async def __aenter__(self) -> MemoryCoordinator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
