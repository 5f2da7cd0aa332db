"""Single flight: one run of the work per key for every concurrent caller, run by the first;
a cancelled waiter stops waiting without stopping the work; a cancelled runner hands the work
to a waiter; errors reach every caller and are not remembered."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from server.flights import Flights


class Work:
    """Work that runs until released, counting its runs."""

    def __init__(self, result: object = "done", error: Exception | None = None) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.result = result
        self.error = error

    async def __call__(self) -> object:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result


async def _waiting(flights: Flights[str, object], key: str, work: Work) -> asyncio.Task[object]:
    """A caller that joins the flight of ``key`` under way, once it waits on it."""
    caller = asyncio.create_task(flights.run(key, work))
    await asyncio.sleep(0)  # one turn: the caller has started and waits on the flight
    return caller


async def _cancelled(caller: asyncio.Task[object]) -> None:
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_concurrent_callers_share_one_run_by_the_first() -> None:
    flights: Flights[str, object] = Flights()
    work = Work()
    callers = [asyncio.create_task(flights.run("k", work)) for _ in range(5)]
    await work.started.wait()
    assert flights.in_flight("k")
    assert list(flights) == ["k"]
    work.release.set()
    assert await asyncio.gather(*callers) == ["done"] * 5
    assert work.runs == 1
    assert not flights.in_flight("k")
    assert len(flights) == 0


async def test_other_keys_fly_on_their_own() -> None:
    flights: Flights[str, object] = Flights()
    a, b = Work("a"), Work("b")
    first = asyncio.create_task(flights.run("a", a))
    second = asyncio.create_task(flights.run("b", b))
    await a.started.wait()
    await b.started.wait()
    assert sorted(flights) == ["a", "b"]
    a.release.set()
    b.release.set()
    assert (await first, await second) == ("a", "b")


async def test_a_cancelled_waiter_stops_waiting_and_the_work_goes_on() -> None:
    flights: Flights[str, object] = Flights()
    work = Work()
    runner = asyncio.create_task(flights.run("k", work))
    await work.started.wait()
    await _cancelled(await _waiting(flights, "k", work))
    assert flights.in_flight("k")
    work.release.set()
    assert await runner == "done"
    assert work.runs == 1


async def test_a_cancelled_runner_hands_the_work_to_a_waiter() -> None:
    flights: Flights[str, object] = Flights()
    work = Work()
    runner = asyncio.create_task(flights.run("k", work))
    await work.started.wait()
    waiters = [await _waiting(flights, "k", work) for _ in range(3)]
    work.started.clear()
    await _cancelled(runner)
    await asyncio.wait_for(work.started.wait(), 10)  # a waiter runs it again
    work.release.set()
    # Not the runner's CancelledError: one waiter ran the work again, the others waited.
    assert await asyncio.wait_for(asyncio.gather(*waiters), 10) == ["done"] * 3
    assert work.runs == 2
    assert not flights.in_flight("k")


async def test_an_error_reaches_every_caller_and_is_not_remembered() -> None:
    flights: Flights[str, object] = Flights()
    failing = Work(error=LookupError("gone"))
    callers = [asyncio.create_task(flights.run("k", failing)) for _ in range(3)]
    await failing.started.wait()
    failing.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, LookupError) for result in results)
    assert not flights.in_flight("k")
    again = Work("second")
    again.release.set()
    assert await flights.run("k", again) == "second"  # a new flight, not the old error


async def test_an_error_no_waiter_is_left_for_is_not_reported_as_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        flights: Flights[str, object] = Flights()
        failing = Work(error=LookupError("gone"))
        runner = asyncio.create_task(flights.run("k", failing))
        await failing.started.wait()
        await _cancelled(await _waiting(flights, "k", failing))
        failing.release.set()
        with pytest.raises(LookupError):
            await runner
        del runner
        gc.collect()  # an unretrieved exception is reported when its future is collected
        assert reported == []
    finally:
        loop.set_exception_handler(None)
