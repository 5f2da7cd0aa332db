"""Single flight: concurrent callers asking for the same thing share one run of the work.

A herd of joins on one new room loads it once, creates its document once, reads its rights
once; concurrent readiness probes share one round of checks. The rules, the same wherever
the server shares work this way:

- The work runs as a task of its own, started by the first caller. A caller that is
  cancelled stops waiting; the work goes on for the others (and for whatever the work
  itself stores, a loaded room or a cache entry, which must not be lost half-way).
- Every caller gets the work's result, or re-raises its error. A failed flight is not
  remembered: the next caller starts a new one.
- A key is in flight from the first call until the work returns or raises: :meth:`in_flight`
  says so, and a caller arriving then joins the flight instead of starting another.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterator
from functools import partial
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Flights(Generic[K, V]):
    """The flights under way, one per key."""

    __slots__ = ("_flying",)

    def __init__(self) -> None:
        self._flying: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        """The result of ``work()``, run once for every caller that asks for ``key`` while
        it runs. Raises what the work raises; CancelledError only when this caller is
        cancelled (or the work itself was)."""
        flight = self._flying.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._fly(key, work))
            flight.add_done_callback(partial(self._landed, key))
            self._flying[key] = flight
        return await asyncio.shield(flight)

    async def _fly(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        try:
            return await work()
        finally:
            # Landed the moment the work ends, not a loop turn later with the callback.
            self._forget(key, asyncio.current_task())

    def _landed(self, key: K, flight: asyncio.Future[V]) -> None:
        # Also when the flight was cancelled before its first step (no finally ran then).
        self._forget(key, flight)
        if not flight.cancelled():
            # Retrieved: its callers re-raise it; when every caller was cancelled before it
            # landed nobody is left to, which asyncio would log as an error.
            flight.exception()

    def _forget(self, key: K, flight: object) -> None:
        if self._flying.get(key) is flight:
            del self._flying[key]

    def in_flight(self, key: K) -> bool:
        return key in self._flying

    def __iter__(self) -> Iterator[K]:
        """The keys in flight now (a copy: safe to iterate while flights land)."""
        return iter(list(self._flying))

    def __len__(self) -> int:
        return len(self._flying)
