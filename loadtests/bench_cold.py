"""Cold load of a section with a long history (issue 3): ``python -m loadtests.bench_cold``.

A writer makes 20,000 one-character edits in one section of a ``collab serve`` on embedded
defaults (durable SQLite journal). Then, for two shapes of what storage holds:

* **crash**: the server is killed with SIGKILL right after the edits and restarted: with the
  default settings the section is stored as a snapshot (rooms compact every 1,000 updates)
  plus the journal entries after it;
* **journal**: the same with compaction turned off, so the section is 20,000 journal entries
  and no snapshot (a worst case the defaults never leave behind);
* **snapshot**: the room is left to unload (its final compaction folds the journal into
  one snapshot), as after a quiet period;

a new client joins: the time until it holds the full state (sync step 2 applied) is the join
time with the room load in it; a second client joining right after measures the join to a
loaded room. Each is repeated ``--repeat`` times (a restart or an unload between repeats);
medians are printed. Targets: room load under 300 ms, full state under 100 ms once loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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

ROOM = "cold/history"


async def write_history(server: ServerProcess, edits: int) -> None:
    async with YClient(server.ws_url, ROOM) as writer:
        for index in range(edits):
            writer.text.insert(len(writer.text), "abcdefghij"[index % 10])
            await writer.flush()
            if index % 200 == 0:
                await asyncio.sleep(0)
        # Every edit is relayed back by a second client once durable: wait for the last one.
        async with YClient(server.ws_url, ROOM) as check:
            await check.wait_for(lambda: len(check.text) == edits, timeout=120)


async def join_seconds(server: ServerProcess, edits: int) -> float:
    started = time.perf_counter()
    client = YClient(server.ws_url, ROOM)
    await client.connect()
    await asyncio.wait_for(client.synced.wait(), 30)
    elapsed = time.perf_counter() - started
    if len(client.text) != edits:
        raise RuntimeError(f"joined with {len(client.text)} characters, expected {edits}")
    await client.close()
    return elapsed


def wait_unloaded(server: ServerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx2.get(f"{server.http_url}/healthz", timeout=5).json()["rooms"] == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the room did not unload")


async def after_kill(edits: int, repeat: int, env: dict[str, str]) -> dict[str, list[float]]:
    """Write the history, SIGKILL, then restart ``repeat`` times: cold and loaded joins."""
    with tempfile.TemporaryDirectory(prefix="collab-bench-cold-") as tmp:
        data = Path(tmp)
        server = ServerProcess(data, env=env).start()
        try:
            await write_history(server, edits)
            server.kill()
            cold, warm = [], []
            for _ in range(repeat):
                server = ServerProcess(data, env=env).start()
                cold.append(await join_seconds(server, edits))
                warm.append(await join_seconds(server, edits))
                server.kill()
        finally:
            server.kill()
    return {"cold_ms": cold, "loaded_ms": warm}


async def after_unload(edits: int, repeat: int, env: dict[str, str]) -> dict[str, list[float]]:
    """Write the history, let the room unload (one snapshot), join ``repeat`` times."""
    with tempfile.TemporaryDirectory(prefix="collab-bench-cold-") as tmp:
        server = ServerProcess(Path(tmp), env=env).start()
        try:
            await write_history(server, edits)
            cold, warm = [], []
            for _ in range(repeat):
                await asyncio.to_thread(wait_unloaded, server)
                cold.append(await join_seconds(server, edits))
                warm.append(await join_seconds(server, edits))
        finally:
            server.kill()
    return {"cold_ms": cold, "loaded_ms": warm}


async def measure(edits: int, repeat: int) -> dict[str, Any]:
    idle = {"COLLAB_ROOM_IDLE_SECONDS": "0.5"}
    results: dict[str, Any] = {
        "crash": await after_kill(edits, repeat, idle),
        "journal": await after_kill(
            edits, repeat, {**idle, "COLLAB_COMPACT_AFTER_UPDATES": "1000000"}
        ),
        "snapshot": await after_unload(edits, repeat, idle),
    }
    for shape in results.values():
        for key in ("cold_ms", "loaded_ms"):
            shape[key] = [round(1000 * s, 2) for s in shape[key]]
            shape[key.replace("_ms", "_median_ms")] = statistics.median(shape[key])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_cold", description=__doc__)
    parser.add_argument("--edits", type=int, default=20_000, help="edits of history (20,000)")
    parser.add_argument("--repeat", type=int, default=5, help="joins of each kind (5)")
    args = parser.parse_args(argv)
    if not 1 <= args.edits <= 200_000 or not 1 <= args.repeat <= 20:
        parser.error("--edits must be 1..200000 and --repeat 1..20")
    results = asyncio.run(measure(args.edits, args.repeat))
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = {"machine": machine(), "edits": args.edits, **results}
    (RESULTS_DIR / f"bench-cold-{stamp}.json").write_text(json.dumps(out, indent=2))
    print(f"| {args.edits:,} edits stored as | join with room load (median) | join, room loaded |")
    print("| --- | --- | --- |")
    shapes = (
        ("crash", "after SIGKILL, default settings (snapshot + journal tail)"),
        ("snapshot", "after the room unloaded (one snapshot)"),
        ("journal", "20,000 journal entries, compaction off (worst case)"),
    )
    for shape, label in shapes:
        row = results[shape]
        print(f"| {label} | {row['cold_median_ms']:.1f} ms | {row['loaded_median_ms']:.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
