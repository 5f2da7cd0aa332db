"""The coordinator port: everything the schema keeps in Redis (``cms-schema.md`` section 3).

Adapters: :class:`persistence.coordinator.redis.RedisCoordinator` (service mode,
``COLLAB_REDIS_URL``) and
:class:`persistence.coordinator.memory.MemoryCoordinator` (the embedded default: one process).
Both pass ``tests/contract/test_contract_coordinator.py``. The exact Redis keys and value
formats are in ``docs/redis.md``.

One :class:`Coordinator` groups the sub-ports (``presence``, ``cursors``, ``locks``,
``journal``, ``cache``, ``sessions``, ``flags``, ``rate_limits``, ``stats``,
``notifications``). Guarantees every adapter gives, for every operation:

* Input is checked before any I/O: a bad id, TTL, count or a value that is not plain JSON
  raises ValueError (:class:`~crdt.ids.InvalidIdError` for document and section ids); a value
  over its size limit raises :class:`~persistence.errors.ValueTooLarge` (a ValueError).
  Nothing is written then. Document and section ids follow :mod:`crdt.ids`; every other id
  (user, node, connection, session, flag, action, stats type/period/metric) is a *token*: 1
  to 128 characters of ``[A-Za-z0-9_.@+=|~-]`` (no ``:``, the key separator).
* Durations are float seconds, at most 30 days (:mod:`.coordinator_values` holds every
  limit); timestamps are Unix epoch seconds of the adapter's clock. JSON values round-trip
  through JSON (tuples come back as lists).
* Each operation is atomic: concurrent callers, on one node or many, see it whole or not at
  all. Operations documented as idempotent may be retried after StorageUnavailable.
* Failures raise :mod:`persistence.errors`: StorageUnavailable (the backend is unreachable
  or timed out: transient; the Redis adapter has already retried a bounded number of times),
  StorageCorrupted (a stored value cannot be read back), StorageClosed (after ``aclose``).
  Driver exceptions never cross the port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from persistence.coordinator.values import (
    CACHE_TTL,
    MAX_NOTIFICATIONS,
    SESSION_TTL,
    STATS_TTL,
    Cursor,
    DurabilityReport,
    FlagRule,
    JournalEntry,
    JsonObject,
    Lock,
    Presence,
    RateDecision,
)

__all__ = [
    "CACHE_TTL",
    "MAX_NOTIFICATIONS",
    "SESSION_TTL",
    "STATS_TTL",
    "ChangeJournal",
    "Coordinator",
    "Cursor",
    "CursorRegistry",
    "DocumentCache",
    "DurabilityReport",
    "FeatureFlags",
    "FlagRule",
    "JournalEntry",
    "JsonObject",
    "Lock",
    "NotificationQueues",
    "Presence",
    "PresenceRegistry",
    "RateDecision",
    "RateLimiter",
    "SectionLocks",
    "SessionStore",
    "StatsCounters",
]

# -- the ports -------------------------------------------------------------------------------


class PresenceRegistry(Protocol):
    """``collab:{documentId}:users``: who is in each document, per section, per connection.

    * ``join`` records a connection as present (replacing its previous entry in that
      document, so a connection is in one section of a document at a time) and counts as a
      heartbeat of ``node_id`` with ``ttl``. Idempotent.
    * ``heartbeat(node_id, ttl)`` keeps every entry of the node alive for ``ttl`` more
      seconds. It returns False when the node's liveness had lapsed: its earlier entries
      were then dropped (with their cursors) and the node must ``join`` its connections
      again. A node that stops heartbeating (a crash) disappears from ``members`` at most
      ``ttl`` seconds after its last ``join`` or ``heartbeat``.
    * ``leave`` removes one connection (False if it was not present); ``drop_node`` removes
      every entry of a node (graceful shutdown) and returns how many. Both are idempotent and
      drop the cursors of (section, user) pairs left without a connection.
    * ``members`` returns the live entries, sorted by section (outline first), user, node,
      connection.
    """

    async def join(
        self,
        document_id: str,
        section_id: str | None,
        user_id: str,
        node_id: str,
        connection_id: str,
        ttl: float,
    ) -> Presence: ...

    async def leave(self, document_id: str, node_id: str, connection_id: str) -> bool: ...

    async def heartbeat(self, node_id: str, ttl: float) -> bool: ...

    async def members(self, document_id: str) -> list[Presence]: ...

    async def drop_node(self, node_id: str) -> int: ...


class CursorRegistry(Protocol):
    """``collab:{documentId}:cursors``: one cursor per (section, user), removed with presence.

    * ``set`` stores the value only while the user has a live connection in that section
      (``presence.join``); it returns False and stores nothing otherwise. The cursor goes
      when the user's last connection in the section leaves, is dropped or dies.
    * ``get`` / ``of_document`` return live cursors only (``of_document`` sorted by section,
      then user); ``remove`` returns False if there was none.
    """

    async def set(
        self, document_id: str, section_id: str | None, user_id: str, value: Any
    ) -> bool: ...

    async def get(
        self, document_id: str, section_id: str | None, user_id: str
    ) -> Cursor | None: ...

    async def remove(self, document_id: str, section_id: str | None, user_id: str) -> bool: ...

    async def of_document(self, document_id: str) -> list[Cursor]: ...


class SectionLocks(Protocol):
    """``lock:{documentId}:{sectionId}``: at most one holder per section, with a TTL.

    * ``acquire`` takes a free (or expired) lock and returns it with a new fencing token;
      by its owner it renews the lock (same token, new expiry); held by another owner it
      returns None. Atomic: among concurrent acquirers of a free lock exactly one wins.
    * ``renew`` extends the owner's lock; None if the owner no longer holds it.
    * ``release`` deletes the lock if ``owner`` holds it, or whoever holds it with
      ``force=True`` (an admin); atomic compare-and-delete. True if a lock was deleted, False
      if it was not held or held by someone else (refused).
    * ``holder`` returns the current lock or None; ``held`` every live lock of a document,
      sorted by section.
    """

    async def acquire(
        self, document_id: str, section_id: str, owner: str, ttl: float
    ) -> Lock | None: ...

    async def renew(
        self, document_id: str, section_id: str, owner: str, ttl: float
    ) -> Lock | None: ...

    async def release(
        self, document_id: str, section_id: str, owner: str, *, force: bool = False
    ) -> bool: ...

    async def holder(self, document_id: str, section_id: str) -> Lock | None: ...

    async def held(self, document_id: str) -> list[Lock]: ...


class ChangeJournal(Protocol):
    """``collab:{documentId}:changes``: the change stream that fans updates out to nodes.

    * ``append`` adds an update (with its section, None for the outline, and the appending
      node as ``origin``) and returns its id. With Redis it is durable when it returns if
      the server runs AOF with ``appendfsync always`` (see :meth:`Coordinator.durability`).
      Ids of one document strictly increase in append order. A retried append may store the
      update twice: CRDT updates are idempotent, replay is harmless.
    * ``read`` returns up to ``count`` entries with ids after ``after_id`` (from the start
      when None), oldest first. ``last_id`` is the newest entry's id, ``"0-0"`` when none.
    * ``tail`` waits up to ``timeout`` seconds (0: no wait; at most 300) for entries after
      the given ids of several documents at once and returns them (up to ``count`` per
      document; an empty list on timeout). It sees every append that returned before or
      while it waits. Cancel-safe; ``aclose`` ends a waiting tail with StorageClosed.
    * ``wake_group`` says how a follower of many documents waits: None (a single server,
      memory) means one blocking ``tail`` covers any number of documents. Otherwise (Redis
      Cluster, where a blocking read cannot span slots) the document belongs to one of a
      fixed number of wake groups: every ``append`` wakes its group, naming the
      document, best effort and at the latest shortly after it returned (an earlier
      wake-up may come before the entry can be read). ``wake_position``
      is the end of a group's wake-ups now; ``woken(group, after, timeout=...)`` waits up
      to ``timeout`` seconds for wake-ups after ``after`` and returns the new position and
      the documents woken (possibly with documents the caller does not follow). A follower
      then reads the woken documents with ``tail(..., timeout=0)``. A wake-up can be lost
      (a crash between an append and its wake-up, a failover): a follower must also read
      all its documents now and then (the server's follower sweeps every second). Calling
      either for a journal whose ``wake_group`` is None raises ValueError.
    * ``trim`` deletes exactly the entries with ids <= ``up_to_id`` (call it only once a
      snapshot covering them is stored) and returns how many; later entries are untouched.
    * ``freeze`` makes every later ``append`` of the document raise DocumentFrozen, on every
      node, atomically with respect to appends (with Redis: one key beside the stream, checked
      by the same script that appends), until ``thaw``. ``force=True`` appends anyway: for
      updates already acknowledged before the freeze could be seen (a drained spool).
    """

    async def append(
        self,
        document_id: str,
        section_id: str | None,
        update: bytes,
        *,
        origin: str | None = None,
        force: bool = False,
    ) -> str: ...

    async def freeze(self, document_id: str) -> None: ...

    async def thaw(self, document_id: str) -> None: ...

    async def read(
        self, document_id: str, after_id: str | None = None, count: int = 100
    ) -> list[JournalEntry]: ...

    async def last_id(self, document_id: str) -> str: ...

    async def tail(
        self, positions: Mapping[str, str], *, timeout: float, count: int = 100
    ) -> list[JournalEntry]: ...

    async def trim(self, document_id: str, up_to_id: str) -> int: ...

    def wake_group(self, document_id: str) -> int | None: ...

    async def wake_position(self, group: int) -> str: ...

    async def woken(self, group: int, after: str, *, timeout: float) -> tuple[str, list[str]]: ...


class DocumentCache(Protocol):
    """``doc:{documentId}``: a JSON object cached for ``ttl`` seconds (default 1 h).

    ``get`` returns None when absent or expired; ``put`` replaces; ``delete`` returns
    whether something was cached. Idempotent.
    """

    async def get(self, document_id: str) -> JsonObject | None: ...

    async def put(
        self, document_id: str, value: Mapping[str, Any], ttl: float = CACHE_TTL
    ) -> None: ...

    async def delete(self, document_id: str) -> bool: ...


class SessionStore(Protocol):
    """``session:{sessionId}``: session data (a JSON object) living ``ttl`` seconds (24 h).

    ``touch`` restarts the TTL of a live session (False if absent or expired). Idempotent.
    """

    async def get(self, session_id: str) -> JsonObject | None: ...

    async def put(
        self, session_id: str, data: Mapping[str, Any], ttl: float = SESSION_TTL
    ) -> None: ...

    async def delete(self, session_id: str) -> bool: ...

    async def touch(self, session_id: str, ttl: float = SESSION_TTL) -> bool: ...


class FeatureFlags(Protocol):
    """``feature:{name}``: booleans, each optionally rolled out to a percentage of users.

    ``get`` returns ``default`` for an unset flag, else whether it is on (whatever its
    rollout); ``rule`` returns the whole :class:`FlagRule` (None when unset); ``set`` stores
    a flag with an optional ``rollout`` (0..100; None: everyone).
    """

    async def get(self, name: str, default: bool = False) -> bool: ...

    async def rule(self, name: str) -> FlagRule | None: ...

    async def set(self, name: str, enabled: bool, *, rollout: int | None = None) -> None: ...

    async def delete(self, name: str) -> bool: ...

    async def many(self, names: Sequence[str], default: bool = False) -> dict[str, bool]: ...


class RateLimiter(Protocol):
    """``ratelimit:{userId}:{action}``: fixed-window counters.

    ``hit`` atomically counts one action: the first hit opens a window of ``window``
    seconds; at most ``limit`` hits are allowed in it; a refused hit is not counted and
    says how long until the window ends. ``reset`` forgets the window.
    """

    async def hit(self, user_id: str, action: str, limit: int, window: float) -> RateDecision: ...

    async def reset(self, user_id: str, action: str) -> bool: ...


class StatsCounters(Protocol):
    """``stats:{type}:{period}``: integer metrics aggregated per period.

    ``incr`` adds ``amount`` to a metric and returns the new value; the aggregate expires
    ``ttl`` seconds (default 1 h) after its first write. ``get`` returns every metric.
    """

    async def incr(
        self, kind: str, period: str, metric: str, amount: int = 1, ttl: float = STATS_TTL
    ) -> int: ...

    async def get(self, kind: str, period: str) -> dict[str, int]: ...


class NotificationQueues(Protocol):
    """``notifications:{userId}``: a bounded FIFO of JSON objects per user.

    ``push`` appends and drops the oldest beyond ``max_len``; it returns the queue length.
    ``pop`` removes and returns up to ``count`` of the oldest; ``peek`` returns them
    without removing; ``size`` is the length.
    """

    async def push(
        self, user_id: str, notification: Mapping[str, Any], *, max_len: int = MAX_NOTIFICATIONS
    ) -> int: ...

    async def pop(self, user_id: str, count: int = 1) -> list[JsonObject]: ...

    async def peek(self, user_id: str, count: int = 10) -> list[JsonObject]: ...

    async def size(self, user_id: str) -> int: ...


class Coordinator(Protocol):
    """Everything shared between server nodes: see the sub-ports for their guarantees.

    ``durability`` asks the backend whether acknowledged writes survive a crash (it does
    I/O; StorageUnavailable if unreachable). ``aclose`` releases what the adapter opened;
    every call after it raises StorageClosed. Adapters are async context managers.
    """

    @property
    def presence(self) -> PresenceRegistry: ...

    @property
    def cursors(self) -> CursorRegistry: ...

    @property
    def locks(self) -> SectionLocks: ...

    @property
    def journal(self) -> ChangeJournal: ...

    @property
    def signals(self) -> ChangeJournal:
        """``collab:{documentId}:signals``: what crosses nodes besides updates (awareness,
        application events), capped in length, not a journal: never replayed at load."""
        ...

    @property
    def cache(self) -> DocumentCache: ...

    @property
    def sessions(self) -> SessionStore: ...

    @property
    def flags(self) -> FeatureFlags: ...

    @property
    def rate_limits(self) -> RateLimiter: ...

    @property
    def stats(self) -> StatsCounters: ...

    @property
    def notifications(self) -> NotificationQueues: ...

    async def durability(self) -> DurabilityReport: ...

    async def aclose(self) -> None: ...
