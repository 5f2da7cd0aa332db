"""The key-value families of the Redis coordinator: ``doc:``, ``session:``, ``feature:``,
``ratelimit:``, ``stats:`` and ``notifications:`` (``docs/redis.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from crdt.ids import check_document_id
from persistence.coordinator.redis_link import RedisLink
from persistence.coordinator.redis_replies import text
from persistence.coordinator.values import (
    CACHE_TTL,
    MAX_CACHE_BYTES,
    MAX_NOTIFICATION_BYTES,
    MAX_NOTIFICATIONS,
    MAX_RATE_LIMIT,
    MAX_SESSION_BYTES,
    SESSION_TTL,
    STATS_TTL,
    FlagRule,
    JsonObject,
    RateDecision,
    check_count,
    check_int,
    check_token,
    check_ttl,
    decode_object,
    echo,
    encode_json,
    ttl_ms,
)
from persistence.errors import StorageCorrupted


class RedisCache:
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def _key(self, document_id: str) -> str:
        return self._link.tagged("doc", check_document_id(document_id))

    async def get(self, document_id: str) -> JsonObject | None:
        key = self._key(document_id)
        with self._link.edge("cache get"):
            data = await self._link.client.get(key)
        return None if data is None else decode_object(data, "cache entry")

    async def put(self, document_id: str, value: Mapping[str, Any], ttl: float = CACHE_TTL) -> None:
        key = self._key(document_id)
        data = encode_json(value, "cached document", MAX_CACHE_BYTES)
        px = ttl_ms(check_ttl(ttl))
        with self._link.edge("cache put"):
            await self._link.client.set(key, data, px=px)

    async def delete(self, document_id: str) -> bool:
        key = self._key(document_id)
        with self._link.edge("cache delete"):
            return bool(await self._link.client.delete(key))


class RedisSessions:
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def _key(self, session_id: str) -> str:
        return self._link.key("session", check_token(session_id, "session id"))

    async def get(self, session_id: str) -> JsonObject | None:
        key = self._key(session_id)
        with self._link.edge("session get"):
            data = await self._link.client.get(key)
        return None if data is None else decode_object(data, "session")

    async def put(self, session_id: str, data: Mapping[str, Any], ttl: float = SESSION_TTL) -> None:
        key = self._key(session_id)
        encoded = encode_json(data, "session data", MAX_SESSION_BYTES)
        px = ttl_ms(check_ttl(ttl))
        with self._link.edge("session put"):
            await self._link.client.set(key, encoded, px=px)

    async def delete(self, session_id: str) -> bool:
        key = self._key(session_id)
        with self._link.edge("session delete"):
            return bool(await self._link.client.delete(key))

    async def touch(self, session_id: str, ttl: float = SESSION_TTL) -> bool:
        key = self._key(session_id)
        px = ttl_ms(check_ttl(ttl))
        with self._link.edge("session touch"):
            return bool(await self._link.client.pexpire(key, px))


_FLAG_VALUES: Final = {b"1": True, b"0": False}


class RedisFlags:
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def _key(self, name: str) -> str:
        return self._link.key("feature", check_token(name, "flag name"))

    @staticmethod
    def _rule(raw: object, name: str) -> FlagRule | None:
        if raw is None:
            return None
        if isinstance(raw, bytes) and raw in _FLAG_VALUES:
            return FlagRule(_FLAG_VALUES[raw])
        try:
            if isinstance(raw, bytes):
                return FlagRule.decode(raw)
        except ValueError:
            pass
        raise StorageCorrupted(f"feature flag {name} holds {echo(raw)}, not 1 or 0")

    @classmethod
    def _decode(cls, raw: object, name: str, default: bool) -> bool:
        rule = cls._rule(raw, name)
        return default if rule is None else rule.enabled

    async def rule(self, name: str) -> FlagRule | None:
        key = self._key(name)
        with self._link.edge("flag get"):
            raw = await self._link.client.get(key)
        return self._rule(raw, name)

    async def get(self, name: str, default: bool = False) -> bool:
        key = self._key(name)
        with self._link.edge("flag get"):
            raw = await self._link.client.get(key)
        return self._decode(raw, name, default)

    async def set(self, name: str, enabled: bool, *, rollout: int | None = None) -> None:
        key = self._key(name)
        value = FlagRule(enabled, rollout).encode()
        with self._link.edge("flag set"):
            await self._link.client.set(key, value)

    async def delete(self, name: str) -> bool:
        key = self._key(name)
        with self._link.edge("flag delete"):
            return bool(await self._link.client.delete(key))

    async def many(self, names: Sequence[str], default: bool = False) -> dict[str, bool]:
        keys = [self._key(name) for name in names]
        if not keys:
            return {}
        values = await self._link.mget("flags get", keys)
        return {
            name: self._decode(raw, name, default) for name, raw in zip(names, values, strict=True)
        }


class RedisRateLimits:
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def _key(self, user_id: str, action: str) -> str:
        return self._link.key(
            "ratelimit", check_token(user_id, "user id"), check_token(action, "action")
        )

    async def hit(self, user_id: str, action: str, limit: int, window: float) -> RateDecision:
        key = self._key(user_id, action)
        limit = check_int(limit, "limit", 1, MAX_RATE_LIMIT)
        px = ttl_ms(check_ttl(window, "window"))
        allowed, remaining, retry_ms = await self._link.run(
            "RATE_HIT", "rate limit", [key], [limit, px]
        )
        return RateDecision(bool(allowed), int(remaining), int(retry_ms) / 1000)

    async def reset(self, user_id: str, action: str) -> bool:
        key = self._key(user_id, action)
        with self._link.edge("rate limit reset"):
            return bool(await self._link.client.delete(key))


class RedisStats:
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def _key(self, kind: str, period: str) -> str:
        return self._link.key(
            "stats", check_token(kind, "stats type"), check_token(period, "stats period")
        )

    async def incr(
        self, kind: str, period: str, metric: str, amount: int = 1, ttl: float = STATS_TTL
    ) -> int:
        key = self._key(kind, period)
        check_token(metric, "metric")
        amount = check_int(amount, "amount", -(2**62), 2**62)
        px = ttl_ms(check_ttl(ttl))
        value = await self._link.run("STATS_INCR", "stats incr", [key], [metric, amount, px])
        return int(value)

    async def get(self, kind: str, period: str) -> dict[str, int]:
        key = self._key(kind, period)
        with self._link.edge("stats get"):
            raw = await self._link.client.hgetall(key)
        try:
            return {text(k, "metric"): int(v) for k, v in raw.items()}
        except ValueError:
            raise StorageCorrupted(f"stats {kind}:{period} holds a non-integer metric") from None


class RedisNotifications:
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def _key(self, user_id: str) -> str:
        return self._link.key("notifications", check_token(user_id, "user id"))

    async def push(
        self, user_id: str, notification: Mapping[str, Any], *, max_len: int = MAX_NOTIFICATIONS
    ) -> int:
        key = self._key(user_id)
        data = encode_json(notification, "notification", MAX_NOTIFICATION_BYTES)
        max_len = check_int(max_len, "max_len", 1, 10_000)
        length = await self._link.run("NOTIFY_PUSH", "notification push", [key], [data, max_len])
        return int(length)

    async def pop(self, user_id: str, count: int = 1) -> list[JsonObject]:
        key = self._key(user_id)
        count = check_count(count)
        with self._link.edge("notification pop"):
            taken: Any = await self._link.client.lpop(key, count)
        return [decode_object(text(data, "notification"), "notification") for data in taken or []]

    async def peek(self, user_id: str, count: int = 10) -> list[JsonObject]:
        key = self._key(user_id)
        count = check_count(count)
        with self._link.edge("notification peek"):
            queue = await self._link.client.lrange(key, 0, count - 1)
        return [decode_object(data, "notification") for data in queue]

    async def size(self, user_id: str) -> int:
        key = self._key(user_id)
        with self._link.edge("notification size"):
            return int(await self._link.client.llen(key))
