"""The durability proof at scale: ``python -m loadtests.crash``.

Writers type into many section rooms of a ``collab serve`` child process while watchers
follow; mid-stream the server is killed with SIGKILL, then restarted on the same data
directory. For every room, a fresh client must hold every update any watcher had received
before the kill (compared by state vector: each (client, clock) a watcher had, the restarted
server has). Several rounds kill the same server again and again.

Bounded: at most 200 rooms, 2,000 clients, 20,000 edits per writer, 10 rounds; loopback
only. Exit status 0 when nothing was lost, 1 when something was, 2 for bad options.

Example::

    python -m loadtests.crash --rooms 50 --writers 2 --watchers 2 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from loadtests.client import YClient
from loadtests.harness import ServerProcess
from protocol.varint import decode_varuint

MAX_ROOMS = 200
MAX_CLIENTS = 2000
MAX_EDITS = 20_000
MAX_ROUNDS = 10


def clocks(state_vector: bytes) -> dict[int, int]:
    """A Yjs state vector as {client id: clock}."""
    count, pos = decode_varuint(state_vector, 0)
    result = {}
    for _ in range(count):
        client, pos = decode_varuint(state_vector, pos)
        clock, pos = decode_varuint(state_vector, pos)
        result[client] = clock
    return result


def covers(has: dict[int, int], had: dict[int, int]) -> bool:
    return all(has.get(client, 0) >= clock for client, clock in had.items())


async def one_round(
    server: ServerProcess, rooms: list[str], writers: int, watchers: int, edits: int, seed: int
) -> dict[str, dict[int, int]]:
    """Type until every watcher saw some edits, SIGKILL the server, return what each room's
    watchers had seen (the union of their state vectors)."""
    rng = random.Random(seed)
    typing_clients = [YClient(server.ws_url, room) for room in rooms for _ in range(writers)]
    watching = [YClient(server.ws_url, room) for room in rooms for _ in range(watchers)]
    clients = typing_clients + watching
    await asyncio.gather(*(c.connect() for c in clients))
    await asyncio.gather(*(asyncio.wait_for(c.synced.wait(), 30) for c in clients))
    start_lengths = {id(w): len(w.text) for w in watching}

    async def type_into(client: YClient) -> None:
        for index in range(edits):
            client.text.insert(rng.randint(0, len(client.text)), str(index % 10))
            await client.flush()
            if index % 10 == 0:
                await asyncio.sleep(0.001)

    tasks = [asyncio.create_task(type_into(c)) for c in typing_clients]

    def grew(watcher: YClient) -> Callable[[], bool]:
        return lambda: len(watcher.text) >= start_lengths[id(watcher)] + 20

    await asyncio.gather(*(w.wait_for(grew(w), 60) for w in watching))
    server.kill()
    seen: dict[str, dict[int, int]] = {}
    for watcher in watching:
        merged = seen.setdefault(watcher.room, {})
        for client, clock in clocks(watcher.doc.get_state()).items():
            merged[client] = max(merged.get(client, 0), clock)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return seen


async def verify(server: ServerProcess, seen: dict[str, dict[int, int]]) -> list[str]:
    """Rooms whose restarted state lacks something a watcher had seen."""
    lost = []
    for room, had in seen.items():
        async with YClient(server.ws_url, room) as fresh:
            if not covers(clocks(fresh.doc.get_state()), had):
                lost.append(room)
    return lost


async def run(args: argparse.Namespace, data_dir: Path) -> int:
    rooms = [f"crash{r // 10}/s{r % 10}" for r in range(args.rooms)]
    server = ServerProcess(data_dir).start()
    total_seen = 0
    try:
        for round_index in range(args.rounds):
            started = time.monotonic()
            seen = await one_round(
                server, rooms, args.writers, args.watchers, args.edits, seed=round_index
            )
            updates = sum(sum(v.values()) for v in seen.values())
            total_seen += updates
            killed_at = time.monotonic()
            server = ServerProcess(data_dir).start()
            restart = time.monotonic() - killed_at
            lost = await verify(server, seen)
            print(
                f"round {round_index + 1}/{args.rounds}: {len(rooms)} rooms, "
                f"{updates:,} items seen by watchers before SIGKILL after "
                f"{killed_at - started:.1f} s; restarted in {restart:.1f} s; "
                f"rooms missing something: {len(lost)}",
                flush=True,
            )
            if lost:
                print(f"LOST updates in: {', '.join(lost[:10])}", file=sys.stderr)
                return 1
    finally:
        server.stop()
    print(f"nothing lost: {args.rounds} kill(s), {total_seen:,} items checked")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.crash",
        description="SIGKILL a collab server mid-stream and prove no update any client saw "
        "is lost (the server runs on embedded defaults in a temporary directory).",
    )
    parser.add_argument("--rooms", type=int, default=20, help=f"section rooms (<= {MAX_ROOMS})")
    parser.add_argument("--writers", type=int, default=2, help="typing clients per room")
    parser.add_argument("--watchers", type=int, default=1, help="watching clients per room")
    parser.add_argument(
        "--edits", type=int, default=2000, help=f"edits per writer at most (<= {MAX_EDITS})"
    )
    parser.add_argument("--rounds", type=int, default=1, help=f"kills (<= {MAX_ROUNDS})")
    args = parser.parse_args(argv)
    clients = args.rooms * (args.writers + args.watchers)
    problems = []
    if not 1 <= args.rooms <= MAX_ROOMS:
        problems.append(f"--rooms must be 1..{MAX_ROOMS}")
    if args.writers < 1 or args.watchers < 1 or clients > MAX_CLIENTS:
        problems.append(f"at least one writer and watcher per room, at most {MAX_CLIENTS} clients")
    if not 1 <= args.edits <= MAX_EDITS:
        problems.append(f"--edits must be 1..{MAX_EDITS}")
    if not 1 <= args.rounds <= MAX_ROUNDS:
        problems.append(f"--rounds must be 1..{MAX_ROUNDS}")
    if problems:
        print(f"{parser.prog}: " + "; ".join(problems), file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="collab-crash-") as tmp:
        return asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
