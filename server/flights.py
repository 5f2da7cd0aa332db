"""Single flight: concurrent callers asking for the same thing share one run of the work.

A herd of joins on one new room loads it once, creates its document once, reads its rights
once; concurrent readiness probes share one round of checks. The rules, the same wherever
the server shares work this way:

- The first caller runs the work itself, inline: no task, no extra turn of the event loop
  on a join's path (a herd's joins wait on several of these in a row).
- A waiter that is cancelled stops waiting; the work goes on for the others.
- When the caller running the work is cancelled, the work stops with it (nothing half-done
  is kept: a load registers its room only once complete) and one of the waiters runs it
  again. A waiter never mistakes that cancellation for its own.
- Every caller gets the work's result, or re-raises its error. A failed flight is not
  remembered: the next caller starts a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterator
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
        cancelled."""
        while True:
            flight = self._flying.get(key)
            if flight is None:
                return await self._lead(key, work)
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # this caller was cancelled
                # The caller running the work was: run it again (or wait for who does).

    async def _lead(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        flight: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._flying[key] = flight
        try:
            value = await work()
        except asyncio.CancelledError:
            flight.cancel()  # the waiters run it again
            raise
        except BaseException as exc:
            flight.set_exception(exc)
            # Retrieved: the waiters re-raise it; when every one of them was cancelled
            # nobody else would, which asyncio would log as an error.
            flight.exception()
            raise
        else:
            flight.set_result(value)
            return value
        finally:
            del self._flying[key]

    def in_flight(self, key: K) -> bool:
        return key in self._flying

    def __iter__(self) -> Iterator[K]:
        """The keys in flight now (a copy: safe to iterate while flights land)."""
        return iter(list(self._flying))

    def __len__(self) -> int:
        return len(self._flying)
