"""Giving the memory of unloaded rooms back to the operating system.

A room's document lives in native memory (yrs, through pycrdt), out of the garbage collector's
accounting. Two things used to keep it after the room unloaded:

* **Reference cycles.** The connections that used the room reached it (their session, their
  close chain) from reference cycles (connection, transport, writer) that only a full
  collection frees, and Python runs one by object counts, blind to the megabytes each pins:
  about 15 unloaded 1 MB rooms stayed alive. Now a connection drops its close chain once it
  has fired and the transport lets go of its session when the socket is lost, so an unloaded
  room is freed by reference counting at once (``tests/integration/test_memory.py`` checks it
  with the collector off). :class:`HeapTrimmer` can still run a collection before a trim
  (``collect``), for callers that need one; the server does not.
* **The allocator.** glibc keeps freed pages in its arenas for reuse instead of returning
  them. ``malloc_trim(0)`` returns the free pages of every arena; it walks the heaps (a few
  milliseconds) holding each arena's lock, so it runs in a worker thread.

A run happens at most once per ``interval`` seconds however many rooms unload. With
``collect``, the collection runs only when the rooms released since the last one held
``collect_after_bytes`` or more, on the event loop, and the next run then waits at least
``COLLECT_BUDGET`` times its duration (at most 1 % of the loop). Where the C library is not
glibc (musl, macOS) there is no ``malloc_trim``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import time
from collections.abc import Callable

# The next run waits at least this many times the last collection's duration.
COLLECT_BUDGET = 100.0


def glibc_malloc_trim() -> Callable[[], object] | None:
    """``malloc_trim(0)`` of the process's C library, or None when it has none (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


# ``malloc_trim(0)`` of this process's C library (None without glibc).
MALLOC_TRIM = glibc_malloc_trim()


class HeapTrimmer:
    """Debounced ``malloc_trim(0)`` (after ``collect``, e.g. ``gc.collect``, when given):
    :meth:`request` asks for a run; runs
    happen at most once per ``interval`` seconds (the first request right away, the next ones
    gathered into one run when the interval is over). The trim of a run is a task of
    ``tasks`` (in a worker thread), so shutting the group down cancels a pending one."""

    def __init__(
        self,
        tasks: asyncio.TaskGroup,
        interval: float,
        trim: Callable[[], object] | None = MALLOC_TRIM,
        collect: Callable[[], object] | None = None,
        collect_after_bytes: int = 0,
    ) -> None:
        self._tasks = tasks
        self._interval = interval
        self._trim = trim
        self._collect = collect
        self._collect_after_bytes = collect_after_bytes
        self._released = 0
        self.collections = 0
        self._last = -float("inf")  # monotonic time the last run started
        self._wait = interval  # from the last run's start to the next one's, at least
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self.trims = 0
        self.seconds = 0.0
        self.collect_seconds = 0.0
        self.collect_max_seconds = 0.0

    def request(self, released_bytes: int = 0) -> None:
        """Ask for a run, after documents of about ``released_bytes`` were released; the
        next run collects only once these add up to ``collect_after_bytes`` (the collection
        is worth its time only when the garbage pins that much). Never blocks or raises."""
        self._released += released_bytes
        if self._timer is not None:
            return
        self._schedule(max(0.0, self._last + self._wait - time.monotonic()))

    def _schedule(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._running:
            self._schedule(self._wait)
            return
        self._last = time.monotonic()
        if self._collect is not None and self._released >= self._collect_after_bytes:
            self._released = 0
            started = time.perf_counter()
            self._collect()
            spent = time.perf_counter() - started
            self.collections += 1
            self.collect_seconds += spent
            self.collect_max_seconds = max(self.collect_max_seconds, spent)
            self._wait = max(self._interval, COLLECT_BUDGET * spent)
        else:
            self._wait = self._interval
        if self._trim is None:
            self.trims += 1
            return
        self._running = True
        self._tasks.create_task(self._run(self._trim), name="heap trim")

    async def _run(self, trim: Callable[[], object]) -> None:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(trim)
        finally:
            self._running = False
        self.trims += 1
        self.seconds += time.perf_counter() - started

    def close(self) -> None:
        """Cancel a pending run (one under way finishes in its thread)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def pending(self) -> bool:
        """Whether a run is due or under way: once it is False again, a run that started
        after every earlier :meth:`request` has finished."""
        return self._timer is not None or self._running

    def stats(self) -> dict[str, float | int | bool]:
        """``heap_trims_total`` (runs done), ``heap_collections_total`` (runs that collected),
        ``heap_collect_seconds_total`` and
        ``heap_collect_max_seconds`` (the collections, on the event loop),
        ``heap_trim_seconds_total`` (the trims in the worker thread, queueing included) and
        ``heap_trim_pending`` (:attr:`pending`)."""
        return {
            "heap_trims_total": self.trims,
            "heap_collections_total": self.collections,
            "heap_collect_seconds_total": round(self.collect_seconds, 4),
            "heap_collect_max_seconds": round(self.collect_max_seconds, 4),
            "heap_trim_seconds_total": round(self.seconds, 4),
            "heap_trim_pending": self.pending,
        }
