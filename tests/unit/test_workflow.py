"""The document workflow without HTTP: transitions and the per-document lock."""

from __future__ import annotations

import asyncio

import pytest

from server.documents.workflow import TRANSITIONS, KeyedLocks, check_transition
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
    locks = KeyedLocks()
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
    locks = KeyedLocks()
    async with locks.hold("a"):
        await asyncio.wait_for(_enter(locks, "b"), 5)
        assert len(locks) == 1
    assert len(locks) == 0


async def _enter(locks: KeyedLocks, key: str) -> None:
    async with locks.hold(key):
        pass
