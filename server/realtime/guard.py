"""Rights of open connections, re-checked: permission changes and suspensions reach sockets
that are already open within seconds.

Every ``interval`` seconds the guard asks, for each user with open connections, whether the
account is still active and the token unexpired, and for each document they are in, what
their right is now (through the same cached lookups the admission uses, so the delay is at
most the cache TTL plus the interval: under 5 s with the defaults). A user who lost the view
right, was suspended or removed, whose token expired or whose sessions were revoked is
disconnected (4403 / 4401); one
who lost the edit right becomes read-only (and is told, with the y-protocols
permission-denied message); one who gained it can write again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from protocol.events import AppEvent
from protocol.ysync import AuthPermissionDenied, encode
from server.errors import AuthError, PermissionDenied
from server.identity.authentication import Authenticator
from server.identity.rights import AccessControl, Right
from server.realtime.connection import Connection, Frame
from server.realtime.hub import Hub

log = logging.getLogger(__name__)


class Guard:
    """Re-checks the rights of the hub's open connections on a timer. ``frozen_here``:
    whether this node froze a document moments ago (its connections then stay read-only)."""

    def __init__(
        self,
        hub: Hub,
        authn: Authenticator,
        access: AccessControl,
        frozen_here: Callable[[str], bool],
        *,
        interval: float = 1.0,
    ) -> None:
        self._hub = hub
        self._authn = authn
        self._access = access
        self._frozen_here = frozen_here
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.checks = 0

    def start(self, tasks: asyncio.TaskGroup) -> None:
        self._task = tasks.create_task(self._run(), name="rights guard")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A store being down must not end the guard; the next round tries again.
                log.warning("re-checking connection rights failed", exc_info=True)

    async def check(self) -> None:
        """One round over every open connection."""
        by_user: dict[str, list[Connection]] = defaultdict(list)
        for conn in self._hub.connections:
            if conn.principal is not None and not conn.closing:
                by_user[conn.principal.user_id].append(conn)
        now = time.time()
        for user_id, conns in by_user.items():
            principal = conns[0].principal
            assert principal is not None
            if principal.session_id != "dev":
                user = await self._authn.user(user_id)
                if user is None:
                    _close_all(conns, AuthError("the user no longer exists"))
                    continue
                if user.status != "active":
                    _close_all(conns, PermissionDenied(f"user account is {user.status}"))
                    continue
                revoked = await self._authn.revoked_before(user_id)
                subject = principal.subject
                if user.role != principal.role:
                    subject = type(subject)(user_id, user.role, True)
            else:
                subject = principal.subject
                revoked = 0.0
            rights: dict[str, Right] = {}
            frozen: dict[str, bool] = {}
            for conn in conns:
                if conn.principal is not None and 0 < conn.principal.expires_at < now:
                    conn.fail(AuthError("token expired; reconnect with a new one"))
                    continue
                if conn.principal is not None and revoked and conn.principal.issued_at <= revoked:
                    conn.fail(AuthError("your sessions were revoked; sign in again"))
                    continue
                document_id = conn.room_name.partition("/")[0]
                if document_id not in rights:
                    rights[document_id] = await self._access.right(subject, document_id)
                    facts = await self._access.document(document_id)
                    frozen[document_id] = facts is not None and facts.under_review
                # Read after the awaits: a freeze made meanwhile on this node holds.
                apply_right(
                    conn,
                    rights[document_id],
                    frozen=frozen[document_id] or self._frozen_here(document_id),
                )
        self.checks += 1


def apply_right(conn: Connection, right: Right, *, frozen: bool = False) -> None:
    """Bring one open connection in line with the user's current right, and with the
    document's review state (``frozen``: in review, everyone is read-only)."""
    if conn.closing:
        return
    if right < Right.VIEW:
        conn.right = right
        conn.fail(PermissionDenied("your access to this document was removed"))
        return
    changed = right != conn.right
    conn.right = right
    read_only = right < Right.EDIT or frozen
    if read_only != conn.read_only:
        conn.read_only = read_only
        changed = True
        if read_only:
            reason = (
                "read-only: the document is in review"
                if frozen
                else ("read-only: your edit right was removed")
            )
            conn.send(Frame(encode(AuthPermissionDenied(reason))))
        log.info("conn %s room %s: now %s", conn.id, conn.room_name, right.label)
    if changed:
        conn.send_event(
            AppEvent("access", {"right": right.label, "readOnly": read_only, "inReview": frozen})
        )


def _close_all(conns: list[Connection], exc: BaseException) -> None:
    for conn in conns:
        with contextlib.suppress(Exception):
            conn.fail(exc)
