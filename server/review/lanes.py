"""The ``comment.*`` socket requests (``docs/comments.md``).

Clients that joined with ``?events=1``, in any room of the document, send
``comment.create``, ``comment.edit``, ``comment.resolve``, ``comment.reopen`` and
``comment.delete``, each with a ``requestId`` that the answer repeats: ``comment.ack`` once
the database stored the change (never before), or a non-fatal ``error`` event
(:func:`server.errors.failure_event`: the HTTP-style ``code`` of the one error table). The
room's event hook is synchronous, so each request runs in a task; the requests of one
connection run one after the other, in the order they arrived (``persistence/keyed.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from pydantic import ValidationError

from persistence.keyed import Hold, KeyedLocks
from protocol.events import AppEvent
from server.errors import UNEXPECTED, AuthError, RateLimited, classify, failure_event, invalid_body
from server.hooks import ConnectionView, RoomView
from server.review.bodies import CreateBody, EditBody, SocketEditBody, TargetBody
from server.review.comment_views import fit_event

if TYPE_CHECKING:
    import uuid

    from server.identity.authentication import Principal

log = logging.getLogger(__name__)


class CommentService(Protocol):
    """What the lanes ask of the comment service (``comments.py``, which satisfies it), so
    this module does not import the service that owns it. Each action returns the comment's
    view and raises the domain errors of ``server/errors.py``."""

    async def create(
        self, actor: Principal, document_id: str, body: CreateBody, via: str
    ) -> dict[str, Any]:
        """Store a new comment (or reply)."""
        ...

    async def edit(
        self,
        actor: Principal,
        comment_id: uuid.UUID,
        body: EditBody,
        via: str,
        *,
        within: str | None = None,
    ) -> dict[str, Any]:
        """Replace a comment's content."""
        ...

    async def resolve(
        self, actor: Principal, comment_id: uuid.UUID, via: str, *, within: str | None = None
    ) -> dict[str, Any]:
        """Resolve a thread."""
        ...

    async def reopen(
        self, actor: Principal, comment_id: uuid.UUID, via: str, *, within: str | None = None
    ) -> dict[str, Any]:
        """Reopen a resolved thread."""
        ...

    async def delete(
        self, actor: Principal, comment_id: uuid.UUID, via: str, *, within: str | None = None
    ) -> dict[str, Any]:
        """Delete a comment (it stays as a placeholder)."""
        ...

    def publish(self, action: str, view: Mapping[str, Any]) -> None:
        """Send the comment event to every client of the document."""
        ...


MAX_PENDING_PER_CONNECTION: Final = 64
MAX_REQUEST_ID_CHARS: Final = 128
SOCKET_EVENTS: Final = (
    "comment.create",
    "comment.edit",
    "comment.resolve",
    "comment.reopen",
    "comment.delete",
)


def _request_id(event: AppEvent) -> str | int | None:
    value = event.get("requestId")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) <= MAX_REQUEST_ID_CHARS):
        return value
    return None


def _fields(event: AppEvent) -> dict[str, Any]:
    return {k: v for k, v in event.fields.items() if k != "requestId"}


class Lanes:
    """Runs each connection's comment requests in order (a :class:`KeyedLocks` by
    connection: one task per request, each holding the connection's key while it runs)."""

    def __init__(self, service: CommentService, tasks: asyncio.TaskGroup) -> None:
        self._service = service
        self._tasks = tasks
        self._lanes: KeyedLocks[int] = KeyedLocks()

    def submit(self, room: RoomView, conn: ConnectionView, event: AppEvent) -> None:
        """The rooms' hook (synchronous): queue the request behind the connection's others."""
        if self._lanes.waiting(conn.id) >= MAX_PENDING_PER_CONNECTION:
            error = RateLimited(
                f"at most {MAX_PENDING_PER_CONNECTION} comment requests may wait per connection",
                1.0,
            )
            conn.send_event(failure_event(error, _request_id(event)))
            return
        place = self._lanes.hold(conn.id)  # counted now, so the bound sees it at once
        task = self._tasks.create_task(self._serve(conn, event, place), name=f"comments {conn.id}")
        # A task cancelled before it ran (shutdown) never entered its place: give it up.
        task.add_done_callback(lambda _: place.cancel())

    async def _serve(self, conn: ConnectionView, event: AppEvent, place: Hold[int]) -> None:
        async with place:
            await self._service_one(conn, event)

    async def _service_one(self, conn: ConnectionView, event: AppEvent) -> None:
        request_id = _request_id(event)
        try:
            action, view = await _run(self._service, conn, event)
        except ValidationError as exc:
            conn.send_event(failure_event(invalid_body(exc), request_id))
            return
        except Exception as exc:
            if classify(exc) is UNEXPECTED:
                log.exception("conn %s: comment request %s failed", conn.id, event.type)
            conn.send_event(failure_event(exc, request_id))
            return
        conn.send_event(
            AppEvent("comment.ack", {"requestId": request_id, "comment": fit_event(view)})
        )
        self._service.publish(action, view)


async def _run(
    service: CommentService, conn: ConnectionView, event: AppEvent
) -> tuple[str, dict[str, Any]]:
    """Carry out one socket request: the action to publish and the comment's view."""
    actor = conn.principal
    if actor is None:
        raise AuthError("the connection has no user")
    document_id = conn.room_name.partition("/")[0]
    fields = _fields(event)
    if event.type == "comment.create":
        body = CreateBody.model_validate(fields)
        return "created", await service.create(actor, document_id, body, "socket")
    if event.type == "comment.edit":
        edit = SocketEditBody.model_validate(fields)
        return "edited", await service.edit(actor, edit.id, edit, "socket", within=document_id)
    target = TargetBody.model_validate(fields).id
    if event.type == "comment.resolve":
        return "resolved", await service.resolve(actor, target, "socket", within=document_id)
    if event.type == "comment.reopen":
        return "reopened", await service.reopen(actor, target, "socket", within=document_id)
    return "deleted", await service.delete(actor, target, "socket", within=document_id)
