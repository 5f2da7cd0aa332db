"""Load shedding at the door: how many sockets may be joining their rooms at once.

A reconnect storm (a node restarted, a network blip) brings every client back in the same
second. Each join costs a token check, user and rights lookups, a room load and a first
sync; past some number of joins in flight they only queue, every handshake slows down and
clients time out and retry, which makes the storm worse. :class:`JoinGate` counts the
joins in flight (admitted, not yet joined or refused) and refuses the upgrades past
``capacity`` at once, before any work, with HTTP 503 and a ``Retry-After`` spread at random
over a window that grows with the overload, so the refused clients come back spread out
instead of together (``docs/protocol.md``, "Reconnecting").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

# The shortest wait a refused client is told, and the longest (seconds).
MIN_RETRY_AFTER: Final = 1.0
MAX_RETRY_AFTER: Final = 30.0


class JoinGate:
    """Counts joins in flight; :meth:`enter` admits one or says how long to wait.

    ``capacity`` 0 turns shedding off. ``rate`` is a rough number of joins per second the
    node completes, used to size the retry window (the refused clients of one storm are
    spread over about as many seconds as the node needs to admit them). Not thread-safe:
    used from the event loop only.
    """

    def __init__(
        self,
        capacity: int,
        *,
        rate: float = 500.0,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if capacity < 0:
            raise ValueError("capacity must be 0 (off) or more")
        self.capacity = capacity
        self._rate = rate
        self._uniform = uniform
        self.in_flight = 0
        self.refused = 0  # in the current storm (since the node was last idle)
        self.shed_total = 0

    def enter(self) -> float | None:
        """Admit one join (None) or refuse it: the seconds the client should wait. Each
        admitted join must be followed by exactly one :meth:`leave`."""
        if self.capacity and self.in_flight >= self.capacity:
            self.refused += 1
            self.shed_total += 1
            window = min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, self.refused / self._rate))
            return self._uniform(MIN_RETRY_AFTER, MIN_RETRY_AFTER + window)
        self.in_flight += 1
        return None

    def leave(self) -> None:
        """One admitted join ended (joined, refused, or its socket went away)."""
        self.in_flight = max(0, self.in_flight - 1)
        if self.in_flight == 0:
            self.refused = 0  # the storm is over: the next one starts with a short window

    def stats(self) -> dict[str, int]:
        return {"joins_in_flight": self.in_flight, "joins_shed": self.shed_total}
