"""Rate limits.

Messages on a socket are counted per user in fixed windows on this node, without waiting
on Redis (an await per message would cost more than the message). Connects and REST calls
are limited across nodes through ``ratelimit:{userId}:{action}`` in the coordinator
(:class:`SharedLimits`), and on this node alone while the coordinator is unavailable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from persistence.coordinator.ports import RateLimiter
from persistence.errors import StorageUnavailable
from server.errors import RateLimited

log = logging.getLogger(__name__)


class MessageLimiter:
    """At most ``limit`` messages per user per ``window`` seconds on this node."""

    __slots__ = ("_clock", "_counts", "_limit", "_window")

    def __init__(
        self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._counts: dict[str, list[float]] = {}  # user -> [window start, count]

    def hit(self, user_id: str) -> float:
        """Count one message; 0.0 when allowed, else the seconds until the window ends."""
        now = self._clock()
        entry = self._counts.get(user_id)
        if entry is None or now - entry[0] >= self._window:
            if len(self._counts) > 100_000:
                self._counts.clear()
            self._counts[user_id] = [now, 1.0]
            return 0.0
        if entry[1] >= self._limit:
            return self._window - (now - entry[0])
        entry[1] += 1
        return 0.0


class SharedLimits:
    """Per-user limits of actions (``{action: (limit, window seconds)}``), counted in the
    coordinator, so across nodes. While the coordinator is unavailable they are counted on
    this node only (one WARNING per outage): an outage neither refuses every action nor
    lifts the limits."""

    def __init__(self, shared: RateLimiter, table: Mapping[str, tuple[int, float]]) -> None:
        self._shared = shared
        self._table = dict(table)
        self._local = {action: MessageLimiter(*spec) for action, spec in self._table.items()}
        self._outage = False

    async def check(self, user_id: str, action: str) -> None:
        """Count one ``action`` of the user; RateLimited when over the limit. KeyError for an
        action not in the table."""
        limit, window = self._table[action]
        try:
            decision = await self._shared.hit(user_id, action, limit, window)
        except StorageUnavailable as exc:
            if not self._outage:
                self._outage = True
                log.warning("rate limits counted on this node only for now: %s", exc)
            retry_after = self._local[action].hit(user_id)
        else:
            self._outage = False
            retry_after = 0.0 if decision.allowed else decision.retry_after
        if retry_after:
            raise RateLimited(
                f"more than {limit} {action} actions in {window:g} s; retry in {retry_after:.1f} s",
                retry_after,
            )
