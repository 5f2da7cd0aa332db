"""Memory across room loads and unloads (issue 4): ``python -m loadtests.bench_memory``.

Against a ``collab serve`` on its embedded defaults (durable SQLite) with
``COLLAB_ROOM_IDLE_SECONDS=0``, started here with :class:`~loadtests.harness.ServerProcess`:

* **cycles**: one section holding ``--room-kb`` KiB of text (1 MiB) is joined by a client and
  left, ``--cycles`` times (1,000): each cycle loads the section and its outline from storage,
  sends the full state, and unloads both. The server's RSS (from ``/healthz``) is read after
  a few warm-up cycles and at the end, each time at once and again at rest: once the heap
  trim that the last unload asked for has run (``heap_trim_pending`` false in ``/healthz``;
  a server without the trim is read at once). Target: within 10 MB at rest (the exit code).
* **many rooms**: ``--rooms`` rooms (5,000, each a section of its own document, so twice as
  many rooms with the outlines) are joined by one client each, in batches, then left; RSS
  before, with them loaded, and once the server reports zero rooms.

Unloads are awaited through the server's ``/healthz`` counters (``rooms``,
``rooms_unloaded_total``), never by sleeping. Loopback only, bounded in count and time. The
markdown table goes to stdout, the JSON to ``loadtests/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2

from loadtests.bench_core import RESULTS_DIR, machine
from loadtests.client import YClient
from loadtests.harness import ServerProcess

ENV = {"COLLAB_ROOM_IDLE_SECONDS": "0", "COLLAB_SNAPSHOT_IDLE_SECONDS": "0.2"}
ROOM = "memory/big"
WARM_UP_CYCLES = 5
TARGET_GROWTH_MB = 10.0
MB = 1_000_000


async def health(http: httpx2.AsyncClient) -> dict[str, Any]:
    response = await http.get("/healthz")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


async def wait_until(
    http: httpx2.AsyncClient, predicate: Any, timeout: float = 60.0
) -> dict[str, Any]:
    """Read ``/healthz`` until ``predicate(body)`` holds (each read is a round trip to the
    server, which is what we wait on); TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            body = await health(http)
            if predicate(body):
                return body


async def at_rest(http: httpx2.AsyncClient) -> int:
    """The server's RSS once the freed memory of the rooms unloaded so far went back to the
    system: after the trim that the last unload asked for (``heap_trim_pending`` false). A
    server without the trim (no such field) is read at once."""
    body = await wait_until(http, lambda body: not body.get("heap_trim_pending", False))
    return int(body["rss_bytes"])


def _heap_stats(body: dict[str, Any]) -> dict[str, Any]:
    """The server's ``heap_*`` counters (its trims after unloads), if any."""
    return {key: value for key, value in body.items() if key.startswith("heap_")}


async def write_room(ws_url: str, http: httpx2.AsyncClient, room: str, size: int) -> None:
    """Fill ``room`` with ``size`` characters of text, then wait until no room is loaded."""
    async with YClient(ws_url, room) as writer:
        chunk = "strategy " * 1000
        while len(writer.text) < size:
            await writer.insert(len(writer.text), chunk[: size - len(writer.text)])
        async with YClient(ws_url, room) as check:
            await check.wait_for(lambda: len(check.text) == size, timeout=60)
    await wait_until(http, lambda body: body["rooms"] == 0)


async def join_and_leave(
    ws_url: str, http: httpx2.AsyncClient, room: str, size: int, unloaded: int
) -> int:
    """Join ``room`` (loading it), check its size, leave, and wait for both of its rooms
    (section and outline) to unload; returns the new ``rooms_unloaded_total``."""
    async with YClient(ws_url, room) as client:
        if len(client.text) != size:
            raise RuntimeError(f"joined {room} with {len(client.text)} characters, not {size}")
    body = await wait_until(
        http, lambda body: body["rooms_unloaded_total"] >= unloaded + 2 and body["rooms"] == 0
    )
    return int(body["rooms_unloaded_total"])


async def cycles(server: ServerProcess, count: int, size: int) -> dict[str, Any]:
    """Load and unload one ``size``-character section ``count`` times; RSS in bytes."""
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=30) as http:
        start_rss = (await health(http))["rss_bytes"]
        await write_room(server.ws_url, http, ROOM, size)
        unloaded = (await health(http))["rooms_unloaded_total"]
        for _ in range(WARM_UP_CYCLES):
            unloaded = await join_and_leave(server.ws_url, http, ROOM, size, unloaded)
        warm_rss = (await health(http))["rss_bytes"]
        warm_rest = await at_rest(http)
        started = time.perf_counter()
        for _ in range(count):
            unloaded = await join_and_leave(server.ws_url, http, ROOM, size, unloaded)
        elapsed = time.perf_counter() - started
        end_rss = (await health(http))["rss_bytes"]
        end_rest = await at_rest(http)
        heap = _heap_stats(await health(http))
    return {
        "cycles": count,
        "room_chars": size,
        "rss_start_bytes": start_rss,
        "rss_warm_bytes": warm_rss,
        "rss_end_bytes": end_rss,
        "growth_mb": round((end_rss - warm_rss) / MB, 1),
        "rss_warm_rest_bytes": warm_rest,
        "rss_end_rest_bytes": end_rest,
        "growth_at_rest_mb": round((end_rest - warm_rest) / MB, 1),
        **heap,
        "cycle_ms": round(1000 * elapsed / max(count, 1), 2),
    }


