"""Per-key serialization: the one shape of "one at a time, in order, per key".

The document lock of the status workflow (``server/documents/workflow.py``: saves, status
changes, restores and approval decisions of one document run one at a time), the comment
socket lanes (``server/review/lanes.py``: one connection's requests run in the order they
arrived), the CMS record locks (``server/cms/service.py``) and the presence writes per
(node, document) on Redis Cluster (``coordinator/redis_cluster_presence.py``) are all a
:class:`KeyedLocks`. It lives in ``persistence/``, the lowest package that may use asyncio,
so that the adapters and the server share it.

A hold is counted from the moment :meth:`KeyedLocks.hold` is called, before it is entered:
a caller that queues work in a task (the lanes) sees the queue length at once
(:meth:`KeyedLocks.waiting`) and can refuse past a bound. Waiters enter in the order they
began to wait, that is entered their hold (asyncio's lock is FIFO; the lanes enter in
the order they were submitted), and a key's lock is dropped when nobody holds or
awaits it, so the table holds only busy keys.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Generic, TypeVar

K = TypeVar("K")


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Hold(Generic[K]):
    """One place in a key's queue (from :meth:`KeyedLocks.hold`): ``async with`` it to wait
    for the key and hold it for the block. Enter it once; a hold given up without entering it
    must be :meth:`cancel`-led, or the key stays counted busy."""

    __slots__ = ("_done", "_entry", "_key", "_owner")

    def __init__(self, owner: KeyedLocks[K], key: K, entry: _Entry) -> None:
        self._owner = owner
        self._key = key
        self._entry = entry
        self._done = False

    async def __aenter__(self) -> None:
        try:
            await self._entry.lock.acquire()
        except BaseException:
            self.cancel()
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._entry.lock.release()
        self.cancel()

    def cancel(self) -> None:
        """Give up the place (idempotent): the key is no longer counted busy for it."""
        if self._done:
            return
        self._done = True
        self._owner._release(self._key, self._entry)


class KeyedLocks(Generic[K]):
    """One FIFO lock per key, dropped when nobody holds or awaits it (cancellation-safe)."""

    def __init__(self) -> None:
        self._entries: dict[K, _Entry] = {}

    def hold(self, key: K) -> Hold[K]:
        """A place in ``key``'s queue, counted from now; ``async with`` it to hold the key."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        return Hold(self, key, entry)

    def waiting(self, key: K) -> int:
        """How many holds of ``key`` are taken and not yet done (the holder included)."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry.users

    def _release(self, key: K, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0 and self._entries.get(key) is entry:
            del self._entries[key]

    def __len__(self) -> int:
        """How many keys are busy."""
        return len(self._entries)
