"""Notifications: what each user is told, stored, queued and pushed live.

A notification is delivered three ways, in this order:

1. a row of the ``notifications`` table (:class:`persistence.relational.NotificationStore`),
   the record the REST API lists (``/api/notifications``);
2. an entry of the coordinator's per-user queue ``notifications:{userId}`` (Redis in service
   mode), for delivery workers (e-mail, mobile push) to drain;
3. a ``notification`` application event to every open connection of the user that takes
   events, on every node (:meth:`server.realtime.hub.Hub.send_to_user`).

What notifies whom:

* ``comment_mention``: each user mentioned in a new comment (or newly, in an edit);
* ``comment_reply``: the author of the thread a reply joins (unless mentioned too);
* ``document_shared``: users a document's permission lists newly name, or name at a higher
  level (view < comment < edit), observed here;
* ``approval_requested``: the active users holding the current step's role
  (:mod:`server.review.approvals`);
* ``approval_decided``: the requestor, at every decision; the earlier reviewers, at the
  outcome (:mod:`server.review.approvals`).

"Document shared with you" is observed on the ``on_permission_change`` hook
(:mod:`server.hooks`), which the documents API fires at every permission change and the app at
every creation. Grants in the ``permissions`` table made outside the API are not observed.

Features are handed the app's :class:`Notifier` and call ``send_soon([...])``: delivery runs
in the background and never delays the request that caused it; a store outage is retried
(the rows are idempotent per id, so a retry never notifies twice).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from persistence.content.ports import ContentStore
from persistence.coordinator.ports import NotificationQueues
from persistence.errors import StorageConflict, StorageError
from persistence.relational import NewNotification, Notification, NotificationStore
from protocol.events import AppEvent
from server.hooks import Hooks, PermissionChange
from server.identity.rights import DOCUMENTS, RESOURCE_TYPE
from server.realtime.hub import Hub

if TYPE_CHECKING:
    from server.identity.authentication import Authenticator

log = logging.getLogger(__name__)

MAX_PER_CALL: Final = 1000  # NotificationStore.add takes at most this many at once
DELIVERY_ATTEMPTS: Final = 6
FIRST_RETRY_DELAY: Final = 0.2
MAX_SNIPPET: Final = 200
# Permission lists, weakest first: a user named in a stronger list than before was given more.
LEVELS: Final = ("view", "comment", "edit")


def install(
    hooks: Hooks,
    hub: Hub,
    ports: NotifierPorts,
    tasks: asyncio.TaskGroup,
) -> Notifier:
    """Create the app's notifier and subscribe it to permission changes."""
    notifier = Notifier(hub, ports, tasks)
    hooks.on_permission_change.subscribe(notifier.on_permission_change)
    return notifier


def iso(moment: datetime | None) -> str | None:
    """A time as the API writes it (ISO 8601, milliseconds, UTC offset)."""
    return None if moment is None else moment.isoformat(timespec="milliseconds")


def notification_view(notification: Notification) -> dict[str, Any]:
    """A notification as the API and the live event show it."""
    return {
        "id": str(notification.id),
        "type": notification.type,
        "title": notification.title,
        "message": notification.message,
        "resourceType": notification.resource_type,
        "resourceId": notification.resource_id,
        "read": notification.read,
        "readAt": iso(notification.read_at),
        "createdAt": iso(notification.created_at),
    }


