"""In-process rate limits for the socket's hot path.

Messages on a socket are counted per user in fixed windows on this node, without waiting
on Redis (an await per message would cost more than the message). Connects and REST calls
are limited across nodes through ``ratelimit:{userId}:{action}`` in the coordinator
(:meth:`server.app.Collab.limit`).
"""

from __future__ import annotations

import time
from collections.abc import Callable


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
