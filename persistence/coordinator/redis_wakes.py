"""Wake-up streams of the Redis Cluster journal: ``collab:{wake.<k>}:<stream>``.

On Redis Cluster an ``XREAD`` cannot span slots, and every document's stream has a slot of
its own, so a follower that blocked on the documents' streams would hold one blocked
connection per document. Instead each document belongs to one of ``WAKE_GROUPS`` groups
(its stream's slot modulo the count), and each group has a wake-up stream: every append
adds the document id to its group's wake stream (a journal append as it goes out and once
it returned, :class:`~persistence.coordinator.redis_journal.RedisJournal`). A follower
blocks on the wake streams of the groups it has documents in, a fixed number of reads
whatever the number of documents, and then reads the woken documents' own streams without
blocking (``docs/redis.md``, "Following the streams").

The wake is a hint, not the record: it is written outside the append's script (a different
slot), best effort and without ``WAIT``. A node that dies between the two, or a
failover that loses a wake entry, delays an update (the follower's periodic sweep reads it)
but never loses it: the document's own stream is what is read.

Wakes are written by one background task per journal, which sends everything noted while
its previous round trip was in flight in one pipeline (one ``XADD`` per group, the ids of
the documents appended to, ``MAXLEN ~``): the append never waits for its wake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from crdt.ids import is_valid_document_id
from persistence.coordinator.redis_link import RedisLink
from persistence.coordinator.redis_replies import text
from persistence.coordinator.values import check_count, check_timeout
from persistence.errors import StorageClosed, StorageError

log = logging.getLogger(__name__)

WAKE_GROUPS: Final = 16  # wake streams per stream kind: at most this many blocked reads
WAKE_MAX_LEN: Final = 10_000  # entries kept per wake stream (XADD MAXLEN ~)
WAKE_COUNT: Final = 1_000  # wake entries returned by one read


class WakeChannels:
    """The wake-up streams of one stream kind (``changes`` or ``signals``) on a cluster."""

    def __init__(self, link: RedisLink, stream: str, groups: int = WAKE_GROUPS) -> None:
        if groups < 1:
            raise ValueError("wake groups must be at least 1")
        self._link = link
        self._stream = stream
        self.groups = groups
        self._pending: dict[int, set[str]] = {}
        self._sender: asyncio.Task[None] | None = None

    def key(self, group: int) -> str:
        """``collab:{wake.<group>}:<stream>``: a document id never contains ``.``, so no
        document's key is a wake stream's."""
        if not 0 <= group < self.groups:
            raise ValueError(f"no wake group {group!r}")
        return self._link.tagged("collab", f"wake.{group}", self._stream)

    def group_of(self, stream_key: str) -> int:
        return self._link.slot(stream_key) % self.groups

    # -- writing --------------------------------------------------------------------------

    def note(self, group: int, document_id: str) -> None:
        """Wake the followers of ``group`` for ``document_id`` (call once its append returned;
        sent in the background)."""
        self._pending.setdefault(group, set()).add(document_id)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._pending and not self._link.closed:
            batch, self._pending = self._pending, {}
            try:
                with self._link.edge("journal wake"):
                    if len(batch) == 1:  # the usual case when quiet: no pipeline's overhead
                        ((group, documents),) = batch.items()
                        _ = await self._link.client.xadd(
                            self.key(group),
                            {"d": " ".join(sorted(documents))},
                            maxlen=WAKE_MAX_LEN,
                            approximate=True,
                        )
                        continue
                    pipe = self._link.client.pipeline(transaction=False)
                    for group, documents in batch.items():
                        _ = pipe.xadd(
                            self.key(group),
                            {"d": " ".join(sorted(documents))},
                            maxlen=WAKE_MAX_LEN,
                            approximate=True,
                        )
                    _ = await pipe.execute()
            except StorageClosed:
                return
            except StorageError as exc:
                # The appends are stored: the followers' sweep reads them a little later.
                log.warning("journal: %d wake-ups not sent: %s", len(batch), exc)

    async def aclose(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sender

    # -- following ------------------------------------------------------------------------

    async def position(self, group: int) -> str:
        return await self._link.last_entry_id(
            self.key(group), "journal wake position", "wake entry id"
        )

    async def woken(
        self, group: int, after: str, read: Any, *, timeout: float
    ) -> tuple[str, list[str]]:
        """Wait up to ``timeout`` for wake entries of ``group`` after ``after``; the new
        position and the document ids woken (``read`` is the journal's cancel-safe XREAD)."""
        key = self.key(group)
        timeout = check_timeout(timeout)
        count = check_count(WAKE_COUNT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reply = await read({key: after}, count, self._link.block_ms(deadline))
            documents: set[str] = set()
            for _key, rows in reply or []:
                for entry_id, fields in rows:
                    after = text(entry_id, "wake entry id")
                    raw = fields.get(b"d", b"") if isinstance(fields, dict) else b""
                    for document_id in text(raw, "wake documents").split():
                        if is_valid_document_id(document_id):
                            documents.add(document_id)
            if reply or loop.time() >= deadline:
                return after, sorted(documents)