def snippet(text: str, limit: int = MAX_SNIPPET) -> str:
    """The first ``limit`` characters of a text on one line (for notification messages)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


@dataclass(frozen=True, slots=True)
class NotifierPorts:
    """What the notifier stores to and reads from: the ``notifications`` rows, the per-user
    queues, the documents (who a document is shared with) and the users (names)."""

    rows: NotificationStore
    queues: NotificationQueues
    content: ContentStore
    users: Authenticator


class Notifier:
    """Stores notifications, queues them per user and pushes them to open connections."""

    def __init__(self, hub: Hub, ports: NotifierPorts, tasks: asyncio.TaskGroup) -> None:
        self._hub = hub
        self._ports = ports
        self._tasks = tasks
        self.delivered = 0
        self.failed = 0

    async def deliver(self, notifications: Sequence[NewNotification]) -> list[Notification]:
        """Store the notifications, then queue and push each one. Raises StorageError when
        they could not be stored (then nothing was queued or pushed); a queue failure is
        logged and does not stop the live push (the row is the record)."""
        stored: list[Notification] = []
        store = self._ports.rows
        for begin in range(0, len(notifications), MAX_PER_CALL):
            stored.extend(await store.add(notifications[begin : begin + MAX_PER_CALL]))
        for notification in stored:
            view = notification_view(notification)
            user_id = str(notification.user_id)
            try:
                await self._ports.queues.push(user_id, view)
            except (StorageError, ValueError) as exc:
                log.warning("notification %s: queueing for %s failed: %s", view["id"], user_id, exc)
            self._hub.send_to_user(user_id, AppEvent("notification", {"notification": view}))
        self.delivered += len(stored)
        return stored

    def send_soon(self, notifications: Sequence[NewNotification]) -> None:
        """Deliver in the background, retrying while the store is unavailable."""
        if notifications:
            self._tasks.create_task(self._deliver_retrying(list(notifications)), name="notify")

    async def _deliver_retrying(self, notifications: list[NewNotification]) -> None:
        delay = FIRST_RETRY_DELAY
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                await self.deliver(notifications)
                return
            except StorageConflict:
                # A recipient vanished (deleted user): deliver the others one by one.
                await self._deliver_each(notifications)
                return
            except StorageError as exc:
                if attempt == DELIVERY_ATTEMPTS:
                    self.failed += len(notifications)
                    log.error("%d notifications not delivered: %s", len(notifications), exc)
                    return
                log.warning("notifications: store unavailable (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay *= 2
            except Exception:
                self.failed += len(notifications)
                log.exception("delivering %d notifications failed", len(notifications))
                return

    async def _deliver_each(self, notifications: list[NewNotification]) -> None:
        for notification in notifications:
            try:
                await self.deliver([notification])
            except StorageError as exc:
                self.failed += 1
                log.warning("notification for %s dropped: %s", notification.user_id, exc)

    def tell_count(self, user_id: str, total: int, unread: int) -> None:
        """Tell a user's open connections their counts changed (after marking read)."""
        self._hub.send_to_user(
            user_id, AppEvent("notification.count", {"total": total, "unread": unread})
        )

    # -- documents shared ---------------------------------------------------------------------

    def on_permission_change(self, change: PermissionChange) -> None:
        """A document's permissions changed (or it was created): notify, in the background,
        the users it was newly shared with. Never raises into the caller."""
        try:
            if change.created:
                self._tasks.create_task(
                    self._shared_on_create(change.document_id, change.actor), name="notify shared"
                )
                return
            granted = newly_granted(change.before, change.after)
            if granted:
                self._tasks.create_task(
                    self._shared(change.document_id, change.actor, granted), name="notify shared"
                )
        except Exception:
            log.exception("document %s: sharing notifications failed", change.document_id)

    async def _shared_on_create(self, document_id: str, actor: uuid.UUID | None) -> None:
        try:
            record = await self._ports.content.get(DOCUMENTS, document_id)
        except StorageError as exc:
            log.warning("document %s: cannot read who it is shared with: %s", document_id, exc)
            return
        if record is None:
            return
        lists = dict(record.get("permissions") or {})
        lists["edit"] = [*(lists.get("edit") or []), *(record.get("contributors") or [])]
        granted = newly_granted(None, lists)
        granted.pop(str(record.get("owner")), None)
        if granted:
            await self._shared(document_id, actor, granted, record)

    async def _shared(
        self,
        document_id: str,
        actor: uuid.UUID | None,
        granted: Mapping[str, str],
        record: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            if record is None:
                record = await self._ports.content.get(DOCUMENTS, document_id)
            title = str((record or {}).get("title") or document_id)
            who = await self.user_name(str(actor)) if actor is not None else None
        except StorageError as exc:
            log.warning("document %s: sharing notifications skipped: %s", document_id, exc)
            return
        notifications = []
        for user_id, level in granted.items():
            if actor is not None and user_id == str(actor):
                continue
            try:
                recipient = uuid.UUID(user_id)
            except ValueError:
                continue
            notifications.append(
                NewNotification(
                    user_id=recipient,
                    type="document_shared",
                    title=snippet(f"{who or 'Someone'} shared \u201c{title}\u201d with you", 255),
                    message=f"You may now {level} \u201c{snippet(title)}\u201d.",
                    resource_type=RESOURCE_TYPE,
                    resource_id=document_id,
                )
            )
        self.send_soon(notifications)

    async def user_name(self, user_id: str) -> str | None:
        """A user's display name (cached lookups), None when unknown."""
        user = await self._ports.users.user(user_id)
        return user.name if user is not None else None


def newly_granted(before: object, after: object) -> dict[str, str]:
    """The users whose strongest level in the permission lists rose from ``before`` to
    ``after``, with their new level (``view``, ``comment`` or ``edit``)."""
    old, new = _levels(before), _levels(after)
    return {user: LEVELS[rank] for user, rank in new.items() if rank > old.get(user, -1)}


def _levels(lists: object) -> dict[str, int]:
    ranks: dict[str, int] = {}
    if not isinstance(lists, Mapping):
        return ranks
    for rank, level in enumerate(LEVELS):
        users = lists.get(level)
        if isinstance(users, list):
            for user in users:
                if isinstance(user, str):
                    ranks[user] = max(ranks.get(user, -1), rank)
    return ranks
