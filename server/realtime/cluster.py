"""Several server nodes on one document, through Redis (service mode).

Every node appends the updates of its clients to the document's change stream
``collab:{documentId}:changes`` before it broadcasts them (the room store does that). Each node
also *follows* the streams of the documents it has rooms of, from the position it had when it
loaded the first room of the document: one ``XREAD BLOCK`` over all of them on a single
Redis; on Redis Cluster, where a read cannot span slots, one blocking read per wake group
and non-blocking reads of the woken documents, with a sweep every second
(:mod:`server.realtime.follow`). An entry from
another node is applied to the local room and relayed to the local clients (it is durable
already); the node's own entries are skipped. A stream read from a position cannot miss an
entry, across reconnects and Redis restarts too, so nodes converge.

What is not a CRDT update crosses nodes through ``collab:{documentId}:signals``, a second,
length-capped stream followed the same way: awareness (cursors, presence) and application
events (locks, presence changes, comments). Signals are not durable state: a node that was
away misses old ones, and nothing replays them at load.

A room that is loading when entries of it arrive gets them once it is registered; a room
being rebuilt gets them after the rebuild. With a following room store
(:class:`~persistence.rooms.service.ServiceRoomStore` ``follow=True``) the follower tells the
store which entries each room has applied, so a compaction never claims an entry of another
node that this node has not applied yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Final

from crdt.ids import RoomName
from persistence.coordinator.ports import ChangeJournal
from persistence.coordinator.values import JournalEntry
from persistence.errors import StorageClosed, StorageError
from protocol import awareness as awareness_codec
from protocol.awareness import AwarenessEntry, AwarenessUpdate
from protocol.errors import ProtocolError
from protocol.events import AppEvent, decode_event, encode_event
from server.hooks import Hooks, RoomView
from server.realtime.follow import StreamFollower
from server.realtime.registry import RoomRegistry

log = logging.getLogger(__name__)

USER_CHANNEL: Final = "__users"  # a reserved document id: events for users, wherever they are
AWARENESS: Final = 1
EVENT: Final = 2


class Cluster:
    """Follows the change and signal streams of the documents loaded on this node.

    Subscribes to ``hooks.on_awareness`` (publishing accepted awareness to the other nodes)
    when made, and to ``before_load`` / ``after_load`` when started.
    """

    def __init__(
        self,
        registry: RoomRegistry,
        journal: ChangeJournal,
        signals: ChangeJournal,
        node_id: str,
        *,
        on_event: Callable[[str, str | None, AppEvent], None],
        mark_applied: Callable[[str, str], None] | None = None,
        hooks: Hooks,
    ) -> None:
        self._registry = registry
        self._hooks = hooks
        hooks.on_awareness.subscribe(
            lambda accepted: self.publish_awareness(accepted.room, accepted.entries)
        )
        self._journal = journal
        self._signals = signals
        self.node_id = node_id
        self._on_event = on_event
        self._mark_applied = mark_applied
        self._changes_at: dict[str, str] = {}
        self._signals_at: dict[str, str] = {}
        self._pending: dict[str, list[bytes]] = defaultdict(list)
        self.followers = (
            StreamFollower(journal, self._changes_at, self._on_change, self._prune),
            StreamFollower(signals, self._signals_at, self._on_signal, self._prune),
        )
        self._outbox: asyncio.Queue[tuple[str, str | None, bytes]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.applied = 0
        self.signals_received = 0
        self.signals_sent = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, tasks: asyncio.TaskGroup) -> None:
        self._hooks.before_load.subscribe(lambda loading: self.before_load(loading.room))
        self._hooks.after_load.subscribe(lambda loaded: self.after_load(loaded.room))
        # Signals addressed to users (notifications) travel on a channel every node follows.
        self._signals_at[USER_CHANNEL] = f"{int(time.time() * 1000)}-0"
        self._tasks = [
            *(tasks.create_task(follower.run()) for follower in self.followers),
            tasks.create_task(self._publish()),
        ]

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until the queued signals are sent."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._outbox.join()

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def stats(self) -> dict[str, int]:
        return {
            "cluster_documents_followed": len(self._changes_at),
            "cluster_updates_applied": self.applied,
            "cluster_signals_received": self.signals_received,
            "cluster_signals_sent": self.signals_sent,
        }

    # -- following ------------------------------------------------------------------------

    async def before_load(self, name: RoomName) -> None:
        """Start following the document before its room is read from storage: anything
        appended after this point comes through the stream (twice at worst: harmless)."""
        document_id = name.document_id
        if document_id in self._changes_at:
            return
        changes, signals = await asyncio.gather(
            self._journal.last_id(document_id), self._signals.last_id(document_id)
        )
        if document_id not in self._changes_at:
            self._changes_at[document_id] = changes
            self._signals_at[document_id] = signals
            for follower in self.followers:
                follower.added(document_id)

    def after_load(self, room: RoomView) -> None:
        for update in self._pending.pop(room.key, []):
            room.apply_remote(update)

    def _prune(self) -> None:
        """Stop following documents this node has no room of any more."""
        loaded = {r.name.document_id for r in self._registry.rooms()}
        pruned = False
        for document_id in list(self._changes_at):
            if document_id not in loaded and not self._registry.is_loading_document(document_id):
                del self._changes_at[document_id]
                self._signals_at.pop(document_id, None)
                pruned = True
        if pruned:
            for follower in self.followers:
                follower.refresh()

    def _on_change(self, entry: JournalEntry) -> None:
        key = _room_key(entry)
        room = self._registry.room(key)
        if entry.origin != self.node_id:
            if room is not None:
                room.apply_remote(entry.update)
                self.applied += 1
            elif self._registry.is_loading(key):
                self._pending[key].append(entry.update)
        if room is not None and self._mark_applied is not None:
            self._mark_applied(key, entry.id)

    def _on_signal(self, entry: JournalEntry) -> None:
        if entry.origin == self.node_id:
            return
        self.signals_received += 1
        kind, payload = entry.update[0], entry.update[1:]
        try:
            if kind == AWARENESS:
                room = self._registry.room(_room_key(entry))
                if room is not None:
                    room.apply_remote_awareness(payload)
            elif kind == EVENT:
                self._on_event(entry.document_id, entry.section_id, decode_event(payload))
        except ProtocolError as exc:
            log.warning("cluster: malformed signal %s of %s: %s", entry.id, entry.document_id, exc)

    # -- publishing -----------------------------------------------------------------------

    def publish_awareness(self, room: RoomView, entries: list[AwarenessEntry]) -> None:
        payload = awareness_codec.encode(AwarenessUpdate(tuple(entries)))
        self._outbox.put_nowait(
            (room.name.document_id, room.name.section_id, bytes((AWARENESS,)) + payload)
        )

    def publish_event(self, document_id: str, section_id: str | None, event: AppEvent) -> None:
        self._outbox.put_nowait((document_id, section_id, bytes((EVENT,)) + encode_event(event)))

    async def _publish(self) -> None:
        """Send signals in the order they were made, one at a time (a signal lost while
        Redis is down is dropped after a few tries: signals are not state)."""
        while True:
            document_id, section_id, data = await self._outbox.get()
            try:
                await self._send_signal(document_id, section_id, data)
            finally:
                self._outbox.task_done()

    async def _send_signal(self, document_id: str, section_id: str | None, data: bytes) -> None:
        for attempt in range(3):
            try:
                await self._signals.append(document_id, section_id, data, origin=self.node_id)
            except StorageClosed:
                return
            except StorageError as exc:
                if attempt == 2:
                    log.warning("cluster: signal for %s dropped: %s", document_id, exc)
                    return
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                self.signals_sent += 1
                return


def _room_key(entry: JournalEntry) -> str:
    return (
        entry.document_id if entry.section_id is None else f"{entry.document_id}/{entry.section_id}"
    )
