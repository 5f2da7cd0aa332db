"""The real-time families of the Redis coordinator: presence, cursors and section locks.

``collab:{documentId}:users`` and ``:cursors``, ``node:{nodeId}`` (liveness) and
``node:{nodeId}:documents``, ``lock:{documentId}:{sectionId}`` with its ``:fence`` counter
and the ``lock:{documentId}`` index (``docs/redis.md``). Every write is one Lua script of
:mod:`persistence.coordinator.redis_lua`, so it is atomic for every node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from crdt.ids import check_document_id, check_section_id
from persistence.coordinator.redis_link import RedisLink
from persistence.coordinator.redis_replies import number, pairs, section_field, text
from persistence.coordinator.values import (
    MAX_CURSOR_BYTES,
    NODE_INDEX_TTL,
    Cursor,
    Lock,
    Presence,
    check_connection,
    check_join,
    check_section,
    check_token,
    check_ttl,
    decode_object,
    encode_json,
    ttl_ms,
)
from persistence.errors import StorageCorrupted

# A presence entry holds four tokens of at most 128 characters and a timestamp.
_MAX_ENTRY_BYTES: Final = 1024


# -- presence and cursors --------------------------------------------------------------------


def encode_presence(entry: Presence) -> bytes:
    """A presence entry as stored (:func:`decode_presence` reads it back)."""
    return encode_json(
        {
            "section": section_field(entry.section_id),
            "user": entry.user_id,
            "node": entry.node_id,
            "connection": entry.connection_id,
            "joined_at": entry.joined_at,
        },
        "presence entry",
        _MAX_ENTRY_BYTES,
    )


def decode_presence(document_id: str, raw: object) -> Presence:
    entry = decode_object(text(raw, "presence entry"), "presence entry")
    try:
        section, user, node, connection = (
            entry["section"], entry["user"], entry["node"], entry["connection"],
        )  # fmt: skip
        joined_at = float(entry["joined_at"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageCorrupted(f"malformed presence entry in {document_id}") from exc
    if not all(isinstance(v, str) for v in (section, user, node, connection)):
        raise StorageCorrupted(f"malformed presence entry in {document_id}")
    return Presence(document_id, section or None, user, node, connection, joined_at)


def decode_cursor(document_id: str, field: object, raw: object) -> Cursor:
    section, _, user = text(field, "cursor field").partition(":")
    stored = decode_object(text(raw, "cursor"), "cursor")
    if "value" not in stored or not isinstance(stored.get("updated_at"), int | float):
        raise StorageCorrupted(f"malformed cursor in {document_id}")
    return Cursor(document_id, section or None, user, stored["value"], stored["updated_at"])


def _doc_keys(link: RedisLink, document_id: str) -> list[str]:
    return [
        link.tagged("collab", document_id, "users"),
        link.tagged("collab", document_id, "cursors"),
    ]


class RedisPresence:
    def __init__(self, link: RedisLink) -> None:
        self._link = link

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
        args = [self._link.prefix, node_id, connection_id, value, repr(now), ttl_ms(ttl)]
        args += [ttl_ms(NODE_INDEX_TTL), document_id]
        await self._link.run(
            "PRESENCE_JOIN", "presence join", _doc_keys(self._link, document_id), args
        )
        return entry

    async def leave(self, document_id: str, node_id: str, connection_id: str) -> bool:
        check_document_id(document_id)
        check_connection(node_id, connection_id)
        args = [self._link.prefix, node_id, connection_id, document_id]
        keys = _doc_keys(self._link, document_id)
        return bool(await self._link.run("PRESENCE_LEAVE", "presence leave", keys, args))

    async def heartbeat(self, node_id: str, ttl: float) -> bool:
        check_token(node_id, "node id")
        ttl = check_ttl(ttl)
        now = self._link.clock()
        args = [self._link.prefix, node_id, repr(now), ttl_ms(ttl), ttl_ms(NODE_INDEX_TTL)]
        return bool(await self._link.run("PRESENCE_HEARTBEAT", "heartbeat", [], args))

    async def members(self, document_id: str) -> list[Presence]:
        check_document_id(document_id)
        args = [self._link.prefix, "users", ""]
        flat = await self._link.run(
            "PRESENCE_READ", "members", _doc_keys(self._link, document_id), args
        )
        entries = [decode_presence(document_id, raw) for _, raw in pairs(flat)]
        entries.sort(key=lambda e: (e.section_id or "", e.user_id, e.node_id, e.connection_id))
        return entries

    async def drop_node(self, node_id: str) -> int:
        check_token(node_id, "node id")
        args = [self._link.prefix, node_id]
        return int(await self._link.run("PRESENCE_DROP_NODE", "drop node", [], args))


class RedisCursors:
    def __init__(self, link: RedisLink) -> None:
        self._link = link

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
            {"value": value, "updated_at": self._link.clock()},
            "cursor",
            2 * MAX_CURSOR_BYTES,
        )
        keys = _doc_keys(self._link, document_id)
        args = [self._link.prefix, section_field(section_id), user_id, stored]
        return bool(await self._link.run("CURSOR_SET", "cursor set", keys, args))

    async def get(self, document_id: str, section_id: str | None, user_id: str) -> Cursor | None:
        field = self._check(document_id, section_id, user_id)
        keys = _doc_keys(self._link, document_id)
        args = [self._link.prefix, "cursor", field]
        raw = await self._link.run("PRESENCE_READ", "cursor get", keys, args)
        return None if raw is None else decode_cursor(document_id, field, raw)

    async def remove(self, document_id: str, section_id: str | None, user_id: str) -> bool:
        field = self._check(document_id, section_id, user_id)
        key = self._link.tagged("collab", document_id, "cursors")
        with self._link.edge("cursor remove"):
            return bool(await self._link.client.hdel(key, field))

    async def of_document(self, document_id: str) -> list[Cursor]:
        check_document_id(document_id)
        keys = _doc_keys(self._link, document_id)
        args = [self._link.prefix, "cursors", ""]
        flat = await self._link.run("PRESENCE_READ", "cursors", keys, args)
        cursors = [decode_cursor(document_id, field, raw) for field, raw in pairs(flat)]
        cursors.sort(key=lambda cursor: (cursor.section_id or "", cursor.user_id))
        return cursors


# -- locks -----------------------------------------------------------------------------------


class RedisLocks:
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def _keys(self, document_id: str, section_id: str) -> tuple[str, str, str]:
        check_document_id(document_id)
        check_section_id(section_id)
        lock = self._link.tagged("lock", document_id, section_id)
        return lock, f"{lock}:fence", self._link.tagged("lock", document_id)

    def _lock(
        self, document_id: str, section_id: str, owner: object, fields: Sequence[Any], left_ms: int
    ) -> Lock:
        """A Lock from what a script returned; ``left_ms`` is the key's PTTL."""
        token, acquired_at = fields
        try:
            token_value = int(text(token, "lock token"))
        except ValueError:
            raise StorageCorrupted(f"lock token of {document_id}/{section_id}") from None
        expires_at = self._link.clock() + max(0, int(left_ms)) / 1000
        return Lock(
            document_id,
            section_id,
            text(owner, "lock owner"),
            token_value,
            number(acquired_at, "lock time"),
            expires_at,
        )

    async def acquire(
        self, document_id: str, section_id: str, owner: str, ttl: float
    ) -> Lock | None:
        lock, fence, index = self._keys(document_id, section_id)
        check_token(owner, "lock owner")
        ttl = check_ttl(ttl)
        args = [owner, ttl_ms(ttl), repr(self._link.clock()), section_id]
        fields = await self._link.run_replicated(
            "LOCK_ACQUIRE", "lock acquire", [lock, fence, index], args
        )
        if fields is None:
            return None
        return self._lock(document_id, section_id, owner, fields, ttl_ms(ttl))

    async def renew(self, document_id: str, section_id: str, owner: str, ttl: float) -> Lock | None:
        lock, _, index = self._keys(document_id, section_id)
        check_token(owner, "lock owner")
        ttl = check_ttl(ttl)
        fields = await self._link.run(
            "LOCK_RENEW", "lock renew", [lock, index], [owner, ttl_ms(ttl)]
        )
        if fields is None:
            return None
        return self._lock(document_id, section_id, owner, fields, ttl_ms(ttl))

    async def release(
        self, document_id: str, section_id: str, owner: str, *, force: bool = False
    ) -> bool:
        lock, _, index = self._keys(document_id, section_id)
        check_token(owner, "lock owner")
        args = [owner, "1" if force else "0", section_id]
        return bool(
            await self._link.run_replicated("LOCK_RELEASE", "lock release", [lock, index], args)
        )

    async def holder(self, document_id: str, section_id: str) -> Lock | None:
        lock, _, _ = self._keys(document_id, section_id)
        found = await self._link.run("LOCK_GET", "lock holder", [lock], [])
        if found is None:
            return None
        owner, token, acquired_at, left_ms = found
        return self._lock(document_id, section_id, owner, (token, acquired_at), int(left_ms))

    async def held(self, document_id: str) -> list[Lock]:
        check_document_id(document_id)
        index = self._link.tagged("lock", document_id)
        flat = await self._link.run("LOCK_HELD", "locks held", [index], [index + ":"])
        locks = [
            self._lock(
                document_id,
                text(flat[i], "section"),
                flat[i + 1],
                flat[i + 2 : i + 4],
                int(flat[i + 4]),
            )
            for i in range(0, len(flat), 5)
        ]
        return sorted(locks, key=lambda lock: lock.section_id)