async def _join(client: YClient) -> None:
    await client.connect(timeout=120)
    await asyncio.wait_for(client.synced.wait(), 120)


async def many_rooms(server: ServerProcess, rooms: int, batch: int) -> dict[str, Any]:
    """Join ``rooms`` sections (one document each) in batches of open clients, then leave
    all; RSS before, with every room loaded, and after they all unloaded."""
    async with httpx2.AsyncClient(base_url=server.http_url, timeout=30) as http:
        before = (await health(http))["rss_bytes"]
        clients: list[YClient] = []
        started = time.perf_counter()
        try:
            for first in range(0, rooms, batch):
                opened = [
                    YClient(server.ws_url, f"many{index}/s")
                    for index in range(first, min(first + batch, rooms))
                ]
                clients.extend(opened)
                await asyncio.gather(*(_join(client) for client in opened))
            loaded = await health(http)
        finally:
            await asyncio.gather(*(client.close() for client in clients))
        after = await wait_until(http, lambda body: body["rooms"] == 0, timeout=300)
        elapsed = time.perf_counter() - started
    return {
        "rooms_joined": rooms,
        "rooms_loaded_peak": loaded["rooms"],
        "rss_before_bytes": before,
        "rss_loaded_bytes": loaded["rss_bytes"],
        "rss_after_bytes": after["rss_bytes"],
        **_heap_stats(after),
        "seconds": round(elapsed, 1),
    }


async def measure(count: int, size: int, rooms: int, batch: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="collab-bench-memory-") as tmp:
        with ServerProcess(Path(tmp) / "cycles", env=ENV) as server:
            results["cycles"] = await cycles(server, count, size)
        print(json.dumps(results["cycles"]), flush=True)
        if rooms:
            with ServerProcess(Path(tmp) / "rooms", env=ENV) as server:
                results["many_rooms"] = await many_rooms(server, rooms, batch)
    return results


def report(results: dict[str, Any]) -> str:
    lines = ["| case | RSS start | RSS after warm-up / loaded | RSS end | growth |"]
    lines.append("| --- | --- | --- | --- | --- |")
    c = results["cycles"]
    lines.append(
        f"| {c['cycles']:,} load/unload cycles of a {c['room_chars'] / MB:.1f} MB room "
        f"({c['cycle_ms']:.0f} ms each) | {c['rss_start_bytes'] / MB:.0f} MB | "
        f"{c['rss_warm_bytes'] / MB:.0f} MB | {c['rss_end_bytes'] / MB:.0f} MB | "
        f"{c['growth_mb']:+.1f} MB |"
    )
    lines.append(
        f"| the same at rest (after the heap trim that follows the last unload) | "
        f"{c['rss_start_bytes'] / MB:.0f} MB | {c['rss_warm_rest_bytes'] / MB:.0f} MB | "
        f"{c['rss_end_rest_bytes'] / MB:.0f} MB | {c['growth_at_rest_mb']:+.1f} MB |"
    )
    many = results.get("many_rooms")
    if many is not None:
        lines.append(
            f"| {many['rooms_joined']:,} rooms joined ({many['rooms_loaded_peak']:,} loaded "
            f"with outlines), then unloaded | {many['rss_before_bytes'] / MB:.0f} MB | "
            f"{many['rss_loaded_bytes'] / MB:.0f} MB | {many['rss_after_bytes'] / MB:.0f} MB | "
            f"{(many['rss_after_bytes'] - many['rss_before_bytes']) / MB:+.1f} MB |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_memory", description=__doc__)
    parser.add_argument("--cycles", type=int, default=1000, help="load/unload cycles (1,000)")
    parser.add_argument("--room-kb", type=int, default=1024, help="room size in KiB (1,024)")
    parser.add_argument("--rooms", type=int, default=5000, help="rooms joined at once (5,000)")
    parser.add_argument("--batch", type=int, default=50, help="clients opened at a time (50)")
    args = parser.parse_args(argv)
    if not 1 <= args.cycles <= 10_000 or not 1 <= args.room_kb <= 8 * 1024:
        parser.error("--cycles must be 1..10000 and --room-kb 1..8192")
    if not 0 <= args.rooms <= 20_000 or not 1 <= args.batch <= 1000:
        parser.error("--rooms must be 0..20000 and --batch 1..1000")
    results = asyncio.run(measure(args.cycles, args.room_kb * 1024, args.rooms, args.batch))
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = {"machine": machine(), **results}
    (RESULTS_DIR / f"bench-memory-{stamp}.json").write_text(json.dumps(out, indent=2))
    print(report(results))
    growth = results["cycles"]["growth_at_rest_mb"]
    return 0 if growth <= TARGET_GROWTH_MB else 1


if __name__ == "__main__":
    sys.exit(main())
