"""What one Redis shard holds, for the capacity model.

``python -m loadtests.inprocess.redis_shard_bench``.

Starts a throwaway ``redis-server`` (AOF, ``appendfsync always``) and, with ``--redis-cluster``,
a throwaway Redis Cluster (three masters with a replica each, all on this machine), and
measures through the coordinator the server uses (:class:`RedisCoordinator`):

* journal appends per second (the ``JOURNAL_APPEND`` script, 20-byte updates, ``--writers``
  concurrent appenders over as many documents) for ``--seconds`` seconds; on the cluster each
  append also waits for its replica (``WAIT``), as the server does;
* the memory one document costs: ``MEMORY USAGE`` of a change stream after 1,000 appends (the
  journal a document holds between two compactions) and of a presence hash with 10 entries.

Bounded: a few seconds per target, loopback only. Markdown to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import redis

from loadtests.redis_cluster import ThrowawayRedisCluster
from loadtests.services import ThrowawayRedis
from persistence.coordinator.redis import RedisCoordinator

UPDATE = b"\x01\x01\x8f\xa4\xb2\x03\x05\x84\x8f\xa4\xb2\x03\x04\x01x\x00\x00\x00\x00\x00"


async def append_rate(coordinator: RedisCoordinator, writers: int, seconds: float) -> float:
    """Appends per second of ``writers`` concurrent appenders, one document each."""
    done = 0
    deadline = time.monotonic() + seconds

    async def writer(index: int) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await coordinator.journal.append(f"shard-bench-{index}", "s", UPDATE, origin="n")
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(writer(index) for index in range(writers)))
    return done / (time.monotonic() - started)


async def document_bytes(coordinator: RedisCoordinator, memory: Any) -> tuple[int, int]:
    """(bytes of a 1,000-entry change stream, bytes of a 10-entry presence hash)."""
    for _ in range(1000):
        await coordinator.journal.append("shard-memory", "s", UPDATE, origin="n")
    for index in range(10):
        await coordinator.presence.join("shard-memory", "s", f"u{index}", "n", f"c{index}", 60)
    tag = "{shard-memory}" if coordinator.cluster else "shard-memory"
    stream = int(memory(f"collab:{tag}:changes") or 0)
    users = int(memory(f"collab:{tag}:users") or 0)
    return stream, users


async def measure(coordinator: RedisCoordinator, memory: Any, args: Any) -> dict[str, float]:
    async with coordinator:
        rate = await append_rate(coordinator, args.writers, args.seconds)
        stream, users = await document_bytes(coordinator, memory)
    return {"appends_per_second": rate, "stream_1000_bytes": stream, "presence_10_bytes": users}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.inprocess.redis_shard_bench", description=__doc__
    )
    parser.add_argument("--writers", type=int, default=32, help="concurrent appenders (32)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per target (5)")
    parser.add_argument("--redis-cluster", action="store_true", help="measure a cluster too")
    args = parser.parse_args(argv)
    if not (1 <= args.writers <= 256 and 0 < args.seconds <= 30):
        print("--writers 1..256, --seconds up to 30", file=sys.stderr)
        return 2
    rows: dict[str, dict[str, float]] = {}
    single = ThrowawayRedis.launch()
    try:
        client = redis.Redis(host="127.0.0.1", port=single.port)
        rows["one Redis (AOF always)"] = asyncio.run(
            measure(RedisCoordinator.from_url(single.url), client.memory_usage, args)
        )
        client.close()
    finally:
        single.stop()
    if args.redis_cluster:
        cluster = ThrowawayRedisCluster().start()
        try:
            sharded = redis.RedisCluster.from_url(cluster.url)
            rows["Redis Cluster, 3 masters (AOF always, WAIT 1 replica)"] = asyncio.run(
                measure(RedisCoordinator.cluster_from_url(cluster.url), sharded.memory_usage, args)
            )
            sharded.close()
        finally:
            cluster.stop()
    print(f"{args.writers} concurrent appenders, {args.seconds:g} s per target\n")
    print("| target | journal appends/s | stream of 1,000 entries | presence hash, 10 entries |")
    print("| --- | --- | --- | --- |")
    for name, row in rows.items():
        print(
            f"| {name} | {row['appends_per_second']:,.0f} | "
            f"{row['stream_1000_bytes'] / 1024:.1f} KB | {row['presence_10_bytes'] / 1024:.1f} KB |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
