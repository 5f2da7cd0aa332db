"""Comments on documents, live over the socket and through REST (``docs/comments.md``).

One service, :class:`CommentService`, does the work for both surfaces: it checks the
caller's right, anchors a comment to the live text of its section (the section's room is
loaded for it if no client has it open), stores it in the relational ``comments`` table,
audits it (``comment``), notifies mentioned users and thread authors, and publishes a
``comment`` event to every client of the document (every room, every node: the fan-out path
of :meth:`server.app.Collab.emit`).

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
import base64
import collections
import contextlib
import logging
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import ConfigDict, Field, StringConstraints, ValidationError, field_validator

from crdt.anchors import Anchor, InvalidAnchor, Orphaned, create_anchor, resolve_anchors
from crdt.document import CrdtDoc, CrdtText
from crdt.ids import MAX_ID_LENGTH, RoomName
from crdt.outline import Outline
from crdt.section import section_content
from persistence.errors import (
    RecordNotFound,
    StorageConflict,
    StorageError,
)
from persistence.relational import (
    Comment,
    CommentQuery,
    InvalidTransitionError,
    NewComment,
    NewNotification,
    NotPermittedError,
    Page,
)
from persistence.relational.review_records import MAX_MENTIONS
from protocol.events import MAX_EVENT_BYTES, AppEvent, encode_event
from server.api.common import ApiError, Model, validation_problem
from server.errors import STORAGE_DETAIL, RoomNotFound, RoomUnavailable
from server.identity.authentication import Principal
from server.identity.rights import Right, Subject
from server.realtime.connection import Connection
from server.review.notifications import iso, notifier, snippet

if TYPE_CHECKING:
    from crdt.document import RoomDoc
    from server.app import Collab
    from server.realtime.rooms import Room

log = logging.getLogger(__name__)

MAX_CONTENT_CHARS: Final = 10_000
MAX_ANCHOR_CHARS: Final = 10_000
MAX_PENDING_PER_CONNECTION: Final = 64
MAX_REQUEST_ID_CHARS: Final = 128
# Events must stay under the clients' 64 KiB decoding limit: past this size the quote and
# the resolved text are cut (``truncated: true``); the REST view always has them whole.
EVENT_BUDGET: Final = MAX_EVENT_BYTES - 4096
EVENT_TEXT_CHARS: Final = 1_000
SOCKET_EVENTS: Final = (
    "comment.create",
    "comment.edit",
    "comment.resolve",
    "comment.reopen",
    "comment.delete",
)

SectionId = Annotated[
    str, StringConstraints(pattern=rf"^[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}$", strip_whitespace=False)
]
Content = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CONTENT_CHARS)]
Offset = Annotated[int, Field(ge=0, le=2**31)]


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _strip_no_nul(value: str) -> str:
    value = _no_nul(value).strip()
    if not value:
        raise ValueError("must not be blank")
    return value


class CreateBody(Model):
    """A new comment (``POST .../comments``, ``comment.create``).

    ``start`` / ``end`` are code-point offsets in the section's text as the client sees it;
    ``quote``, when given, is the text they enclose there: if the server's text moved
    meanwhile (concurrent edits the client has not seen yet), the occurrence of the quote
    nearest to ``start`` is anchored instead, and a quote no longer in the text is a 409.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    id: uuid.UUID | None = None
    section: SectionId | None = None
    start: Offset | None = None
    end: Offset | None = None
    quote: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ANCHOR_CHARS)] | None = (
        None
    )
    content: Content
    parentId: uuid.UUID | None = None
    mentions: list[uuid.UUID] = Field(default_factory=list, max_length=MAX_MENTIONS)

    @field_validator("content")
    @classmethod
    def _check_content(cls, value: str) -> str:
        return _strip_no_nul(value)


class EditBody(Model):
    """New content for a comment (``PATCH /comments/{id}``, ``comment.edit``); the mentions
    are replaced only when given."""

    content: Content
    mentions: list[uuid.UUID] | None = Field(None, max_length=MAX_MENTIONS)

    @field_validator("content")
    @classmethod
    def _check_content(cls, value: str) -> str:
        return _no_nul(value)


class TargetBody(Model):
    """The comment a socket request acts on."""

    id: uuid.UUID


