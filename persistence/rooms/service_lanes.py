"""The per-room queues of :class:`persistence.rooms.service.ServiceRoomStore`.

Each room has one lane: a FIFO of operations and one task working through it (started when
the first operation arrives, gone when the lane is empty). The operations of a room run in
call order, one at a time; rooms run in parallel. Appends of one room that queued up while the
previous operation was running are merged into one CRDT update (up to :data:`MAX_BATCH`), so
a burst of keystrokes costs one journal write. Whatever an operation raises ends in its
future: a :class:`~persistence.errors.StorageError` as raised, a ValueError (refused by a
backend) and any other exception wrapped in a StorageError, chained to its cause.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from crdt.document import merge_updates
from crdt.errors import InvalidUpdate
from crdt.ids import RoomName
from persistence.errors import StorageError
from persistence.rooms.service_positions import EntryKey

# One logger for the whole service store (its operators filter on one name).
log = logging.getLogger("persistence.rooms.service")

OpKind = Literal["append", "compact", "load"]

MAX_BATCH: Final = 512
"""Appends of one room waiting together are merged into one stream entry, up to this many."""


@dataclass(slots=True)
class Op:
    """One queued call: what it is, its bytes (the update or the state), its future."""

    kind: OpKind
    payload: bytes
    future: asyncio.Future[Any] = field(repr=False)
    claim: EntryKey | None = None  # follow mode: what a compaction covers, fixed at the call


Perform = Callable[[RoomName, Op], Awaitable[object]]
"""Runs one operation and returns its result (None for append and compact)."""


@dataclass(slots=True)
class _Lane:
    """The queue of one room and the task working through it (None when idle)."""

    room: RoomName
    ops: deque[Op] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class RoomLanes:
    """The lanes of every room, running operations with ``perform``."""

    def __init__(self, perform: Perform) -> None:
        self._perform_op = perform
        self._lanes: dict[str, _Lane] = {}
        self.appends_merged = 0
        """How many appends shared a journal write with an earlier one."""

    def submit(
        self, name: RoomName, kind: OpKind, payload: bytes, claim: EntryKey | None = None
    ) -> asyncio.Future[Any]:
        """Queue an operation of room ``name``; the future resolves with its outcome."""
        room = str(name)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        lane = self._lanes.get(room)
        if lane is None:
            lane = self._lanes[room] = _Lane(name)
        lane.ops.append(Op(kind, payload, future, claim))
        if lane.task is None:
            lane.task = loop.create_task(self._drain(room, lane), name=f"room store {room}")
        return future

    async def wait_idle(self) -> None:
        """Wait until the operations queued so far are done."""
        busy = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if busy:
            await asyncio.wait(busy)

    async def _drain(self, room: str, lane: _Lane) -> None:
        """Run the room's operations one at a time, in call order, until the queue is empty."""
        try:
            while lane.ops:
                op = lane.ops[0]
                batch = self._appends_at_head(lane) if op.kind == "append" else []
                if len(batch) > 1:
                    await self._perform_batch(lane.room, batch)
                    for _ in batch:
                        lane.ops.popleft()
                    continue
                if not op.future.done():  # a caller may have cancelled its load
                    await self._perform(lane.room, op)
                lane.ops.popleft()
        except asyncio.CancelledError:
            for op in lane.ops:
                op.future.cancel()
            lane.ops.clear()
            raise
        finally:
            lane.task = None
            if not lane.ops and self._lanes.get(room) is lane:
                del self._lanes[room]

    @staticmethod
    def _appends_at_head(lane: _Lane) -> list[Op]:
        """The appends queued at the head of a lane (at most MAX_BATCH), in order."""
        batch: list[Op] = []
        for op in lane.ops:
            if op.kind != "append" or len(batch) >= MAX_BATCH:
                break
            batch.append(op)
        return batch

    async def _perform_batch(self, room: RoomName, batch: list[Op]) -> None:
        """Several appends of one room that queued up while the previous write was in
        flight: merged into one CRDT update, written as one stream entry, each future
        resolved with the outcome. (Bytes that are not CRDT updates go one by one.)"""
        try:
            merged = merge_updates(*(op.payload for op in batch))
        except InvalidUpdate:
            for op in batch:
                await self._perform(room, op)
            return
        carrier = Op("append", merged, asyncio.get_running_loop().create_future())
        await self._perform(room, carrier)
        exc = carrier.future.exception()
        for op in batch:
            if op.future.done():
                continue
            if exc is None:
                op.future.set_result(None)
            else:
                op.future.set_exception(exc)
        self.appends_merged += len(batch) - 1

    async def _perform(self, room: RoomName, op: Op) -> None:
        try:
            result = await self._perform_op(room, op)
        except StorageError as exc:
            outcome: BaseException | None = exc
        except ValueError as exc:  # refused by the journal or the content store
            outcome = StorageError(f"{op.kind} of room {room} refused: {exc}")
            outcome.__cause__ = exc
        except Exception as exc:
            log.exception("room %s: %s failed unexpectedly", room, op.kind)
            outcome = StorageError(f"{op.kind} of room {room} failed: {exc!r}")
            outcome.__cause__ = exc
        else:
            outcome = None
        if op.future.done():
            return
        if outcome is None:
            op.future.set_result(result)
        else:
            op.future.set_exception(outcome)


__all__ = ["MAX_BATCH", "Op", "OpKind", "Perform", "RoomLanes"]
