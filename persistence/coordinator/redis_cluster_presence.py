"""Presence and cursors of the Redis coordinator on Redis Cluster.

The same port and the same guarantees as :mod:`persistence.coordinator.redis_collab`, with
keys that never make a script cross slots (:mod:`persistence.coordinator.redis_cluster_lua`
says how): a document's ``:users``, ``:cursors`` and ``:nodes`` share its hash tag, a node's
liveness key and document index share the node's.

One operation is then a script in the node's slot and one in each document's slot. Within
this process the steps of one (node, document) pair are serialised (a join, a leave and a
heartbeat of the same pair never interleave), so the node's index never loses a document
its node still has entries in. Nodes are distinct processes, each with its own node id.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from crdt.ids import check_document_id
from persistence.coordinator.redis_collab import decode_cursor, decode_presence, encode_presence
from persistence.coordinator.redis_link import RedisLink
from persistence.coordinator.redis_replies import pairs, section_field
from persistence.coordinator.values import (
    MAX_CURSOR_BYTES,
    NODE_INDEX_TTL,
    Cursor,
    Presence,
    check_connection,
    check_join,
    check_section,
    check_token,
    check_ttl,
    encode_json,
    ttl_ms,
)
from persistence.keyed import KeyedLocks

# How many documents one heartbeat refreshes at once.
_REFRESH_CONCURRENCY: Final = 32


class ClusterKeys:
    """The keys of the presence families on a cluster."""

    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def document(self, document_id: str) -> list[str]:
        tagged = self._link.tagged
        return [
            tagged("collab", document_id, "users"),
            tagged("collab", document_id, "cursors"),
            tagged("collab", document_id, "nodes"),
        ]

    def node(self, node_id: str) -> list[str]:
        return [self._link.tagged("node", node_id), self._link.tagged("node", node_id, "documents")]


class RedisClusterPresence:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._keys = ClusterKeys(link)
        self._pairs: KeyedLocks[tuple[str, str]] = KeyedLocks()

    async def _node_alive(
        self, node_id: str, ttl: float, document_id: str
    ) -> tuple[bool, list[str]]:
        args = [repr(self._link.clock()), ttl_ms(ttl), ttl_ms(NODE_INDEX_TTL), document_id]
        alive, documents = await self._link.run(
            "NODE_ALIVE", "node alive", self._keys.node(node_id), args
        )
        return bool(alive), [doc.decode() for doc in documents]

    async def join(
        self,
        document_id: str,
        section_id: str | None,
        user_id: str,
        node_id: str,
        connection_id: str,
        ttl: float,
    ) -> Presence:
        ttl = check_join(document_id, section_id, user_id, node_id, connection_id, ttl)
        now = self._link.clock()
        entry = Presence(document_id, section_id, user_id, node_id, connection_id, now)
        value = encode_presence(entry)
        async with self._pairs.hold((node_id, document_id)):
            # The index first: a heartbeat running meanwhile extends this document too.
            await self._node_alive(node_id, ttl, document_id)
            await self._link.run(
                "DOC_JOIN",
                "presence join",
                self._keys.document(document_id),
                [node_id, connection_id, value, ttl_ms(ttl)],
            )
        return entry

    async def leave(self, document_id: str, node_id: str, connection_id: str) -> bool:
        check_document_id(document_id)
        check_connection(node_id, connection_id)
        async with self._pairs.hold((node_id, document_id)):
            removed, left = await self._link.run(
                "DOC_LEAVE",
                "presence leave",
                self._keys.document(document_id),
                [node_id, connection_id],
            )
            if not left:
                _, index = self._keys.node(node_id)
                with self._link.edge("presence leave"):
                    await self._link.client.srem(index, document_id)
        return bool(removed)

    async def heartbeat(self, node_id: str, ttl: float) -> bool:
        check_token(node_id, "node id")
        ttl = check_ttl(ttl)
        alive, documents = await self._node_alive(node_id, ttl, "")
        gate = asyncio.Semaphore(_REFRESH_CONCURRENCY)

        async def refresh(document_id: str) -> None:
            async with gate, self._pairs.hold((node_id, document_id)):
                kept = await self._link.run(
                    "DOC_REFRESH",
                    "heartbeat",
                    self._keys.document(document_id),
                    [node_id, ttl_ms(ttl)],
                )
                if not kept:
                    _, index = self._keys.node(node_id)
                    with self._link.edge("heartbeat"):
                        await self._link.client.srem(index, document_id)

        await asyncio.gather(*(refresh(document_id) for document_id in documents))
        return alive

    async def members(self, document_id: str) -> list[Presence]:
        check_document_id(document_id)
        flat = await self._link.run(
            "DOC_READ", "members", self._keys.document(document_id), ["users", ""]
        )
        entries = [decode_presence(document_id, raw) for _, raw in pairs(flat)]
        entries.sort(key=lambda e: (e.section_id or "", e.user_id, e.node_id, e.connection_id))
        return entries

    async def drop_node(self, node_id: str) -> int:
        check_token(node_id, "node id")
        raw: Any = await self._link.run("NODE_DROP", "drop node", self._keys.node(node_id), [])
        removed = 0
        for document_id in (doc.decode() for doc in raw):
            async with self._pairs.hold((node_id, document_id)):
                removed += int(
                    await self._link.run(
                        "DOC_DROP", "drop node", self._keys.document(document_id), [node_id]
                    )
                )
        return removed


class RedisClusterCursors:
    def __init__(self, link: RedisLink) -> None:
        self._link = link
        self._keys = ClusterKeys(link)

    @staticmethod
    def _check(document_id: str, section_id: str | None, user_id: str) -> str:
        check_document_id(document_id)
        check_section(section_id)
        check_token(user_id, "user id")
        return f"{section_field(section_id)}:{user_id}"

    async def set(self, document_id: str, section_id: str | None, user_id: str, value: Any) -> bool:
        self._check(document_id, section_id, user_id)
        encode_json(value, "cursor", MAX_CURSOR_BYTES, object_only=False)
        stored = encode_json(
            {"value": value, "updated_at": self._link.clock()}, "cursor", 2 * MAX_CURSOR_BYTES
        )
        args = [section_field(section_id), user_id, stored]
        keys = self._keys.document(document_id)
        return bool(await self._link.run("DOC_CURSOR_SET", "cursor set", keys, args))

    async def get(self, document_id: str, section_id: str | None, user_id: str) -> Cursor | None:
        field = self._check(document_id, section_id, user_id)
        keys = self._keys.document(document_id)
        raw = await self._link.run("DOC_READ", "cursor get", keys, ["cursor", field])
        return None if raw is None else decode_cursor(document_id, field, raw)

    async def remove(self, document_id: str, section_id: str | None, user_id: str) -> bool:
        field = self._check(document_id, section_id, user_id)
        _, cursors, _ = self._keys.document(document_id)
        with self._link.edge("cursor remove"):
            return bool(await self._link.client.hdel(cursors, field))

    async def of_document(self, document_id: str) -> list[Cursor]:
        check_document_id(document_id)
        keys = self._keys.document(document_id)
        flat = await self._link.run("DOC_READ", "cursors", keys, ["cursors", ""])
        cursors = [decode_cursor(document_id, field, raw) for field, raw in pairs(flat)]
        cursors.sort(key=lambda cursor: (cursor.section_id or "", cursor.user_id))
        return cursors
