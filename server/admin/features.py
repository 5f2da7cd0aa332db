"""Feature flags: ``feature:{name}`` in the coordinator (Redis in service mode, in-process on
the embedded default), read through :class:`Features`, a cached helper the server asks
(``docs/administration.md``).

A flag is on or off, optionally for a percentage of users only: user ``u`` is in a rollout
of ``p`` % when ``sha256(name + ":" + u)`` (its first 8 bytes, as a number) modulo 100 is
below ``p``. The bucket depends on the flag's name, so two flags at 10 % pick different
users, and on nothing else, so raising the percentage only adds users. A request without a
user (no user id) is in the rollout only at 100 %.

Flags the server honours are listed in :data:`KNOWN_FLAGS` with the value they have while
unset. Other names may be set (for clients and extensions: ``GET /api/features/{name}``
answers whether the caller is in).

Reads are cached ``ttl`` seconds (2 s): a change made on this node is effective at once (the
cache entry is dropped), on other nodes within the TTL. If the coordinator is unavailable,
the last value read is used, else the flag's default.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from persistence.coordinator.ports import FeatureFlags, FlagRule
from persistence.errors import StorageError
from server.errors import InvalidError
from server.identity.audit import AuditContext, AuditTrail

log = logging.getLogger(__name__)

SEARCH: Final = "search"
# The flags the server reads, and their value while unset.
KNOWN_FLAGS: Final[Mapping[str, bool]] = {
    # GET /api/search and GET /api/documents?q=: off (for a user) -> 404 "search is off".
    SEARCH: True,
}
NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def in_rollout(name: str, user_id: str | None, percentage: int) -> bool:
    """Whether the user falls in the first ``percentage`` % of the flag's buckets."""
    if percentage >= 100:
        return True
    if user_id is None or percentage <= 0:
        return False
    digest = hashlib.sha256(f"{name}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < percentage


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise InvalidError(
            "a flag name is 1-64 of a-z, 0-9, _, . and -, starting with a letter or digit",
            field="name",
        )
    return name


@dataclass(frozen=True, slots=True)
class FlagState:
    """A flag as the API shows it: its rule (None: unset, the default applies)."""

    name: str
    rule: FlagRule | None
    default: bool

    @property
    def enabled(self) -> bool:
        return self.rule.enabled if self.rule is not None else self.default


class Features:
    """Reads flags for the server (cached) and changes them for admins (audited)."""

    def __init__(
        self,
        flags: FeatureFlags,
        audit: AuditTrail,
        *,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flags = flags
        self._audit = audit
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, FlagRule | None]] = {}

    async def enabled(self, name: str, user_id: str | None = None) -> bool:
        """Whether the flag is on for this user (the server's one way to read a flag)."""
        state = await self.state(name)
        if state.rule is None:
            return state.default
        if not state.rule.enabled:
            return False
        rollout = state.rule.rollout
        return rollout is None or in_rollout(name, user_id, rollout)

    async def state(self, name: str) -> FlagState:
        default = KNOWN_FLAGS.get(name, False)
        now = self._clock()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return FlagState(name, hit[1], default)
        try:
            rule = await self._flags.rule(check_name(name))
        except StorageError as exc:
            log.warning("reading feature flag %s failed (%s): using the last value", name, exc)
            return FlagState(name, hit[1] if hit is not None else None, default)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[name] = (now + self._ttl, rule)
        return FlagState(name, rule, default)

    async def set(
        self, actor: AuditContext, name: str, enabled: bool, rollout: int | None = None
    ) -> FlagState:
        check_name(name)
        try:
            rule = FlagRule(enabled, rollout)
        except ValueError as exc:
            raise InvalidError(str(exc), field="rollout") from exc
        await self._flags.set(name, enabled, rollout=rollout)
        self._cache.pop(name, None)
        self._audit.record(
            actor.entry("update", "feature", name, {"enabled": enabled, "rollout": rollout})
        )
        return FlagState(name, rule, KNOWN_FLAGS.get(name, False))

    async def delete(self, actor: AuditContext, name: str) -> bool:
        check_name(name)
        existed = await self._flags.delete(name)
        self._cache.pop(name, None)
        if existed:
            self._audit.record(actor.entry("delete", "feature", name))
        return existed
