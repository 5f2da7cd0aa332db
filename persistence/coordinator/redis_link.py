"""What every family module of the Redis coordinator adapter shares: :class:`RedisLink` (the
client, the key prefix, the Lua scripts, the clock) and the translation of redis-py's errors
into :mod:`persistence.errors` at the edge.

The family modules (:mod:`~persistence.coordinator.redis_collab`,
:mod:`~persistence.coordinator.redis_journal`, :mod:`~persistence.coordinator.redis_kv`)
import this module; :mod:`persistence.coordinator.redis` imports them and builds the link.
Nothing here imports a family, so the adapter has no import circle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from persistence.coordinator import redis_lua
from persistence.errors import StorageClosed, StorageCorrupted, StorageError, StorageUnavailable

Clock = Callable[[], float]
# Replies that mean "the server cannot serve this now": retrying later may succeed.
_TRANSIENT_REPLIES: Final = (
    "LOADING", "BUSY", "MISCONF", "OOM", "READONLY", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS",
)  # fmt: skip
_CORRUPT_REPLIES: Final = ("WRONGTYPE", "CORRUPT")
_SCRIPTS: Final = (
    "PRESENCE_JOIN",
    "PRESENCE_LEAVE",
    "PRESENCE_HEARTBEAT",
    "PRESENCE_DROP_NODE",
    "PRESENCE_READ",
    "CURSOR_SET",
    "LOCK_ACQUIRE",
    "LOCK_RENEW",
    "LOCK_RELEASE",
    "LOCK_GET",
    "LOCK_HELD",
    "RATE_HIT",
    "STATS_INCR",
    "NOTIFY_PUSH",
    "JOURNAL_APPEND",
)


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Translate redis-py's exceptions raised inside the block into persistence.errors:
    connection errors and timeouts, and the replies that mean "not now" (``LOADING``,
    ``BUSY``, ``READONLY``...), are StorageUnavailable; ``WRONGTYPE`` and corruption replies
    StorageCorrupted; any other Redis error StorageError. Each is chained to its cause."""
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise StorageUnavailable(f"redis {what}: {exc}") from exc
    except redis_errors.ResponseError as exc:
        message = str(exc)
        if message.startswith(_TRANSIENT_REPLIES):
            raise StorageUnavailable(f"redis {what}: {message}") from exc
        if message.startswith(_CORRUPT_REPLIES) or "CORRUPT" in message:
            raise StorageCorrupted(f"redis {what}: {message}") from exc
        raise StorageError(f"redis {what}: {message}") from exc
    except redis_errors.RedisError as exc:
        raise StorageError(f"redis {what}: {exc}") from exc


class RedisLink:
    """What every sub-adapter shares: the client, the key prefix, the scripts, the clock.

    ``block_cap`` is the longest a blocking read may wait in one command (below the socket
    timeout). ``closing`` is set when the coordinator closes, so blocked reads return.
    """

    def __init__(self, client: Redis, prefix: str, clock: Clock, block_cap: float) -> None:
        self.client = client
        self.prefix = prefix
        self.clock = clock
        self.block_cap = block_cap
        self.closed = False
        self.closing = asyncio.Event()
        self.scripts = {name: client.register_script(getattr(redis_lua, name)) for name in _SCRIPTS}

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @contextmanager
    def edge(self, what: str) -> Iterator[None]:
        """:func:`translate_errors` for one operation; StorageClosed once the link is closed."""
        if self.closed:
            raise StorageClosed("the coordinator is closed")
        with translate_errors(what):
            yield

    async def run(self, script: str, what: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one of the registered Lua scripts inside :meth:`edge`."""
        with self.edge(what):
            return await self.scripts[script](keys=list(keys), args=list(args))

    async def aclose(self) -> None:
        """Mark the link closed, wake blocked reads, close the client's pool. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.closing.set()
        with translate_errors("close"):
            await self.client.aclose()


__all__ = ["Clock", "RedisLink", "translate_errors"]
