"""What the administration adds to hot paths: ``python -m loadtests.inprocess.admin_bench``.

* ``count``: the cost of one :meth:`server.admin.stats.ActivityStats.count` (what the edit path
  calls per update): nanoseconds per call over ``--counts`` calls, and the I/O it does (none:
  the counters' call count is printed);
* ``flush``: the time of one batch write of those counts to the in-process coordinator;
* ``rights``: the cost of :meth:`server.identity.rights.AccessControl.right` for a user of a
  custom role, the role book and the grants cached (what every REST call and the guard pay),
  microseconds per call over ``--rights`` calls.

Prints JSON; the numbers belong in ``docs/benchmarks.md``. Bounded by its two counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persistence.content.sqlite import SqliteContentStore
from persistence.coordinator.memory import MemoryCoordinator
from persistence.relational import migrate, open_relational
from server.admin.stats import ActivityStats
from server.identity.rights import AccessControl, Subject
from server.identity.roles import RoleBook


class CountingCounters:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def incr(self, *args: Any, **kw: Any) -> int:
        self.calls += 1
        value: int = await self.inner.incr(*args, **kw)
        return value

    async def get(self, kind: str, period: str) -> dict[str, int]:
        value: dict[str, int] = await self.inner.get(kind, period)
        return value


async def measure(counts: int, rights: int) -> dict[str, Any]:
    coordinator = MemoryCoordinator()
    counters = CountingCounters(coordinator.stats)
    stats = ActivityStats(counters, "bench")
    began = time.perf_counter_ns()
    for _ in range(counts):
        stats.count("edits")
    per_count_ns = (time.perf_counter_ns() - began) / counts
    io_during_counts = counters.calls
    began = time.perf_counter_ns()
    await stats.flush()
    flush_ms = (time.perf_counter_ns() - began) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'r.sqlite3'}"
        await migrate(url)
        async with await open_relational(url) as stores:
            await stores.roles.create("reviewer", permissions=["documents:edit"])
            content = await SqliteContentStore.open(Path(tmp) / "c.sqlite3")
            await content.insert("business_documents", {"documentId": "d", "title": "t"})
            access = AccessControl(content, stores.permissions, roles=RoleBook(stores.roles))
            subject = Subject(str(uuid.uuid4()), "reviewer")
            await access.right(subject, "d")  # warm the caches
            began = time.perf_counter_ns()
            for _ in range(rights):
                await access.right(subject, "d")
            per_right_us = (time.perf_counter_ns() - began) / rights / 1000
            await content.aclose()
    await coordinator.aclose()
    return {
        "count_ns_per_call": round(per_count_ns, 1),
        "io_calls_during_counts": io_during_counts,
        "flush_ms": round(flush_ms, 3),
        "flush_io_calls": counters.calls,
        "right_us_per_call_cached": round(per_right_us, 2),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, default=1_000_000)
    parser.add_argument("--rights", type=int, default=100_000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.counts, args.rights)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
