"""Giving the memory of unloaded rooms back to the operating system.

A room's document lives in native memory (yrs, through pycrdt). Reference counting frees it as
soon as the room unloads: a connection drops its close chain once it has fired and the
transport lets go of its session when the socket is lost, so nothing reaches an unloaded room
(``tests/integration/test_memory.py`` checks it with the garbage collector off). But glibc
keeps freed pages in its arenas for reuse instead of returning them: ``malloc_trim(0)``
returns the free pages of every arena. It walks the heaps (a few milliseconds) holding each
arena's lock, so it runs in a worker thread, at most once per ``interval`` seconds however
many rooms unload. Where the C library is not glibc (musl, macOS) there is no
``malloc_trim`` and a run does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import time
from collections.abc import Callable


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
    """Debounced ``malloc_trim(0)``: :meth:`request` asks for a run; runs happen at most once
    per ``interval`` seconds (the first request right away, the next ones gathered into one
    run when the interval is over). A run is a task of ``tasks`` (in a worker thread), so
    shutting the group down cancels a pending one."""

    def __init__(
        self,
        tasks: asyncio.TaskGroup,
        interval: float,
        trim: Callable[[], object] | None = MALLOC_TRIM,
    ) -> None:
        self._tasks = tasks
        self._interval = interval
        self._trim = trim
        self._last = -float("inf")  # monotonic time the last run started
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self.trims = 0
        self.seconds = 0.0

    def request(self) -> None:
        """Ask for a run (rooms were unloaded). Never blocks or raises."""
        if self._timer is not None:
            return
        delay = max(0.0, self._last + self._interval - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._running:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._start)
            return
        self._last = time.monotonic()
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
        """``heap_trims_total`` (runs done), ``heap_trim_seconds_total`` (the trims in the
        worker thread, queueing included) and ``heap_trim_pending`` (:attr:`pending`)."""
        return {
            "heap_trims_total": self.trims,
            "heap_trim_seconds_total": round(self.seconds, 4),
            "heap_trim_pending": self.pending,
        }
