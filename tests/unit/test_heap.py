"""The debounced trim after room unloads (server/realtime/heap.py)."""

from __future__ import annotations

import asyncio
import time

from server.realtime.heap import HeapTrimmer, glibc_malloc_trim


async def test_requests_are_gathered_into_one_run_per_interval() -> None:
    trimmed: list[float] = []
    runs = [asyncio.Event(), asyncio.Event()]
    loop = asyncio.get_running_loop()

    def trim() -> None:
        trimmed.append(time.monotonic())
        loop.call_soon_threadsafe(runs[len(trimmed) - 1].set)

    async with asyncio.TaskGroup() as tasks:
        trimmer = HeapTrimmer(tasks, interval=0.2, trim=trim)
        asked = time.monotonic()  # the first run starts at once, the next >= 0.2 s after it
        for _ in range(3):
            trimmer.request()
        assert trimmer.pending
        await asyncio.wait_for(runs[0].wait(), 5)
        for _ in range(3):
            trimmer.request()
        await asyncio.wait_for(runs[1].wait(), 5)
    assert len(trimmed) == 2
    # Measured from the first request, not the first trim: a worker thread may start late.
    assert trimmed[1] - asked >= 0.2
    stats = trimmer.stats()
    assert stats["heap_trims_total"] == 2
    assert stats["heap_trim_pending"] is False


async def test_close_cancels_a_pending_run() -> None:
    trimmed: list[None] = []
    first = asyncio.Event()
    loop = asyncio.get_running_loop()

    def trim() -> None:
        trimmed.append(None)
        loop.call_soon_threadsafe(first.set)

    async with asyncio.TaskGroup() as tasks:
        trimmer = HeapTrimmer(tasks, interval=60, trim=trim)
        trimmer.request()
        await asyncio.wait_for(first.wait(), 5)
        trimmer.request()  # the next run is due in 60 s
        assert trimmer.pending
        trimmer.close()
    assert not trimmer.pending
    assert len(trimmed) == 1


def test_malloc_trim_is_found_on_glibc_or_absent() -> None:
    trim = glibc_malloc_trim()
    if trim is not None:
        trim()
