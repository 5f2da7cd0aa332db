"""Activity counters: ``stats:{type}:{period}`` in the coordinator (Redis in service mode,
in-process on the embedded default), read by ``GET /api/stats`` (``docs/administration.md``).

Types: ``edits`` (document updates applied from clients), ``comments`` (comments and
replies posted), ``views`` (documents opened: a socket joining a room, a REST read of a
document), ``signins`` (sessions opened: ``POST /api/session`` and a socket's first use of a
token). Periods: ``hour.YYYY-MM-DDTHH`` and ``day.YYYY-MM-DD`` in UTC. Each aggregate holds
one metric per node that counted into it (``n.<node>``): the total is their sum, and a node
adding its own never contends with another's.

Counting costs no I/O where it happens: :meth:`ActivityStats.count` adds to an in-memory
tally (a dict increment; the edit path calls it once per update). A background task writes
the tally every ``interval`` seconds (5 s), one ``incr`` per type and period touched; a
failed write is kept and added to the next one (after an outage the counts arrive late, not
lost, as long as this process lives). ``flush`` writes at once (``GET /api/stats`` calls it
so that an admin sees this node's latest counts).

Hourly aggregates are kept 8 days, daily ones 30 days (the coordinator's longest TTL).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from persistence.coordinator.ports import StatsCounters
from persistence.errors import StorageError
from server.errors import InvalidError

log = logging.getLogger(__name__)

TYPES: Final = ("edits", "comments", "views", "signins")
PERIODS: Final = ("hour", "day")
KEEP: Final = {"hour": 8 * 86_400.0, "day": 30 * 86_400.0}
_SAFE: Final = re.compile(r"[^A-Za-z0-9_.@+=|~-]")


def period_key(period: str, moment: datetime) -> str:
    """``hour.2026-12-07T04`` / ``day.2026-12-07`` of a moment (UTC)."""
    moment = moment.astimezone(UTC)
    if period == "hour":
        return f"hour.{moment:%Y-%m-%dT%H}"
    return f"day.{moment:%Y-%m-%d}"


def periods_back(period: str, last: int, now: datetime) -> list[tuple[str, datetime]]:
    """The keys and starts of the ``last`` periods ending with the current one, oldest
    first."""
    now = now.astimezone(UTC)
    if period == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        step = timedelta(hours=1)
    else:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        step = timedelta(days=1)
    moments = [start - step * back for back in range(last - 1, -1, -1)]
    return [(period_key(period, moment), moment) for moment in moments]


class ActivityStats:
    """Counts in memory, writes in batches; reads the aggregates back."""

    def __init__(
        self,
        counters: StatsCounters,
        node_id: str,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._counters = counters
        self._metric = "n." + _SAFE.sub("_", node_id)[:120]
        self._interval = interval
        self._clock = clock
        # (type, UTC hour as hours since the epoch) -> count; the keys are made at flush.
        self._pending: dict[tuple[str, int], int] = {}
        self._failed: Counter[tuple[str, str]] = Counter()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0
        self.failures = 0

    def count(self, kind: str, amount: int = 1) -> None:
        """Count ``amount`` of ``kind`` now (no I/O: the next flush writes it)."""
        key = (kind, int(self._clock() // 3600))
        pending = self._pending
        pending[key] = pending.get(key, 0) + amount

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def start(self, tasks: asyncio.TaskGroup) -> None:
        self._task = tasks.create_task(self._run(), name="activity stats")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        """Write what was counted since the last flush, with what failed to be written
        before (what fails now is kept for the next)."""
        async with self._lock:
            taken, self._pending = self._pending, {}
            batch, self._failed = self._failed, Counter()
            for (kind, hour), amount in taken.items():
                start = datetime.fromtimestamp(hour * 3600, UTC)
                batch[(kind, period_key("hour", start))] += amount
                batch[(kind, period_key("day", start))] += amount
            for (kind, period), amount in batch.items():
                try:
                    await self._counters.incr(
                        kind, period, self._metric, amount, ttl=KEEP[period.partition(".")[0]]
                    )
                except StorageError as exc:
                    self._failed[(kind, period)] += amount
                    self.failures += 1
                    log.warning("writing activity stats failed (%s): kept for later", exc)
            self.flushes += 1

    async def read(
        self, *, period: str = "hour", last: int = 24, types: tuple[str, ...] = TYPES
    ) -> dict[str, list[tuple[datetime, int]]]:
        """Per type, the totals (every node summed) of the ``last`` periods, oldest first."""
        if period not in PERIODS:
            raise InvalidError(f"period must be one of {', '.join(PERIODS)}", field="period")
        unknown = set(types) - set(TYPES)
        if unknown:
            raise InvalidError(f"type must be among {', '.join(TYPES)}", field="type")
        await self.flush()
        keys = periods_back(period, last, self._now())
        out: dict[str, list[tuple[datetime, int]]] = {}
        for kind in types:
            values = await asyncio.gather(*(self._counters.get(kind, key) for key, _ in keys))
            out[kind] = [
                (start, sum(metrics.values()))
                for (_, start), metrics in zip(keys, values, strict=True)
            ]
        return out
