"""The hook registry: order, priority, veto, unsubscribe, and what it refuses."""

from __future__ import annotations

import asyncio

import pytest

from crdt.ids import RoomName
from server.hooks import AsyncHook, Changed, EventHandlers, Hook, Hooks, Loading, Rejected

ROOM = RoomName("doc", None)


def test_subscribers_run_in_subscription_order() -> None:
    hook: Hook[Changed] = Hook("on_change")
    seen: list[str] = []
    hook.subscribe(lambda p: seen.append(f"a {p.room}"))
    hook.subscribe(lambda p: seen.append(f"b {p.room}"))
    hook.subscribe(lambda p: seen.append(f"c {p.room}"))
    hook(Changed(ROOM))
    assert seen == ["a doc", "b doc", "c doc"]


def test_higher_priority_runs_first_ties_keep_subscription_order() -> None:
    hook: Hook[Changed] = Hook("on_change")
    seen: list[str] = []
    hook.subscribe(lambda p: seen.append("low"), priority=-5)
    hook.subscribe(lambda p: seen.append("first zero"))
    hook.subscribe(lambda p: seen.append("high"), priority=10)
    hook.subscribe(lambda p: seen.append("second zero"))
    hook(Changed(ROOM))
    assert seen == ["high", "first zero", "second zero", "low"]


def test_unsubscribe_removes_only_that_callback_and_is_idempotent() -> None:
    hook: Hook[Changed] = Hook("on_change")
    seen: list[str] = []
    first = hook.subscribe(lambda p: seen.append("a"))
    hook.subscribe(lambda p: seen.append("b"))
    first.unsubscribe()
    first.unsubscribe()
    hook(Changed(ROOM))
    assert seen == ["b"]
    assert len(hook) == 1


def test_empty_hook_is_falsy_and_firing_it_does_nothing() -> None:
    hook: Hook[Changed] = Hook("on_change")
    assert not hook
    hook(Changed(ROOM))
    subscription = hook.subscribe(lambda p: None)
    assert hook
    subscription.unsubscribe()
    assert not hook


def test_one_subscriber_is_called_directly() -> None:
    """The hot path's cost: firing calls the subscriber itself, no loop in between."""
    hook: Hook[Changed] = Hook("on_change")

    def callback(payload: Changed) -> None:
        return None

    hook.subscribe(callback)
    assert hook.fire is callback


def test_an_exception_stops_the_later_subscribers_and_reaches_the_caller() -> None:
    hook: Hook[Changed] = Hook("on_connect", vetoable=True)
    seen: list[str] = []

    def refuse(payload: Changed) -> None:
        raise Rejected(f"no edits to {payload.room}")

    hook.subscribe(refuse, priority=1)
    hook.subscribe(lambda p: seen.append("later"))
    with pytest.raises(Rejected, match="no edits to doc"):
        hook(Changed(ROOM))
    assert seen == []


def test_async_hook_awaits_in_order_and_vetoes() -> None:
    hook: AsyncHook[Loading] = AsyncHook("before_load", vetoable=True)
    seen: list[str] = []

    async def slow(payload: Loading) -> None:
        await asyncio.sleep(0)
        seen.append(f"slow {payload.room}")

    async def fast(payload: Loading) -> None:
        seen.append("fast")

    async def refuse(payload: Loading) -> None:
        raise Rejected("closed for maintenance")

    hook.subscribe(fast, priority=-1)
    hook.subscribe(slow)
    asyncio.run(hook(Loading(ROOM)))
    assert seen == ["slow doc", "fast"]
    hook.subscribe(refuse, priority=5)
    with pytest.raises(Rejected, match="maintenance"):
        asyncio.run(hook(Loading(ROOM)))
    assert seen == ["slow doc", "fast"]


def test_subscribe_refuses_what_is_not_a_callable_or_an_int_priority() -> None:
    hook: Hook[Changed] = Hook("on_change")
    with pytest.raises(TypeError, match="callable"):
        hook.subscribe("nope")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="priority"):
        hook.subscribe(lambda p: None, priority=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="priority"):
        hook.subscribe(lambda p: None, priority=True)
    assert not hook


def test_payloads_are_frozen() -> None:
    payload = Changed(ROOM)
    with pytest.raises(AttributeError):
        payload.room = RoomName("other", None)  # type: ignore[misc]


def test_event_handlers_one_per_type() -> None:
    handlers = EventHandlers()

    def handler(room: object, conn: object, event: object) -> None:
        return None

    subscription = handlers.handle("lock", handler)
    assert handlers.get("lock") is handler
    with pytest.raises(ValueError, match="already has a handler"):
        handlers.handle("lock", handler)
    subscription.unsubscribe()
    assert handlers.get("lock") is None
    assert handlers.get("unknown") is None


def test_hooks_names_and_veto_flags() -> None:
    hooks = Hooks()
    assert hooks.on_connect.vetoable
    assert not hooks.on_change.vetoable
    assert hooks.on_change.name == "on_change"
    assert "on_change: 0 subscribed" in repr(hooks.on_change)