class SocketEditBody(EditBody):
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Filters of a listing (``GET /documents/{id}/comments``)."""

    section: str | None = None
    unresolved: bool = False
    thread: uuid.UUID | None = None
    deleted: bool = False
    limit: int = 50
    offset: int = 0


_services: weakref.WeakKeyDictionary[Collab, CommentService] = weakref.WeakKeyDictionary()


def install(collab: Collab, tasks: asyncio.TaskGroup) -> None:
    """Create the comment service and take the ``comment.*`` socket events."""
    service = CommentService(collab)
    _services[collab] = service
    lanes = _Lanes(service, tasks)
    for name in SOCKET_EVENTS:
        collab.hooks.on_event.handle(name, lanes.submit)


def comments_of(collab: Collab) -> CommentService:
    """The app's comment service (made by :func:`install`)."""
    found = _services.get(collab)
    if found is None:
        raise RuntimeError("comments are not installed on this app")
    return found


@contextlib.contextmanager
def store_errors(what: str = "comment") -> Iterator[None]:
    """Translate the review stores' errors into API errors (status, title, detail)."""
    try:
        yield
    except NotPermittedError as exc:
        raise ApiError(403, "forbidden", str(exc)) from exc
    except RecordNotFound as exc:
        raise ApiError(404, f"{what} not found", str(exc)) from exc
    except InvalidTransitionError as exc:
        raise ApiError(409, "invalid transition", str(exc)) from exc
    except StorageConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    except StorageError as exc:
        raise ApiError(
            503, "storage unavailable", STORAGE_DETAIL, headers={"Retry-After": "5"}
        ) from exc


def _invalid(field: str, message: str, title: str = "invalid request") -> ApiError:
    return ApiError(
        422, title, f"{field}: {message}", extra={"errors": [{"field": field, "message": message}]}
    )


