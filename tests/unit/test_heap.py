"""The debounced collection and trim after room unloads (server/realtime/heap.py)."""

from __future__ import annotations

import asyncio
import time

from server.realtime.heap import HeapTrimmer, glibc_malloc_trim


async def test_requests_are_gathered_into_one_run_per_interval() -> None:
    collected: list[float] = []
    trimmed: list[float] = []
    runs = [asyncio.Event(), asyncio.Event()]
    loop = asyncio.get_running_loop()

    def trim() -> None:
        trimmed.append(time.monotonic())
        loop.call_soon_threadsafe(runs[len(trimmed) - 1].set)

    async with asyncio.TaskGroup() as tasks:
        trimmer = HeapTrimmer(
            tasks, interval=0.2, trim=trim, collect=lambda: collected.append(time.monotonic())
        )
        for _ in range(3):
            trimmer.request()
        assert trimmer.pending
        await asyncio.wait_for(runs[0].wait(), 5)
        for _ in range(3):
            trimmer.request()
        await asyncio.wait_for(runs[1].wait(), 5)
    assert len(collected) == 2
    assert len(trimmed) == 2
    assert collected[1] - collected[0] >= 0.2
    stats = trimmer.stats()
    assert stats["heap_trims_total"] == 2
    assert stats["heap_trim_pending"] is False


async def test_without_malloc_trim_only_the_collection_runs() -> None:
    collected = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        trimmer = HeapTrimmer(tasks, interval=0.2, trim=None, collect=collected.set)
        trimmer.request()
        await asyncio.wait_for(collected.wait(), 5)
    assert trimmer.stats()["heap_trims_total"] == 1
    assert not trimmer.pending


async def test_close_cancels_a_pending_run() -> None:
    collected: list[None] = []
    first = asyncio.Event()

    def collect() -> None:
        collected.append(None)
        first.set()

    async with asyncio.TaskGroup() as tasks:
        trimmer = HeapTrimmer(tasks, interval=60, trim=None, collect=collect)
        trimmer.request()
        await asyncio.wait_for(first.wait(), 5)
        trimmer.request()  # the next run is due in 60 s
        assert trimmer.pending
        trimmer.close()
    assert not trimmer.pending
    assert len(collected) == 1


def test_malloc_trim_is_found_on_glibc_or_absent() -> None:
    trim = glibc_malloc_trim()
    if trim is not None:
        trim()


async def test_the_collection_waits_for_enough_released_bytes() -> None:
    collected: list[None] = []
    trimmed = [asyncio.Event(), asyncio.Event()]
    loop = asyncio.get_running_loop()
    runs: list[None] = []

    def trim() -> None:
        runs.append(None)
        loop.call_soon_threadsafe(trimmed[len(runs) - 1].set)

    async with asyncio.TaskGroup() as tasks:
        trimmer = HeapTrimmer(
            tasks,
            interval=0.05,
            trim=trim,
            collect=lambda: collected.append(None),
            collect_after_bytes=100,
        )
        trimmer.request(10)
        await asyncio.wait_for(trimmed[0].wait(), 5)
        assert collected == []
        trimmer.request(95)
        await asyncio.wait_for(trimmed[1].wait(), 5)
    assert len(collected) == 1
    assert trimmer.stats()["heap_collections_total"] == 1
    assert trimmer.stats()["heap_trims_total"] == 2
