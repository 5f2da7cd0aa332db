"""Comments on documents, live over the socket and through REST (``docs/comments.md``).

One service, :class:`CommentService`, does the work for both surfaces: it checks the
caller's right, anchors a comment to the live text of its section (the section's room is
loaded for it if no client has it open), stores it in the relational ``comments`` table,
audits it (``comment``), notifies mentioned users and thread authors, and publishes a
``comment`` event to every client of the document (every room, every node: the fan-out path
of :meth:`server.realtime.hub.Hub.emit`).

Over the socket (clients that joined with ``?events=1``, in any room of the document):
``comment.create``, ``comment.edit``, ``comment.resolve``, ``comment.reopen`` and
``comment.delete``. Each carries a ``requestId`` that the answer repeats: ``comment.ack``
once the database stored the change (never before), or a non-fatal ``error`` event with an
HTTP-style ``code`` (403, 404, 409, 422, 429, 503). The room's event hook is
synchronous, so each request runs in a task; the requests of one connection run one after
the other, in the order they arrived. A connection that is read-only for the text (comment
right, or a document in review) may still comment: comments are not CRDT updates.

A create may carry the comment's ``id`` (a UUID the client makes): sending it again after an
unknown outcome (the socket dropped before the ack) stores nothing twice and is acknowledged
with the stored comment.

Anchors are CRDT sticky indexes (:mod:`crdt.anchors`): offsets given in code points of the
section's text when created, resolved against the live text whenever a comment is shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from persistence.errors import RecordNotFound, StorageConflict, StorageError
from persistence.relational import (
    Comment,
    CommentQuery,
    InvalidTransitionError,
    NewComment,
    NewNotification,
    NotPermittedError,
    Page,
)
from protocol.events import AppEvent
from server.errors import (
    ConflictError,
    ForbiddenError,
    InvalidError,
    MalformedRequestError,
    NotFoundError,
)
from server.identity.authentication import Principal
from server.identity.rights import Right, Subject
from server.review.anchoring import LiveText, Stamp
from server.review.bodies import CreateBody, EditBody, ListQuery
from server.review.comment_views import comment_view, fit_event
from server.review.lanes import SOCKET_EVENTS, Lanes
from server.review.notifications import snippet

if TYPE_CHECKING:
    from server.hooks import Hooks
    from server.review.ports import ReviewPorts

log = logging.getLogger(__name__)


def install(hooks: Hooks, ports: ReviewPorts, tasks: asyncio.TaskGroup) -> CommentService:
    """Create the comment service and take the ``comment.*`` socket events."""
    service = CommentService(ports)
    lanes = Lanes(service, tasks)
    for name in SOCKET_EVENTS:
        hooks.on_event.handle(name, lanes.submit)
    return service


@contextlib.contextmanager
def store_errors(what: str = "comment") -> Iterator[None]:
    """Translate the review stores' refusals into domain errors: :class:`ForbiddenError`,
    :class:`NotFoundError` (titled ``what`` not found), :class:`ConflictError`; other storage
    errors go through (503 at the edge)."""
    try:
        yield
    except NotPermittedError as exc:
        raise ForbiddenError(str(exc)) from exc
    except RecordNotFound as exc:
        raise NotFoundError(str(exc), what=what) from exc
    except InvalidTransitionError as exc:
        raise ConflictError(str(exc), title="invalid transition") from exc
    except StorageConflict as exc:
        raise ConflictError(str(exc)) from exc


class CommentService:
    """Comments for both surfaces. Every method raises a domain error of
    :mod:`server.errors` on refusal (or lets a storage error through): the edge maps it."""

    def __init__(self, ports: ReviewPorts) -> None:
        self._ports = ports
        self._text = LiveText(ports.registry)
        self.stored = 0
        self.operations: Counter[str] = Counter()  # create, edit, resolve, reopen, delete

    # -- rights -----------------------------------------------------------------------------

    async def right(self, actor: Principal, document_id: str) -> Right:
        """The actor's right on the document (none outside a scoped token's documents)."""
        if not actor.may_open(document_id):
            return Right.NONE
        return await self._ports.access.right(actor.subject, document_id)

    async def require(
        self, actor: Principal, document_id: str, needed: Right, hidden: str = "document"
    ) -> Right:
        """The actor's right; 404 (nothing disclosed) below view, 403 below ``needed``."""
        right = await self.right(actor, document_id)
        if right < Right.VIEW:
            raise NotFoundError(f"no {hidden} here for you", what=hidden)
        if right < needed:
            raise ForbiddenError(
                f"this needs the {needed.label} right on the document; you have {right.label}",
            )
        return right

    async def _comment(
        self, actor: Principal, comment_id: uuid.UUID, needed: Right, within: str | None = None
    ) -> Comment:
        """A stored comment the actor has ``needed`` on (404 when they may not see it, or
        when it is not in document ``within``)."""
        with store_errors():
            comment = await self._ports.relational.comments.get(comment_id)
        if comment is None or (within is not None and comment.document_id != within):
            raise NotFoundError(f"no comment {comment_id}", what="comment")
        await self.require(actor, comment.document_id, needed, hidden="comment")
        return comment

    # -- reading ----------------------------------------------------------------------------

    async def get(self, actor: Principal, comment_id: uuid.UUID) -> dict[str, Any]:
        comment = await self._comment(actor, comment_id, Right.VIEW)
        return (await self.views([comment]))[0]

    async def find(
        self, actor: Principal, document_id: str, query: ListQuery
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the document's comments (oldest first) and how many match."""
        await self.require(actor, document_id, Right.VIEW)
        try:
            store_query = CommentQuery(
                document_id=document_id,
                section_id=query.section,
                unresolved_only=query.unresolved,
                thread_of=query.thread,
                include_deleted=query.deleted,
                limit=query.limit,
                offset=query.offset,
            )
        except ValueError as exc:
            raise MalformedRequestError(str(exc), title="invalid query parameter") from exc
        with store_errors():
            page: Page[Comment] = await self._ports.relational.comments.find(store_query)
        return await self.views(page.items), page.total

    # -- writing ----------------------------------------------------------------------------

    async def create(
        self, actor: Principal, document_id: str, body: CreateBody, via: str
    ) -> dict[str, Any]:
        """Store a new comment (or reply); returns its view. Publish it with :meth:`publish`."""
        await self.require(actor, document_id, Right.COMMENT)
        store = self._ports.relational.comments
        if body.id is not None:
            with store_errors():
                existing = await store.get(body.id)
            if existing is not None:
                if existing.author_id != actor.uuid or existing.document_id != document_id:
                    raise ConflictError(f"comment id {body.id} is taken")
                # A retry of a create that was stored: acknowledged again, nothing stored.
                return (await self.views([existing]))[0]
        parent = await self._parent(document_id, body)
        mentions = await self._mentions(document_id, body.mentions)
        section = body.section
        if section is not None and not await self._text.listed(document_id, section):
            raise InvalidError(
                field="section", message=f"document {document_id} has no section {section!r}"
            )
        made = await self._text.anchor(document_id, section, body.start, body.end, body.quote)
        anchor = made[0] if made is not None else None
        try:
            new = NewComment(
                document_id=document_id,
                author_id=actor.uuid,
                content=body.content,
                section_id=section,
                anchor=anchor,
                parent_id=body.parentId,
                mentions=mentions,
                id=body.id or uuid.uuid4(),
            )
        except ValueError as exc:
            raise InvalidError(str(exc)) from exc
        with store_errors():
            stored = await store.add(new)
        self.stored += 1
        self._ports.counted("comments")
        self._audit(actor, "create", stored, via)
        self._notify_created(actor, stored, parent)
        known = {stored.id: made[1]} if made is not None and made[1] is not None else None
        return (await self.views([stored], known))[0]

    async def edit(
        self,
        actor: Principal,
        comment_id: uuid.UUID,
        body: EditBody,
        via: str,
        *,
        within: str | None = None,
    ) -> dict[str, Any]:
        """Replace a comment's content (its author only)."""
        current = await self._comment(actor, comment_id, Right.COMMENT, within)
        if current.deleted:
            raise NotFoundError(f"comment {comment_id} is deleted", what="comment")
        if current.author_id != actor.uuid:
            raise ForbiddenError("only the author may edit a comment")
        mentions: tuple[uuid.UUID, ...] | None = None
        if body.mentions is not None:
            mentions = await self._mentions(current.document_id, body.mentions)
        with store_errors():
            if mentions is None:
                stored = await self._ports.relational.comments.edit(
                    comment_id, acting_user_id=actor.uuid, content=body.content
                )
            else:
                stored = await self._ports.relational.comments.edit(
                    comment_id, acting_user_id=actor.uuid, content=body.content, mentions=mentions
                )
        self._audit(actor, "edit", stored, via)
        added = [user for user in stored.mentions if user not in current.mentions]
        self._notify_mentions(actor, stored, added)
        return (await self.views([stored]))[0]

    async def resolve(
        self, actor: Principal, comment_id: uuid.UUID, via: str, *, within: str | None = None
    ) -> dict[str, Any]:
        """Resolve a thread (anyone with the comment right)."""
        await self._comment(actor, comment_id, Right.COMMENT, within)
        with store_errors():
            stored = await self._ports.relational.comments.resolve(comment_id, by=actor.uuid)
        self._audit(actor, "resolve", stored, via)
        return (await self.views([stored]))[0]

    async def reopen(
        self, actor: Principal, comment_id: uuid.UUID, via: str, *, within: str | None = None
    ) -> dict[str, Any]:
        """Reopen a resolved thread (anyone with the comment right)."""
        await self._comment(actor, comment_id, Right.COMMENT, within)
        with store_errors():
            stored = await self._ports.relational.comments.reopen(comment_id)
        self._audit(actor, "reopen", stored, via)
        return (await self.views([stored]))[0]

    async def delete(
        self, actor: Principal, comment_id: uuid.UUID, via: str, *, within: str | None = None
    ) -> dict[str, Any]:
        """Delete a comment (its author, or an admin of the document): it stays in its
        thread as a placeholder without content. Deleting it again changes nothing."""
        current = await self._comment(actor, comment_id, Right.COMMENT, within)
        right = await self.right(actor, current.document_id)
        is_admin = right >= Right.ADMIN
        if current.author_id != actor.uuid and not is_admin:
            raise ForbiddenError("only the author or an admin may delete a comment")
        with store_errors():
            changed = await self._ports.relational.comments.delete(
                comment_id, acting_user_id=actor.uuid, acting_is_admin=is_admin
            )
            stored = await self._ports.relational.comments.get(comment_id)
        if stored is None:
            raise NotFoundError(f"no comment {comment_id}", what="comment")
        if changed:
            self._audit(actor, "delete", stored, via)
        return (await self.views([stored]))[0]

    def publish(self, action: str, view: Mapping[str, Any]) -> None:
        """Send ``{"type": "comment", "action", "comment"}`` to every client of the
        document (every room, every node)."""
        fields = {"action": action, "comment": fit_event(view)}
        self._ports.hub.emit(str(view["documentId"]), AppEvent("comment", fields))

    # -- checks -----------------------------------------------------------------------------

    async def _parent(self, document_id: str, body: CreateBody) -> Comment | None:
        if body.parentId is None:
            return None
        if body.section is not None or body.start is not None or body.end is not None:
            raise InvalidError(
                field="parentId", message="a reply takes its thread's place: no section or anchor"
            )
        with store_errors():
            parent = await self._ports.relational.comments.get(body.parentId)
        if parent is None or parent.document_id != document_id:
            raise InvalidError(field="parentId", message="no such comment in this document")
        if parent.parent_id is not None:
            raise InvalidError(
                field="parentId", message="a reply answers a thread's first comment, not a reply"
            )
        if parent.deleted:
            raise ConflictError(f"comment {body.parentId} is deleted")
        return parent

    async def _mentions(
        self, document_id: str, mentions: Sequence[uuid.UUID]
    ) -> tuple[uuid.UUID, ...]:
        """The mentioned users, each once: they must exist and be able to view the document
        (a mention would otherwise tell them what it says)."""
        ids = tuple(dict.fromkeys(mentions))
        unknown, blind = [], []
        for user_id in ids:
            user = await self._ports.authn.user(str(user_id))
            if user is None:
                unknown.append(str(user_id))
                continue
            subject = Subject(str(user.id), user.role, user.status == "active")
            right = await self._ports.access.right(subject, document_id)
            if right < Right.VIEW:
                blind.append(str(user_id))
        if unknown:
            raise InvalidError(field="mentions", message=f"unknown users {unknown}")
        if blind:
            raise InvalidError(
                field="mentions", message=f"users who may not view this document {blind}"
            )
        return ids

    async def views(
        self, comments: Sequence[Comment], known: Mapping[uuid.UUID, Stamp] | None = None
    ) -> list[dict[str, Any]]:
        """Comments as the API and the events show them, anchors resolved now (``known``:
        positions stamped when the anchors were made, used if the text has not changed)."""
        positions = await self._text.positions(comments, known)
        people = {c.author_id for c in comments} | {
            c.resolved_by for c in comments if c.resolved_by is not None
        }
        names = {user_id: await self._name(user_id) for user_id in people}
        return [comment_view(c, names, positions.get(c.id)) for c in comments]

    async def _name(self, user_id: uuid.UUID) -> str | None:
        try:
            user = await self._ports.authn.user(str(user_id))
        except StorageError:
            return None
        return user.name if user is not None else None

    # -- side effects -----------------------------------------------------------------------

    def _audit(self, actor: Principal, op: str, comment: Comment, via: str) -> None:
        self.operations[op] += 1  # read by /metrics
        self._ports.audit.record(
            actor.context.entry(
                "comment",
                "comment",
                str(comment.id),
                {
                    "op": op,
                    "documentId": comment.document_id,
                    "section": comment.section_id,
                    "parentId": str(comment.parent_id) if comment.parent_id else None,
                    "via": via,
                },
            )
        )

    def _notify_created(self, actor: Principal, comment: Comment, parent: Comment | None) -> None:
        notifications = self._mention_notices(actor, comment, comment.mentions)
        told = {n.user_id for n in notifications}
        if parent is not None and parent.author_id != actor.uuid and parent.author_id not in told:
            notifications.append(
                NewNotification(
                    user_id=parent.author_id,
                    type="comment_reply",
                    title=snippet(f"{actor.name} replied to your comment", 255),
                    message=snippet(comment.content),
                    resource_type="comment",
                    resource_id=str(comment.id),
                )
            )
        self._ports.notifier.send_soon(notifications)

    def _notify_mentions(
        self, actor: Principal, comment: Comment, mentions: Sequence[uuid.UUID]
    ) -> None:
        self._ports.notifier.send_soon(self._mention_notices(actor, comment, mentions))

    @staticmethod
    def _mention_notices(
        actor: Principal, comment: Comment, mentions: Sequence[uuid.UUID]
    ) -> list[NewNotification]:
        return [
            NewNotification(
                user_id=user_id,
                type="comment_mention",
                title=snippet(f"{actor.name} mentioned you in {comment.document_id}", 255),
                message=snippet(comment.content),
                resource_type="comment",
                resource_id=str(comment.id),
            )
            for user_id in mentions
            if user_id != actor.uuid
        ]
