"""Article views: counted in the stats counters, written to the store in batches; with
shared counters (several nodes), each finished bucket is written by one node only."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import cast

from persistence.coordinator.memory import MemoryCoordinator
from server.cms.articles import ViewCounter
from server.cms.service import CmsPorts


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Written:
    """The store's increments, as CmsQueries.increment receives them."""

    def __init__(self) -> None:
        self.views: dict[str, int] = {}
        self.calls = 0

    async def increment(self, collection: str, doc_id: str, counters: Mapping[str, int]) -> bool:
        assert collection == "knowledge_articles"
        self.calls += 1
        self.views[doc_id] = self.views.get(doc_id, 0) + counters["views"]
        return True


def _ports(coordinator: MemoryCoordinator, written: Written) -> CmsPorts:
    return cast(CmsPorts, SimpleNamespace(stats=coordinator.stats, queries=written))


async def test_embedded_views_are_written_in_one_increment_per_article() -> None:
    clock, written = Clock(), Written()
    coordinator = MemoryCoordinator(clock=clock)
    views = ViewCounter(_ports(coordinator, written), 5.0, clock=clock)
    for _ in range(50):
        await views.count("a")
    await views.count("b")
    assert written.calls == 0  # no write per view
    assert await views.flush() == 51
    assert (written.views, written.calls) == ({"a": 50, "b": 1}, 2)
    await views.count("a")  # the same bucket, after a flush: counted once more, not again
    assert await views.flush() == 1
    assert written.views == {"a": 51, "b": 1}
    assert await views.flush() == 0


async def test_shared_buckets_are_written_once_by_whichever_node_claims_them() -> None:
    clock, written = Clock(), Written()
    coordinator = MemoryCoordinator(clock=clock)  # stands for the Redis both nodes share
    one = ViewCounter(_ports(coordinator, written), 5.0, shared=True, clock=clock)
    two = ViewCounter(_ports(coordinator, written), 5.0, shared=True, clock=clock)
    for _ in range(3):
        await one.count("a")
    await two.count("a")
    assert await one.flush() == 0  # the bucket is not over yet
    clock.now += 5
    flushed = [await one.flush(), await two.flush()]
    assert sorted(flushed) == [0, 4]
    assert written.views == {"a": 4}
    clock.now += 60
    assert await two.flush() + await one.flush() == 0
    assert written.views == {"a": 4}


async def test_a_stopped_node_s_views_are_written_by_another() -> None:
    clock, written = Clock(), Written()
    coordinator = MemoryCoordinator(clock=clock)
    gone = ViewCounter(_ports(coordinator, written), 5.0, shared=True, clock=clock)
    await gone.count("a")
    clock.now += 10
    later = ViewCounter(_ports(coordinator, written), 5.0, shared=True, clock=clock)
    assert await later.flush() == 1
    assert written.views == {"a": 1}
