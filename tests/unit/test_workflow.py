"""The document workflow without HTTP: transitions and the per-document lock."""

from __future__ import annotations

import asyncio

import pytest

from persistence.keyed import Hold, KeyedLocks
from server.documents.workflow import TRANSITIONS, check_transition
from server.errors import ConflictError, problem


def test_allowed_transitions_pass() -> None:
    for current, targets in TRANSITIONS.items():
        for target in targets:
            check_transition(current, target)


def test_a_refused_transition_is_a_conflict_naming_what_is_allowed() -> None:
    with pytest.raises(ConflictError) as caught:
        check_transition("published", "draft")
    found = problem(caught.value)
    assert (found.status, found.title) == (409, "invalid status transition")
    assert found.extra == {"currentStatus": "published", "allowed": ["archived"]}


async def test_one_holder_per_document_and_the_lock_is_dropped_after() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    inside = 0
    most = 0
    entered = asyncio.Event()

    async def hold(key: str) -> None:
        nonlocal inside, most
        async with locks.hold(key):
            inside += 1
            most = max(most, inside)
            entered.set()
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.wait_for(asyncio.gather(*(hold("doc") for _ in range(5))), 5)
    assert entered.is_set()
    assert most == 1
    assert len(locks) == 0


async def test_other_documents_do_not_wait() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    async with locks.hold("a"):
        await asyncio.wait_for(_enter(locks, "b"), 5)
        assert len(locks) == 1
    assert len(locks) == 0


async def _enter(locks: KeyedLocks[str], key: str) -> None:
    async with locks.hold(key):
        pass


async def test_a_place_is_counted_before_it_is_entered_and_given_up_when_cancelled() -> None:
    locks: KeyedLocks[int] = KeyedLocks()
    first = locks.hold(1)
    second = locks.hold(1)
    assert locks.waiting(1) == 2
    assert locks.waiting(2) == 0
    async with first:
        waiter = asyncio.ensure_future(_enter_place(second))
        await asyncio.sleep(0)  # the waiter is now queued behind the holder
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert locks.waiting(1) == 1
    assert locks.waiting(1) == 0
    assert len(locks) == 0
    never = locks.hold(3)
    never.cancel()
    never.cancel()  # idempotent
    assert len(locks) == 0


async def test_waiters_enter_in_the_order_they_began_to_wait() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    order: list[int] = []

    async def run(i: int) -> None:
        async with locks.hold("k"):
            order.append(i)
            await asyncio.sleep(0)

    async with locks.hold("k"):  # everyone queues behind this holder, in task order
        tasks = [asyncio.ensure_future(run(i)) for i in (3, 0, 5, 1, 4, 2)]
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [3, 0, 5, 1, 4, 2]
    assert len(locks) == 0


async def _enter_place(place: Hold[int]) -> None:
    async with place:
        pass
