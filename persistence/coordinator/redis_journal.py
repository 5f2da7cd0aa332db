"""The change stream of the Redis coordinator: ``collab:{documentId}:changes``.

XADD to append, XRANGE to read, XREAD BLOCK to tail, XTRIM MINID to trim (``docs/redis.md``).
On Redis Cluster each append also wakes the document's group
(:mod:`~persistence.coordinator.redis_wakes`), which is what the followers block on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

from crdt.ids import check_document_id
from persistence.coordinator.redis_link import RedisLink
from persistence.coordinator.redis_replies import key_bytes, section_field, text
from persistence.coordinator.redis_wakes import WAKE_GROUPS, WakeChannels
from persistence.coordinator.values import (
    JournalEntry,
    check_count,
    check_section,
    check_timeout,
    check_token,
    check_update,
    parse_entry_id,
)
from persistence.errors import DocumentFrozen, StorageClosed, StorageCorrupted

_U64_MAX: Final = 2**64 - 1


def _successor(entry_id: tuple[int, int]) -> str:
    ms, seq = entry_id
    return f"{ms}-{seq + 1}" if seq < _U64_MAX else f"{ms + 1}-0"


class RedisJournal:
    """XADD / XRANGE / XREAD BLOCK / XTRIM MINID on ``collab:{documentId}:changes``.

    ``tail`` is one ``XREAD BLOCK`` over every stream asked for; a wait longer than half the
    socket timeout is split into several XREADs so the socket never times out under it.
    """

    def __init__(
        self,
        link: RedisLink,
        *,
        stream: str = "changes",
        max_len: int | None = None,
        guarded: bool = False,
        wake_groups: int = WAKE_GROUPS,
    ) -> None:
        """``stream`` names the key family (``collab:{documentId}:{stream}``); ``max_len``
        caps each stream (approximately, XADD MAXLEN ~) for streams that are not a journal
        (``signals``: awareness and events crossing nodes). ``guarded``: appends check the
        document's freeze flag ``collab:{documentId}:frozen`` in the same script.
        ``wake_groups``: on a cluster, how many wake-up streams the documents share."""
        self._link = link
        self._stream = stream
        self._max_len = max_len
        self._guarded = guarded
        self._wakes = WakeChannels(link, stream, wake_groups) if link.cluster else None

    def _key(self, document_id: str) -> str:
        return self._link.tagged("collab", check_document_id(document_id), self._stream)

    def _frozen_key(self, document_id: str) -> str:
        return self._link.tagged("collab", check_document_id(document_id), "frozen")

    def wake_group(self, document_id: str) -> int | None:
        """On a cluster, the document's wake group (its stream's slot modulo the number of
        groups); None on a single server, where one ``tail`` blocks on every document."""
        key = self._key(document_id)
        return None if self._wakes is None else self._wakes.group_of(key)

    def _wake_channels(self) -> WakeChannels:
        if self._wakes is None:
            raise ValueError("no wake groups on a single Redis: tail the documents instead")
        return self._wakes

    async def wake_position(self, group: int) -> str:
        return await self._wake_channels().position(group)

    async def woken(self, group: int, after: str, *, timeout: float) -> tuple[str, list[str]]:
        after = "-".join(map(str, parse_entry_id(after)))
        return await self._wake_channels().woken(group, after, self._xread, timeout=timeout)

    async def aclose(self) -> None:
        """Stop sending wake-ups (the coordinator is closing)."""
        if self._wakes is not None:
            await self._wakes.aclose()

    def _woke(self, document_id: str) -> None:
        if self._wakes is not None:
            self._wakes.note(self._wakes.group_of(self._key(document_id)), document_id)

    async def freeze(self, document_id: str) -> None:
        key = self._frozen_key(document_id)
        await self._link.replicated("journal freeze", key, ("SET", key, b"1"))

    async def thaw(self, document_id: str) -> None:
        key = self._frozen_key(document_id)
        await self._link.replicated("journal thaw", key, ("DEL", key))

    async def append(
        self,
        document_id: str,
        section_id: str | None,
        update: bytes,
        *,
        origin: str | None = None,
        force: bool = False,
    ) -> str:
        key = self._key(document_id)
        check_section(section_id)
        check_update(update)
        if origin is not None:
            check_token(origin, "origin")
        if self._guarded and not force:
            # On a cluster, wake the followers as the append goes out and again once it
            # returned: the first lets them read the entry without waiting for the append's
            # WAIT (it may come before the entry: the second, never).
            self._woke(document_id)
            entry = await self._link.run_replicated(
                "JOURNAL_APPEND",
                "journal append",
                [key, self._frozen_key(document_id)],
                [section_field(section_id), update, origin or ""],
            )
            if entry is None:
                raise DocumentFrozen(f"document {document_id} is frozen (in review)")
            self._woke(document_id)
            return text(entry, "entry id")
        fields: dict[str | bytes, str | bytes] = {
            "section": section_field(section_id),
            "update": update,
            "origin": origin or "",
        }
        if self._max_len is None:
            # A journal entry (a drained spool's): acknowledged by replicas on a cluster.
            command = ("XADD", key, "*", *(part for pair in fields.items() for part in pair))
            self._woke(document_id)  # as above: now and once it returned
            appended = await self._link.replicated("journal append", key, command)
            self._woke(document_id)
            return text(appended, "entry id")
        with self._link.edge("journal append"):
            entry_id = await self._link.client.xadd(
                key,
                fields,  # type: ignore[arg-type]
                maxlen=self._max_len,
                approximate=True,
            )
        self._woke(document_id)
        return text(entry_id, "entry id")

    @staticmethod
    def _entry(document_id: str, entry_id: object, fields: object) -> JournalEntry:
        if not isinstance(fields, dict):
            raise StorageCorrupted(f"journal entry of {document_id} is not a field map")
        update = fields.get(b"update")
        if not isinstance(update, bytes) or not update:
            raise StorageCorrupted(f"journal entry of {document_id} without an update")
        section = text(fields.get(b"section", b""), "entry section")
        origin = text(fields.get(b"origin", b""), "entry origin")
        return JournalEntry(
            text(entry_id, "entry id"), document_id, section or None, update, origin or None
        )

    async def read(
        self, document_id: str, after_id: str | None = None, count: int = 100
    ) -> list[JournalEntry]:
        key = self._key(document_id)
        start = "-" if after_id is None else "(" + "-".join(map(str, parse_entry_id(after_id)))
        count = check_count(count)
        with self._link.edge("journal read"):
            rows: Any = await self._link.client.xrange(key, min=start, count=count)
        return [self._entry(document_id, entry_id, fields) for entry_id, fields in rows]

    async def last_id(self, document_id: str) -> str:
        return await self._link.last_entry_id(self._key(document_id), "journal last id", "entry id")

    async def tail(
        self, positions: Mapping[str, str], *, timeout: float, count: int = 100
    ) -> list[JournalEntry]:
        streams: dict[str, str] = {}
        documents: dict[bytes, str] = {}
        for document_id, position in positions.items():
            key = self._key(document_id)
            streams[key] = "-".join(map(str, parse_entry_id(position)))
            documents[key.encode()] = document_id
        timeout = check_timeout(timeout)
        count = check_count(count)
        if not streams:
            return []
        groups: dict[int, dict[str, str]] = {}
        for key, position in streams.items():
            groups.setdefault(self._link.slot(key), {})[key] = position
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            block = self._link.block_ms(deadline)
            if len(groups) == 1:
                replies = [await self._xread(streams, count, block)]
            else:
                replies = await self._xread_groups(list(groups.values()), count, block)
            found = [
                self._entry(documents[key_bytes(key)], entry_id, fields)
                for reply in replies
                for key, rows in (reply or [])
                for entry_id, fields in rows
            ]
            if found or loop.time() >= deadline:
                return found

    async def _xread_groups(
        self, groups: list[dict[str, str]], count: int, block: int | None
    ) -> list[Any]:
        """Streams of several cluster slots: one XREAD per slot (a multi-key command must stay
        in one slot). First without blocking, all at once; if nothing came, blocking reads
        of every slot until the first returns (the others are cancelled, which costs their
        connections: the cluster follower blocks on wake streams instead, ``wake_group``)."""
        replies = await self._xread_now(groups, count)
        if any(replies) or block is None:
            return list(replies)
        reads = [asyncio.ensure_future(self._xread(group, count, block)) for group in groups]
        try:
            await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for read in reads:
                read.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
        done = [read for read in reads if read.done() and not read.cancelled()]
        for read in done:
            read.result()  # raises what the read raised (StorageClosed, StorageUnavailable)
        return [read.result() for read in done]

    async def _xread_now(self, groups: list[dict[str, str]], count: int) -> list[Any]:
        """What a non-blocking XREAD of each group would return, read with one XRANGE per
        stream, all in one pipeline (one connection per cluster node, whatever the number
        of slots; XRANGE names its key where the cluster client finds it without asking
        the server, which it must do for each XREAD)."""
        keys = [key for streams in groups for key in streams]
        with self._link.edge("journal read many"):
            pipe = self._link.client.pipeline(transaction=False)
            for streams in groups:
                for key, position in streams.items():
                    _ = pipe.xrange(key, min="(" + position, count=count)
            replies = await pipe.execute()
        return [[[key, rows] for key, rows in zip(keys, replies, strict=True) if rows]]

    async def _xread(self, streams: dict[str, str], count: int, block: int | None) -> Any:
        """One XREAD; a blocked one ends at once with StorageClosed when ``aclose`` runs."""
        with self._link.edge("journal tail", blocking=block is not None):
            read = asyncio.ensure_future(self._xread_command(streams, count, block))
            closing = asyncio.ensure_future(self._link.closing.wait())
            try:
                await asyncio.wait({read, closing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (read, closing):
                    waiter.cancel()
                await asyncio.gather(read, closing, return_exceptions=True)
            if not read.cancelled():
                return read.result()
        raise StorageClosed("the coordinator is closed")

    async def _xread_command(self, streams: dict[str, str], count: int, block: int | None) -> Any:
        """XREAD; on a cluster sent to the node serving the streams' slot, which the client
        would otherwise ask the server for with ``COMMAND GETKEYS`` before each XREAD (a
        redirection during a resharding is still followed)."""
        args: list[Any] = ["XREAD", "COUNT", count]
        if block is not None:
            args += ["BLOCK", block]
        args += ["STREAMS", *streams.keys(), *streams.values()]
        return await self._link.on_slot_of(next(iter(streams)), args)

    async def trim(self, document_id: str, up_to_id: str) -> int:
        key = self._key(document_id)
        min_id = _successor(parse_entry_id(up_to_id))
        with self._link.edge("journal trim"):
            return int(await self._link.client.xtrim(key, minid=min_id, approximate=False))
