"""Sign-ins: ``users.last_login`` written and the ``signins`` counter counted when a user
signs in: a session opened over REST (``POST /api/session``), or a token's session first
used on this node by a socket (``docs/administration.md``).

A session already seen on this node (the last :data:`REMEMBERED` sessions are remembered) is
not a new sign-in: a client opening ten documents signs in once. The write runs in the
background (it never delays the connect), and a failure is logged, not raised: the
sign-in itself has succeeded.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from persistence.errors import StorageError
from persistence.relational import UserStore
from server.admin.stats import ActivityStats
from server.identity.authentication import Principal

log = logging.getLogger(__name__)

REMEMBERED: Final = 50_000


class SignIns:
    def __init__(
        self,
        users: UserStore,
        stats: ActivityStats,
        tasks: asyncio.TaskGroup,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._users = users
        self._stats = stats
        self._tasks = tasks
        self._now = now
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._writing: set[asyncio.Task[None]] = set()
        self.recorded = 0

    def connected(self, principal: Principal) -> None:
        """A socket was admitted: a sign-in if its session is new to this node."""
        if principal.session_id == "dev":
            return
        if principal.session_id in self._seen:
            self._seen.move_to_end(principal.session_id)
            return
        self.signed_in(principal)

    def signed_in(self, principal: Principal) -> None:
        """A sign-in: count it and write ``last_login`` in the background."""
        if principal.session_id:
            self._seen[principal.session_id] = None
            self._seen.move_to_end(principal.session_id)
            if len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
        self._stats.count("signins")
        task = self._tasks.create_task(self._record(principal), name="record login")
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def settle(self) -> None:
        """Wait for the ``last_login`` writes begun so far."""
        if self._writing:
            await asyncio.wait(set(self._writing))

    async def _record(self, principal: Principal) -> None:
        try:
            await self._users.record_login(principal.uuid, self._now())
            self.recorded += 1
        except StorageError as exc:
            log.warning("recording the sign-in of %s failed: %s", principal.user_id, exc)
