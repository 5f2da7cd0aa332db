"""The in-process key-value families (cache, sessions, flags, rate limits, stats,
notifications) and the clock and expiry they share with :mod:`.coordinator_memory`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crdt.ids import check_document_id
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
    encode_json,
)
from persistence.errors import StorageClosed

Clock = Callable[[], float]


class Shared:
    """The clock and the closed flag every sub-adapter checks first."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.closed = False

    def now(self) -> float:
        """The clock's time; raises StorageClosed once the coordinator is closed."""
        if self.closed:
            raise StorageClosed("the coordinator is closed")
        return self.clock()


class Expiring:
    """Key -> (value, deadline). Expired items vanish when looked at, and a sweep every
    so many writes drops those nobody looks at again (amortised O(1) per write)."""

    def __init__(self) -> None:
        self.items: dict[Any, tuple[Any, float]] = {}
        self._writes = 0

    def get(self, key: object, now: float) -> Any:
        item = self.items.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self.items[key]
            return None
        return item[0]

    def put(self, key: object, value: object, deadline: float, now: float) -> None:
        self.items[key] = (value, deadline)
        self._writes += 1
        if self._writes >= max(1024, len(self.items)):
            self._writes = 0
            for stale in [k for k, (_, until) in self.items.items() if until <= now]:
                del self.items[stale]

    def delete(self, key: object, now: float) -> bool:
        alive = self.get(key, now) is not None
        self.items.pop(key, None)
        return alive


class MemoryCache:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._values = Expiring()

    async def get(self, document_id: str) -> JsonObject | None:
        check_document_id(document_id)
        data = self._values.get(document_id, self._shared.now())
        return None if data is None else decode_object(data, "cache entry")

    async def put(self, document_id: str, value: Mapping[str, Any], ttl: float = CACHE_TTL) -> None:
        check_document_id(document_id)
        data = encode_json(value, "cached document", MAX_CACHE_BYTES)
        ttl = check_ttl(ttl)
        now = self._shared.now()
        self._values.put(document_id, data, now + ttl, now)

    async def delete(self, document_id: str) -> bool:
        check_document_id(document_id)
        return self._values.delete(document_id, self._shared.now())


class MemorySessions:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._values = Expiring()

    async def get(self, session_id: str) -> JsonObject | None:
        check_token(session_id, "session id")
        data = self._values.get(session_id, self._shared.now())
        return None if data is None else decode_object(data, "session")

    async def put(self, session_id: str, data: Mapping[str, Any], ttl: float = SESSION_TTL) -> None:
        check_token(session_id, "session id")
        encoded = encode_json(data, "session data", MAX_SESSION_BYTES)
        ttl = check_ttl(ttl)
        now = self._shared.now()
        self._values.put(session_id, encoded, now + ttl, now)

    async def delete(self, session_id: str) -> bool:
        check_token(session_id, "session id")
        return self._values.delete(session_id, self._shared.now())

    async def touch(self, session_id: str, ttl: float = SESSION_TTL) -> bool:
        check_token(session_id, "session id")
        ttl = check_ttl(ttl)
        now = self._shared.now()
        data = self._values.get(session_id, now)
        if data is None:
            return False
        self._values.put(session_id, data, now + ttl, now)
        return True


class MemoryFlags:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._flags: dict[str, FlagRule] = {}

    async def get(self, name: str, default: bool = False) -> bool:
        check_token(name, "flag name")
        self._shared.now()
        rule = self._flags.get(name)
        return default if rule is None else rule.enabled

    async def rule(self, name: str) -> FlagRule | None:
        check_token(name, "flag name")
        self._shared.now()
        return self._flags.get(name)

    async def set(self, name: str, enabled: bool, *, rollout: int | None = None) -> None:
        check_token(name, "flag name")
        rule = FlagRule(enabled, rollout)
        self._shared.now()
        self._flags[name] = rule

    async def delete(self, name: str) -> bool:
        check_token(name, "flag name")
        self._shared.now()
        return self._flags.pop(name, None) is not None

    async def many(self, names: Sequence[str], default: bool = False) -> dict[str, bool]:
        checked = [check_token(name, "flag name") for name in names]
        self._shared.now()
        return {
            name: rule.enabled if (rule := self._flags.get(name)) is not None else default
            for name in checked
        }


class MemoryRateLimits:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._windows = Expiring()

    async def hit(self, user_id: str, action: str, limit: int, window: float) -> RateDecision:
        key = (check_token(user_id, "user id"), check_token(action, "action"))
        limit = check_int(limit, "limit", 1, MAX_RATE_LIMIT)
        window = check_ttl(window, "window")
        now = self._shared.now()
        count: int | None = self._windows.get(key, now)
        if count is None:
            self._windows.put(key, 1, now + window, now)
            return RateDecision(True, limit - 1, 0.0)
        deadline = self._windows.items[key][1]
        if count >= limit:
            return RateDecision(False, 0, deadline - now)
        self._windows.put(key, count + 1, deadline, now)
        return RateDecision(True, limit - count - 1, 0.0)

    async def reset(self, user_id: str, action: str) -> bool:
        key = (check_token(user_id, "user id"), check_token(action, "action"))
        return self._windows.delete(key, self._shared.now())


class MemoryStats:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._aggregates = Expiring()

    async def incr(
        self, kind: str, period: str, metric: str, amount: int = 1, ttl: float = STATS_TTL
    ) -> int:
        key = (check_token(kind, "stats type"), check_token(period, "stats period"))
        check_token(metric, "metric")
        amount = check_int(amount, "amount", -(2**62), 2**62)
        ttl = check_ttl(ttl)
        now = self._shared.now()
        metrics: dict[str, int] | None = self._aggregates.get(key, now)
        if metrics is None:
            metrics = {}
            self._aggregates.put(key, metrics, now + ttl, now)
        metrics[metric] = metrics.get(metric, 0) + amount
        return metrics[metric]

    async def get(self, kind: str, period: str) -> dict[str, int]:
        key = (check_token(kind, "stats type"), check_token(period, "stats period"))
        metrics: dict[str, int] | None = self._aggregates.get(key, self._shared.now())
        return dict(metrics or {})


class MemoryNotifications:
    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._queues: dict[str, deque[bytes]] = {}

    async def push(
        self, user_id: str, notification: Mapping[str, Any], *, max_len: int = MAX_NOTIFICATIONS
    ) -> int:
        check_token(user_id, "user id")
        data = encode_json(notification, "notification", MAX_NOTIFICATION_BYTES)
        max_len = check_int(max_len, "max_len", 1, 10_000)
        self._shared.now()
        queue = self._queues.setdefault(user_id, deque())
        queue.append(data)
        while len(queue) > max_len:
            queue.popleft()
        return len(queue)

    async def pop(self, user_id: str, count: int = 1) -> list[JsonObject]:
        check_token(user_id, "user id")
        count = check_count(count)
        self._shared.now()
        queue = self._queues.get(user_id, deque())
        taken = [queue.popleft() for _ in range(min(count, len(queue)))]
        if not queue:
            self._queues.pop(user_id, None)
        return [decode_object(data, "notification") for data in taken]

    async def peek(self, user_id: str, count: int = 10) -> list[JsonObject]:
        check_token(user_id, "user id")
        count = check_count(count)
        self._shared.now()
        queue = list(self._queues.get(user_id, ()))[:count]
        return [decode_object(data, "notification") for data in queue]

    async def size(self, user_id: str) -> int:
        check_token(user_id, "user id")
        self._shared.now()
        return len(self._queues.get(user_id, ()))
