"""Single flight: one run of the work per key for every concurrent caller; a cancelled caller
stops waiting without stopping the work; errors reach every caller and are not remembered."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
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


async def _abandoned_flight(
    flights: Flights[str, object], work: Work, run: Callable[[], Awaitable[object]]
) -> None:
    """Start a flight of ``run`` with one caller, cancel the caller once the work started,
    let the work finish and wait until the flight has landed (its callbacks run too)."""
    caller = asyncio.create_task(flights.run("k", run))
    await work.started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    flight = flights._flying["k"]
    work.release.set()
    # Done callbacks run in the order they were added: the flight's own first.
    await asyncio.wait_for(asyncio.wait({flight}), 10)
    assert not flights.in_flight("k")


async def test_concurrent_callers_share_one_run() -> None:
    flights: Flights[str, object] = Flights()
    work = Work()
    callers = [asyncio.create_task(flights.run("k", work)) for _ in range(5)]
    await work.started.wait()
    assert flights.in_flight("k")
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


async def test_a_cancelled_first_caller_does_not_stop_the_work_for_the_others() -> None:
    flights: Flights[str, object] = Flights()
    work = Work()
    first = asyncio.create_task(flights.run("k", work))
    await work.started.wait()
    second = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)  # the second caller is waiting on the flight
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert flights.in_flight("k")
    work.release.set()
    assert await second == "done"
    assert work.runs == 1


async def test_the_work_finishes_when_every_caller_went_away() -> None:
    flights: Flights[str, object] = Flights()
    stored: list[object] = []
    work = Work()

    async def work_that_stores() -> object:
        stored.append(await work())
        return stored[-1]

    await _abandoned_flight(flights, work, work_that_stores)
    assert stored == ["done"]


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


async def test_an_error_nobody_waits_for_is_not_reported_as_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        flights: Flights[str, object] = Flights()
        failing = Work(error=LookupError("gone"))
        await _abandoned_flight(flights, failing, failing)
        gc.collect()  # an unretrieved exception is reported when its task is collected
        assert reported == []
    finally:
        loop.set_exception_handler(None)


async def test_a_flight_cancelled_before_its_first_step_leaves_no_key_behind() -> None:
    flights: Flights[str, object] = Flights()
    work = Work()
    caller = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)  # the caller started the flight; the flight has not stepped yet
    assert flights.in_flight("k")
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task() and task is not caller:
            task.cancel()  # the flight
    with pytest.raises(asyncio.CancelledError):
        await caller  # the work itself was cancelled: its callers see that
    await asyncio.sleep(0)
    assert not flights.in_flight("k")
    assert work.runs == 0