class CommentService:
    """Comments for both surfaces; every method raises :class:`ApiError` on refusal."""

    def __init__(self, collab: Collab) -> None:
        self._collab = collab
        self.stored = 0

    # -- rights -----------------------------------------------------------------------------

    async def right(self, actor: Principal, document_id: str) -> Right:
        """The actor's right on the document (none outside a scoped token's documents)."""
        if not actor.may_open(document_id):
            return Right.NONE
        try:
            return await self._collab.access.right(actor.subject, document_id)
        except StorageError as exc:
            raise ApiError(503, "storage unavailable", STORAGE_DETAIL) from exc

    async def require(
        self, actor: Principal, document_id: str, needed: Right, hidden: str = "document"
    ) -> Right:
        """The actor's right; 404 (nothing disclosed) below view, 403 below ``needed``."""
        right = await self.right(actor, document_id)
        if right < Right.VIEW:
            raise ApiError(404, f"{hidden} not found", f"no {hidden} here for you")
        if right < needed:
            raise ApiError(
                403,
                "forbidden",
                f"this needs the {needed.label} right on the document; you have {right.label}",
            )
        return right

    async def _comment(
        self, actor: Principal, comment_id: uuid.UUID, needed: Right, within: str | None = None
    ) -> Comment:
        """A stored comment the actor has ``needed`` on (404 when they may not see it, or
        when it is not in document ``within``)."""
        with store_errors():
            comment = await self._collab.relational.comments.get(comment_id)
        if comment is None or (within is not None and comment.document_id != within):
            raise ApiError(404, "comment not found", f"no comment {comment_id}")
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
            raise ApiError(400, "invalid query parameter", str(exc)) from exc
        with store_errors():
            page: Page[Comment] = await self._collab.relational.comments.find(store_query)
        return await self.views(page.items), page.total

    # -- writing ----------------------------------------------------------------------------

    async def create(
        self, actor: Principal, document_id: str, body: CreateBody, via: str
    ) -> dict[str, Any]:
        """Store a new comment (or reply); returns its view. Publish it with :meth:`publish`."""
        await self.require(actor, document_id, Right.COMMENT)
        store = self._collab.relational.comments
        if body.id is not None:
            with store_errors():
                existing = await store.get(body.id)
            if existing is not None:
                if existing.author_id != actor.uuid or existing.document_id != document_id:
                    raise ApiError(409, "conflict", f"comment id {body.id} is taken")
                # A retry of a create that was stored: acknowledged again, nothing stored.
                return (await self.views([existing]))[0]
        parent = await self._parent(document_id, body)
        mentions = await self._mentions(document_id, body.mentions)
        section = body.section
        if section is not None and not await self._listed(document_id, section):
            raise _invalid("section", f"document {document_id} has no section {section!r}")
        made = await self._anchor(document_id, section, body.start, body.end, body.quote)
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
            raise ApiError(422, "invalid request", str(exc)) from exc
        with store_errors():
            stored = await store.add(new)
        self.stored += 1
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
            raise ApiError(404, "comment not found", f"comment {comment_id} is deleted")
        if current.author_id != actor.uuid:
            raise ApiError(403, "forbidden", "only the author may edit a comment")
        mentions: tuple[uuid.UUID, ...] | None = None
        if body.mentions is not None:
            mentions = await self._mentions(current.document_id, body.mentions)
        with store_errors():
            if mentions is None:
                stored = await self._collab.relational.comments.edit(
                    comment_id, acting_user_id=actor.uuid, content=body.content
                )
            else:
                stored = await self._collab.relational.comments.edit(
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
            stored = await self._collab.relational.comments.resolve(comment_id, by=actor.uuid)
        self._audit(actor, "resolve", stored, via)
        return (await self.views([stored]))[0]

    async def reopen(
        self, actor: Principal, comment_id: uuid.UUID, via: str, *, within: str | None = None
    ) -> dict[str, Any]:
        """Reopen a resolved thread (anyone with the comment right)."""
        await self._comment(actor, comment_id, Right.COMMENT, within)
        with store_errors():
            stored = await self._collab.relational.comments.reopen(comment_id)
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
            raise ApiError(403, "forbidden", "only the author or an admin may delete a comment")
        with store_errors():
            changed = await self._collab.relational.comments.delete(
                comment_id, acting_user_id=actor.uuid, acting_is_admin=is_admin
            )
            stored = await self._collab.relational.comments.get(comment_id)
        if stored is None:
            raise ApiError(404, "comment not found", f"no comment {comment_id}")
        if changed:
            self._audit(actor, "delete", stored, via)
        return (await self.views([stored]))[0]

    def publish(self, action: str, view: Mapping[str, Any]) -> None:
        """Send ``{"type": "comment", "action", "comment"}`` to every client of the
        document (every room, every node)."""
        fields = {"action": action, "comment": fit_event(view)}
        self._collab.hub.emit(str(view["documentId"]), AppEvent("comment", fields))

    # -- checks -----------------------------------------------------------------------------

    async def _parent(self, document_id: str, body: CreateBody) -> Comment | None:
        if body.parentId is None:
            return None
        if body.section is not None or body.start is not None or body.end is not None:
            raise _invalid("parentId", "a reply takes its thread's place: no section or anchor")
        with store_errors():
            parent = await self._collab.relational.comments.get(body.parentId)
        if parent is None or parent.document_id != document_id:
            raise _invalid("parentId", "no such comment in this document")
        if parent.parent_id is not None:
            raise _invalid("parentId", "a reply answers a thread's first comment, not a reply")
        if parent.deleted:
            raise ApiError(409, "conflict", f"comment {body.parentId} is deleted")
        return parent

    async def _mentions(
        self, document_id: str, mentions: Sequence[uuid.UUID]
    ) -> tuple[uuid.UUID, ...]:
        """The mentioned users, each once: they must exist and be able to view the document
        (a mention would otherwise tell them what it says)."""
        ids = tuple(dict.fromkeys(mentions))
        unknown, blind = [], []
        for user_id in ids:
            try:
                user = await self._collab.authn.user(str(user_id))
                if user is None:
                    unknown.append(str(user_id))
                    continue
                subject = Subject(str(user.id), user.role, user.status == "active")
                right = await self._collab.access.right(subject, document_id)
            except StorageError as exc:
                raise ApiError(503, "storage unavailable", STORAGE_DETAIL) from exc
            if right < Right.VIEW:
                blind.append(str(user_id))
        if unknown:
            raise _invalid("mentions", f"unknown users {unknown}")
        if blind:
            raise _invalid("mentions", f"users who may not view this document {blind}")
        return ids

    async def _anchor(
        self,
        document_id: str,
        section: str | None,
        start: int | None,
        end: int | None,
        quote: str | None = None,
    ) -> tuple[Anchor, _Stamp | None] | None:
        """The anchor of a new comment (None without one), made on the live text, and a
        stamp of where it lies in that text (reused while the text is unchanged)."""
        if start is None and end is None:
            if quote is not None:
                raise _invalid("quote", "a quote goes with start and end")
            return None
        if start is None or end is None:
            raise _invalid("start", "an anchor needs both start and end")
        if section is None:
            raise _invalid("section", "an anchor needs the section its text is in")
        if end - start > MAX_ANCHOR_CHARS:
            raise _invalid("end", f"an anchor spans at most {MAX_ANCHOR_CHARS} characters")
        doc = await self.section_doc(document_id, section)
        if doc is None:
            raise _invalid("section", f"document {document_id} has no section {section!r}")
        # No await from here on: the anchor is made on the text as it is at this instant.
        text = section_content(doc)
        if quote is not None:
            start, end = _locate_quote(str(text), start, end, quote)
        try:
            anchor = create_anchor(text, start, end)
        except ValueError as exc:
            raise _invalid("start", str(exc), "anchor out of range") from exc
        position = {"start": start, "end": end, "text": anchor.quote}
        return anchor, self._stamp(document_id, section, position)

    def _stamp(self, document_id: str, section_id: str, position: dict[str, Any]) -> _Stamp | None:
        room = self._collab.registry.room(str(RoomName(document_id, section_id)))
        if room is None:
            return None
        return _Stamp(room, room.doc, room.updates_applied, position)

    def _still(self, stamp: _Stamp) -> dict[str, Any] | None:
        """The stamped position if the room's text has not changed since (same room, same
        document, no update applied): resolving again would give the same answer."""
        room = stamp.room
        current = self._collab.registry.room(room.key)
        if current is room and room.doc is stamp.doc and room.updates_applied == stamp.version:
            return stamp.position
        return None

    # -- the live text ----------------------------------------------------------------------

    async def _listed(self, document_id: str, section_id: str) -> bool:
        """Whether the document's outline lists the section (loads the outline if needed)."""
        registry = self._collab.registry
        live = registry.live_doc(str(RoomName(document_id)))
        if live is not None:
            return section_id in Outline(live.doc)
        found: list[bool] = []
        try:
            await registry.edit(
                RoomName(document_id),
                lambda doc: found.append(section_id in Outline(doc)),
                "comments: read the outline",
            )
        except (RoomNotFound, RoomUnavailable) as exc:
            raise ApiError(503, "room unavailable", str(exc), headers={"Retry-After": "5"}) from exc
        return bool(found and found[0])

    async def section_doc(self, document_id: str, section_id: str) -> CrdtDoc | None:
        """The live document of a listed section (its room loaded if nobody has it open);
        None when the outline does not list it. Use it before the next await."""
        registry = self._collab.registry
        key = str(RoomName(document_id, section_id))
        live = registry.live_doc(key)
        if live is not None:
            return live.doc
        if not await self._listed(document_id, section_id):
            return None
        try:
            await registry.edit(RoomName(document_id, section_id), _nothing, "comments: load")
        except (RoomNotFound, RoomUnavailable) as exc:
            raise ApiError(503, "room unavailable", str(exc), headers={"Retry-After": "5"}) from exc
        live = registry.live_doc(key)
        if live is None:
            raise ApiError(503, "room unavailable", f"room {key} could not be loaded")
        return live.doc

    async def _positions(
        self, comments: Sequence[Comment], known: Mapping[uuid.UUID, _Stamp] | None = None
    ) -> dict[uuid.UUID, dict[str, Any]]:
        """Where each anchored comment's range lies in the live text now."""
        groups: dict[tuple[str, str], list[Comment]] = collections.defaultdict(list)
        positions: dict[uuid.UUID, dict[str, Any]] = {}
        for comment in comments:
            if comment.anchor is None or not comment.section_id or comment.deleted:
                continue
            stamp = known.get(comment.id) if known else None
            still = self._still(stamp) if stamp is not None else None
            if still is not None:
                positions[comment.id] = still
            else:
                groups[(comment.document_id, comment.section_id)].append(comment)
        for (document_id, section_id), group in groups.items():
            try:
                doc = await self.section_doc(document_id, section_id)
            except ApiError:
                positions.update({c.id: {"unavailable": True} for c in group})
                continue
            if doc is None:  # the section was removed: nothing left to point at
                positions.update({c.id: {"orphaned": True} for c in group})
                continue
            positions.update(_resolve(section_content(doc), group))
        return positions

    async def views(
        self, comments: Sequence[Comment], known: Mapping[uuid.UUID, _Stamp] | None = None
    ) -> list[dict[str, Any]]:
        """Comments as the API and the events show them, anchors resolved now (``known``:
        positions stamped when the anchors were made, used if the text has not changed)."""
        positions = await self._positions(comments, known)
        people = {c.author_id for c in comments} | {
            c.resolved_by for c in comments if c.resolved_by is not None
        }
        names = {user_id: await self._name(user_id) for user_id in people}
        return [comment_view(c, names, positions.get(c.id)) for c in comments]

    async def _name(self, user_id: uuid.UUID) -> str | None:
        try:
            user = await self._collab.authn.user(str(user_id))
        except StorageError:
            return None
        return user.name if user is not None else None

    # -- side effects -----------------------------------------------------------------------

    def _audit(self, actor: Principal, op: str, comment: Comment, via: str) -> None:
        self._collab.audit.record(
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
        notifier(self._collab).send_soon(notifications)

    def _notify_mentions(
        self, actor: Principal, comment: Comment, mentions: Sequence[uuid.UUID]
    ) -> None:
        notifier(self._collab).send_soon(self._mention_notices(actor, comment, mentions))

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


@dataclass(frozen=True, slots=True)
class _Stamp:
    """Where a range lay in a room's text, and the room's version then."""

    room: Room
    doc: RoomDoc
    version: int
    position: dict[str, Any]


def _locate_quote(text: str, start: int, end: int, quote: str) -> tuple[int, int]:
    """The range of ``quote`` in ``text``: ``[start, end)`` if it holds it, else the
    occurrence nearest to ``start``; 409 when the text holds it nowhere."""
    if text[start:end] == quote:
        return start, end
    best: int | None = None
    found = text.find(quote)
    while found != -1:
        if best is None or abs(found - start) < abs(best - start):
            best = found
        found = text.find(quote, found + 1)
    if best is None:
        raise ApiError(
            409,
            "quote not found",
            "the quoted text is no longer in the section: the text changed meanwhile",
        )
    return best, best + len(quote)


def _nothing(doc: CrdtDoc) -> None:
    """A server-side "edit" that changes nothing: loads a room through the registry."""


def _resolve(text: CrdtText, group: Sequence[Comment]) -> dict[uuid.UUID, dict[str, Any]]:
    anchors = [c.anchor for c in group if c.anchor is not None]
    try:
        results = resolve_anchors(text, anchors)
    except InvalidAnchor:
        # One bad anchor must not hide the others: resolve them one by one.
        results = []
        for anchor in anchors:
            try:
                results.extend(resolve_anchors(text, [anchor]))
            except InvalidAnchor as exc:
                log.warning("an anchor does not resolve in its section: %s", exc)
                results.append(Orphaned(anchor.quote))
    positions: dict[uuid.UUID, dict[str, Any]] = {}
    for comment, result in zip(group, results, strict=True):
        if isinstance(result, Orphaned):
            positions[comment.id] = {"orphaned": True}
        else:
            positions[comment.id] = {
                "start": result.start,
                "end": result.end,
                "text": result.content,
            }
    return positions


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def comment_view(
    comment: Comment,
    names: Mapping[uuid.UUID, str | None],
    position: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One comment as JSON (see ``docs/api.md``)."""
    anchor = comment.anchor if not comment.deleted else None
    resolved = None
    if comment.resolved and comment.resolved_by is not None:
        resolved = {
            "by": {"id": str(comment.resolved_by), "name": names.get(comment.resolved_by)},
            "at": iso(comment.resolved_at),
        }
    return {
        "id": str(comment.id),
        "documentId": comment.document_id,
        "section": comment.section_id,
        "parentId": str(comment.parent_id) if comment.parent_id is not None else None,
        "author": {"id": str(comment.author_id), "name": names.get(comment.author_id)},
        "content": comment.content,
        "mentions": [str(user_id) for user_id in comment.mentions],
        "resolved": resolved,
        "createdAt": iso(comment.created_at),
        "updatedAt": iso(comment.updated_at),
        "editedAt": iso(comment.edited_at),
        "deleted": comment.deleted,
        "deletedAt": iso(comment.deleted_at),
        "quote": anchor.quote if anchor is not None else None,
        "anchor": dict(position) if anchor is not None and position is not None else None,
        "sticky": {"start": _b64(anchor.start), "end": _b64(anchor.end)} if anchor else None,
    }


def fit_event(view: Mapping[str, Any]) -> dict[str, Any]:
    """The view, with the quote and resolved text cut if the event would pass the clients'
    64 KiB limit (``truncated: true`` then; the REST view has them whole)."""
    fitted = dict(view)
    anchor = fitted.get("anchor")
    texts = [fitted.get("content"), fitted.get("quote")]
    if isinstance(anchor, Mapping):
        texts.append(anchor.get("text"))
    if sum(len(t) for t in texts if isinstance(t, str)) * 4 <= EVENT_BUDGET // 2:
        return fitted  # small enough whatever the characters: no need to measure
    if len(encode_event(AppEvent("comment", {"comment": fitted}))) <= EVENT_BUDGET:
        return fitted
    if isinstance(fitted.get("quote"), str):
        fitted["quote"] = fitted["quote"][:EVENT_TEXT_CHARS]
    if isinstance(anchor, Mapping) and isinstance(anchor.get("text"), str):
        fitted["anchor"] = {**anchor, "text": anchor["text"][:EVENT_TEXT_CHARS]}
    fitted["truncated"] = True
    return fitted


# -- the socket --------------------------------------------------------------------------------


def _request_id(event: AppEvent) -> str | int | None:
    value = event.get("requestId")
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and len(value) <= MAX_REQUEST_ID_CHARS):
        return value
    return None


def _fields(event: AppEvent) -> dict[str, Any]:
    return {k: v for k, v in event.fields.items() if k != "requestId"}


def request_error(request_id: str | int | None, error: ApiError) -> AppEvent:
    """The non-fatal ``error`` event answering a socket request that failed."""
    fields: dict[str, Any] = {
        "code": error.status,
        "title": error.title,
        "detail": error.detail,
        "fatal": False,
        "requestId": request_id,
    }
    if "errors" in error.extra:
        fields["errors"] = error.extra["errors"]
    return AppEvent("error", fields)


class _Lanes:
    """Runs each connection's comment requests in order, one task per busy connection."""

    def __init__(self, service: CommentService, tasks: asyncio.TaskGroup) -> None:
        self._service = service
        self._tasks = tasks
        self._lanes: dict[int, collections.deque[AppEvent]] = {}

    def submit(self, room: Room, conn: Connection, event: AppEvent) -> None:
        """The rooms' hook (synchronous): queue the request behind the connection's others."""
        lane = self._lanes.get(conn.id)
        if lane is None:
            lane = collections.deque([event])
            self._lanes[conn.id] = lane
            self._tasks.create_task(self._drain(conn, lane), name=f"comments {conn.id}")
        elif len(lane) >= MAX_PENDING_PER_CONNECTION:
            error = ApiError(
                429,
                "too many requests",
                f"at most {MAX_PENDING_PER_CONNECTION} comment requests may wait per connection",
            )
            conn.send_event(request_error(_request_id(event), error))
        else:
            lane.append(event)

    async def _drain(self, conn: Connection, lane: collections.deque[AppEvent]) -> None:
        try:
            while lane:
                await self._service_one(conn, lane[0])
                lane.popleft()
        finally:
            del self._lanes[conn.id]

    async def _service_one(self, conn: Connection, event: AppEvent) -> None:
        request_id = _request_id(event)
        try:
            action, view = await _run(self._service, conn, event)
        except ApiError as exc:
            conn.send_event(request_error(request_id, exc))
            return
        except ValidationError as exc:
            conn.send_event(request_error(request_id, validation_problem(exc)))
            return
        except Exception:
            log.exception("conn %s: comment request %s failed", conn.id, event.type)
            conn.send_event(request_error(request_id, ApiError(500, "internal error")))
            return
        conn.send_event(
            AppEvent("comment.ack", {"requestId": request_id, "comment": fit_event(view)})
        )
        self._service.publish(action, view)


async def _run(
    service: CommentService, conn: Connection, event: AppEvent
) -> tuple[str, dict[str, Any]]:
    """Carry out one socket request: the action to publish and the comment's view."""
    actor = conn.principal
    if actor is None:
        raise ApiError(401, "unauthenticated", "the connection has no user")
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
