"""The business documents API: records of ``business_documents``, their content, their
workflow status and their revisions, over REST (``docs/api.md``).

* ``POST /documents``: create a document (the caller's role must allow creating), with its
  initial sections written into the live rooms;
* ``GET /documents``: the documents the caller may view, filtered, sorted and paged;
* ``GET /documents/{id}`` (view), ``PATCH`` (edit: metadata), ``DELETE`` (admin: archive;
  ``?hard=1`` deletes, admins only), ``PUT .../permissions`` (admin);
* ``POST .../status`` (edit; approve to approve or publish): the workflow
  draft -> review -> approved -> published -> archived, review -> draft, any -> archived;
* ``.../revisions``: list, get, diff, save, restore;
* ``GET .../export?format=markdown`` (view).

The CRDT rooms are the source of truth of the content: the REST side writes sections only
through the registry's server-side edits (journaled, then broadcast like a client's), and
reads ``content`` as the snapshotter last wrote it (``?fresh=1`` renders it first).

Every mutation queues an audit entry; every read of a document's content and every export
queues a data-access entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import AfterValidator, Field, StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from crdt.document import CrdtDoc
from crdt.ids import MAX_ID_LENGTH, RoomName, is_reserved_id
from crdt.markdown import ContentSection
from crdt.outline import Outline, new_outline_update
from crdt.revisions import SectionDiff, diff_sections, restore_outline, sections_from_dicts
from crdt.section import set_section_text
from persistence.content.ports import HEAVY_REVISION_FIELDS, MAX_QUERY_IDS, Query
from persistence.errors import StorageConflict
from persistence.relational import ApprovalQuery
from server.api.common import (
    ApiError,
    Model,
    access_logged,
    audit,
    authenticated,
    check_params,
    collab_of,
    document_id_of,
    new_id,
    query_flag,
    query_int,
    read_json,
    require,
)
from server.documents.revisions import RevisionNotFound
from server.errors import RoomNotFound, RoomUnavailable
from server.hooks import PermissionChange
from server.identity.authentication import Principal
from server.identity.rights import DOCUMENTS, RESOURCE_TYPE, Right, may_create, visibility_filter
from server.settings import Settings

if TYPE_CHECKING:
    from server.app import Collab

# -- vocabulary ------------------------------------------------------------------------------

DocumentType = Literal[
    "strategy_plan",
    "market_analysis",
    "competitive_analysis",
    "case_study",
    "pitch_deck",
    "operational_guide",
    "research_report",
    "custom",
]
Sensitivity = Literal["public", "internal", "confidential", "restricted"]
Status = Literal["draft", "review", "approved", "published", "archived"]

# The workflow: the states each status may move to.
TRANSITIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "draft": ("review", "archived"),
    "review": ("approved", "draft", "archived"),
    "approved": ("published", "archived"),
    "published": ("archived",),
    "archived": (),
}
# Target states that need the approve right (the others need edit).
APPROVAL_STATES: Final = frozenset({"approved", "published"})

# The fields PATCH may change (permissions change through PUT .../permissions only).
METADATA_FIELDS: Final = (
    "title",
    "slug",
    "category",
    "description",
    "tags",
    "sensitivity",
    "seo",
    "linkedDocuments",
    "linkedProjects",
)
SUMMARY_FIELDS: Final = (
    "documentId",
    "title",
    "slug",
    "type",
    "category",
    "description",
    "status",
    "version",
    "tags",
    "sensitivity",
    "owner",
    "createdAt",
    "updatedAt",
    "createdBy",
    "updatedBy",
    "lastReviewedAt",
    "lastReviewedBy",
)
SORTS: Final = frozenset({"updatedAt", "createdAt", "title"})
MAX_LIST_LIMIT: Final = 100
MAX_OFFSET: Final = 1_000_000
MAX_REVISION_LIMIT: Final = 100
EXPORT_FORMATS: Final = frozenset({"markdown"})
_REVISION_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SLUG: Final = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_NON_SLUG: Final = re.compile(r"[^a-z0-9]+")

# -- request bodies --------------------------------------------------------------------------

Text = Annotated[str, StringConstraints(min_length=1, max_length=300)]
LongText = Annotated[str, StringConstraints(max_length=5000)]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=120, pattern=_SLUG)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]


# 1-64 of [A-Za-z0-9_-], not starting with "__" (reserved for the server's own channels).
def _not_reserved(value: str) -> str:
    if is_reserved_id(value):
        raise ValueError("ids starting with '__' are reserved")
    return value


Id = Annotated[
    str,
    StringConstraints(pattern=rf"^[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}$"),
    AfterValidator(_not_reserved),
]
# Markdown is kept exactly as sent: no stripping.
Markdown = Annotated[str, StringConstraints(strip_whitespace=False, max_length=1_000_000)]


class Seo(Model):
    """``seo`` of the schema."""

    metaTitle: Annotated[str, StringConstraints(max_length=300)] | None = None
    metaDescription: LongText | None = None
    keywords: list[Tag] = Field(default_factory=list, max_length=50)


class PermissionLists(Model):
    """``permissions`` of the schema: user ids per level."""

    view: list[uuid.UUID] = Field(default_factory=list, max_length=500)
    edit: list[uuid.UUID] = Field(default_factory=list, max_length=500)
    comment: list[uuid.UUID] = Field(default_factory=list, max_length=500)

    def as_record(self) -> dict[str, list[str]]:
        return {
            level: list(dict.fromkeys(str(user) for user in users))
            for level, users in (
                ("view", self.view),
                ("edit", self.edit),
                ("comment", self.comment),
            )
        }


class SectionBody(Model):
    """One initial section: its id (generated when absent), title and markdown."""

    id: Id | None = None
    title: Annotated[str, StringConstraints(max_length=300)]
    content: Markdown = ""


class CreateBody(Model):
    """``POST /documents``."""

    documentId: Id | None = None
    title: Text
    slug: Slug | None = None
    type: DocumentType = "custom"
    category: Annotated[str, StringConstraints(max_length=100)] | None = None
    description: LongText | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    sensitivity: Sensitivity = "internal"
    seo: Seo | None = None
    linkedDocuments: list[Id] = Field(default_factory=list, max_length=200)
    linkedProjects: list[Ref] = Field(default_factory=list, max_length=200)
    permissions: PermissionLists | None = None
    sections: list[SectionBody] = Field(default_factory=list, max_length=200)


class UpdateBody(Model):
    """``PATCH /documents/{id}``: only the fields given change (null clears the optional
    ones: slug, category, description, seo)."""

    title: Text | None = None
    slug: Slug | None = None
    category: Annotated[str, StringConstraints(max_length=100)] | None = None
    description: LongText | None = None
    tags: list[Tag] | None = Field(None, max_length=50)
    sensitivity: Sensitivity | None = None
    seo: Seo | None = None
    linkedDocuments: list[Id] | None = Field(None, max_length=200)
    linkedProjects: list[Ref] | None = Field(None, max_length=200)


class StatusBody(Model):
    """``POST /documents/{id}/status``."""

    status: Status


class SaveBody(Model):
    """``POST /documents/{id}/revisions`` (the body is optional)."""

    # One line: it becomes the revision's ``changes`` and appears in the server log.
    message: (
        Annotated[str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f]+$")]
        | None
    ) = None


# -- conversions -----------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Stored values as JSON: datetimes in ISO 8601, containers converted deeply."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, Mapping):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _revision_summary(revision: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _jsonable(v) for k, v in revision.items() if k not in HEAVY_REVISION_FIELDS}


def document_view(record: Mapping[str, Any], *, content: bool = True) -> dict[str, Any]:
    """A stored record as the API shows it: inline revisions as summaries, dates in ISO
    8601, and ``content`` only when asked for."""
    view = {k: _jsonable(v) for k, v in record.items() if k not in ("revisions", "content")}
    view["revisions"] = [_revision_summary(r) for r in record.get("revisions") or []]
    if content:
        view["content"] = _jsonable(record.get("content"))
    return view


def document_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """A list entry: the metadata of a record and its word count, without the content."""
    summary = {name: _jsonable(record.get(name)) for name in SUMMARY_FIELDS}
    metadata = (record.get("content") or {}).get("metadata") or {}
    summary["wordCount"] = metadata.get("wordCount")
    summary["readingTime"] = metadata.get("readingTime")
    return summary


def slugify(title: str, fallback: str = "document", length: int = 80) -> str:
    """A URL-friendly slug of a title (ASCII letters and digits joined by dashes, at most
    ``length`` characters); ``fallback`` when the title has no such character."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = _NON_SLUG.sub("-", ascii_title.lower()).strip("-")[:length].strip("-")
    return slug or fallback


def _section_id_of(title: str, taken: set[str]) -> str:
    base = slugify(title, "section", 56)
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def initial_sections(bodies: Sequence[SectionBody]) -> list[ContentSection]:
    """The sections of a create request, ids generated where missing; 422 for a repeated
    id."""
    given = [body.id for body in bodies if body.id is not None]
    repeated = sorted({sid for sid in given if given.count(sid) > 1})
    if repeated:
        raise ApiError(422, "invalid request", f"sections: repeated ids {repeated}")
    taken = set(given)
    sections = []
    for order, body in enumerate(bodies):
        section_id = body.id
        if section_id is None:
            section_id = _section_id_of(body.title, taken)
            taken.add(section_id)
        sections.append(ContentSection(section_id, body.title, body.content, order))
    return sections


# -- request helpers -------------------------------------------------------------------------


def _revision_id_of(value: object) -> str:
    if not isinstance(value, str) or _REVISION_ID.fullmatch(value) is None:
        raise ApiError(400, "invalid revision id", f"{str(value)[:80]!r}")
    return value


async def _record(collab: Collab, document_id: str) -> dict[str, Any]:
    record = await collab.content.get(DOCUMENTS, document_id)
    if record is None:
        raise ApiError(404, "document not found", f"no document {document_id!r}")
    return record


def _sensitivity(record: Mapping[str, Any]) -> str | None:
    value = record.get("sensitivity")
    return value if isinstance(value, str) else None


async def _optional_body(request: Request, model: type[SaveBody]) -> SaveBody:
    """The body as ``model`` when one is sent; the model's defaults otherwise."""
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if "content-type" not in request.headers and not chunked and length in (None, "0"):
        return model()
    return await read_json(request, model)


async def _check_users(collab: Collab, lists: Mapping[str, Sequence[str]]) -> None:
    """422 when a permission list names a user that does not exist."""
    unknown = []
    for user_id in dict.fromkeys(u for users in lists.values() for u in users):
        if await collab.authn.user(user_id) is None:
            unknown.append(user_id)
    if unknown:
        raise ApiError(
            422,
            "invalid request",
            f"permissions: unknown users {unknown}",
            extra={"errors": [{"field": "permissions", "message": f"unknown users {unknown}"}]},
        )


async def _slug_owner(collab: Collab, slug: str) -> str | None:
    """The id of the document using ``slug``, None when it is free."""
    page = await collab.content.find(DOCUMENTS, Query(filters={"slug": slug}, limit=1))
    return str(page.items[0]["documentId"]) if page.items else None


async def _free_slug(collab: Collab, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... : the first slug no document uses."""
    for n in range(1, 50):
        candidate = base if n == 1 else f"{base[:110]}-{n}"
        if await _slug_owner(collab, candidate) is None:
            return candidate
    return f"{base[:100]}-{uuid.uuid4().hex[:8]}"


class _KeyedLocks:
    """One asyncio lock per document, dropped when nobody holds or awaits it: mutations
    that cut revisions (save, status, restore) run one at a time per document."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def serialized(request: Request, document_id: str) -> contextlib.AbstractAsyncContextManager[None]:
    state = request.app.state
    locks = getattr(state, "document_locks", None)
    if not isinstance(locks, _KeyedLocks):
        locks = _KeyedLocks()
        state.document_locks = locks
    return locks.hold(document_id)


# -- writing the rooms -----------------------------------------------------------------------


async def _seed_outline(collab: Collab, document_id: str) -> None:
    """With creation on join off, the registry refuses to load an empty outline room (the
    document "does not exist"): give the new document's outline its first update, as the
    registry does when it creates one. Only for a room that is neither loaded nor stored."""
    key = str(RoomName(document_id))
    if collab.registry.live_doc(key) is not None:
        return
    if not (await collab.store.load(key)).is_empty:
        return
    created = datetime.now(UTC).isoformat(timespec="milliseconds")
    await collab.store.append(key, new_outline_update(created))


async def write_sections(
    collab: Collab, document_id: str, sections: Sequence[ContentSection], reason: str
) -> None:
    """Make the live rooms of a document hold exactly ``sections`` (titles, order, texts),
    through the registry's server-side edits: journaled first, then broadcast to any client.

    Sections the rooms list but ``sections`` lacks are emptied while still listed, then
    unlisted: editing the room of an unlisted section would list it again.

    Raises ApiError 413 before anything is written when a section's text is over
    ``max_section_bytes`` or all of them together over ``max_document_bytes`` (UTF-8 bytes:
    a lower bound of the encoded CRDT state the socket caps measure).
    """
    _check_sizes(collab.settings, sections)
    if not collab.settings.create_on_join:
        await _seed_outline(collab, document_id)
    outline_room = RoomName(document_id)
    listed: list[str] = []

    def read_outline(doc: CrdtDoc) -> None:
        listed.extend(info.id for info in Outline(doc).sections())

    try:
        await collab.registry.edit(outline_room, read_outline, reason)
        wanted = {section.id for section in sections}
        for section_id in listed:
            if section_id not in wanted:
                await collab.registry.edit(RoomName(document_id, section_id), _setter(""), reason)
        await collab.registry.edit(
            outline_room, lambda doc: restore_outline(Outline(doc), sections), reason
        )
        for section in sections:
            await collab.registry.edit(
                RoomName(document_id, section.id), _setter(section.content), reason
            )
    except (RoomNotFound, RoomUnavailable) as exc:
        raise ApiError(503, "rooms unavailable", str(exc), headers={"Retry-After": "5"}) from exc


def _check_sizes(settings: Settings, sections: Sequence[ContentSection]) -> None:
    total = 0
    for section in sections:
        size = len(section.content.encode("utf-8", "surrogatepass"))
        if size > settings.max_section_bytes:
            raise ApiError(
                413,
                "document too large",
                f"section {section.id!r} is {size} bytes, over {settings.max_section_bytes}",
            )
        total += size
    if total > settings.max_document_bytes:
        raise ApiError(
            413,
            "document too large",
            f"the sections total {total} bytes, over {settings.max_document_bytes}",
        )


def _setter(text: str) -> Callable[[CrdtDoc], bool]:
    return lambda doc: set_section_text(doc, text)


# -- create ----------------------------------------------------------------------------------


def _may_create(principal: Principal) -> None:
    if not may_create(principal.subject):
        raise ApiError(403, "forbidden", f"the {principal.role} role may not create documents")


def _in_scope(principal: Principal, document_id: str | None) -> None:
    """A token scoped to documents creates only documents of its scope, named."""
    if principal.documents is not None and (
        document_id is None or document_id not in principal.documents
    ):
        raise ApiError(403, "forbidden", "the token is scoped to other documents")


async def _create_fields(collab: Collab, body: CreateBody) -> dict[str, Any]:
    permissions = (body.permissions or PermissionLists()).as_record()
    await _check_users(collab, permissions)
    if body.slug is not None:
        taken_by = await _slug_owner(collab, body.slug)
        if taken_by is not None:
            raise ApiError(409, "slug taken", f"slug {body.slug!r} is used by another document")
        slug = body.slug
    else:
        slug = await _free_slug(collab, slugify(body.title))
    fields: dict[str, Any] = {
        "title": body.title,
        "slug": slug,
        "type": body.type,
        "category": body.category,
        "description": body.description,
        "tags": list(dict.fromkeys(body.tags)),
        "sensitivity": body.sensitivity,
        "seo": body.seo.model_dump() if body.seo is not None else None,
        "linkedDocuments": list(dict.fromkeys(body.linkedDocuments)),
        "linkedProjects": list(dict.fromkeys(body.linkedProjects)),
        "permissions": permissions,
    }
    return fields


async def create_document(request: Request) -> Response:
    """``POST /documents``: 201 with the document (content included) and its Location."""
    principal = await authenticated(request)
    _may_create(principal)
    check_params(request, frozenset(), frozenset())
    body = await read_json(request, CreateBody)
    _in_scope(principal, body.documentId)
    collab = collab_of(request)
    sections = initial_sections(body.sections)
    document_id = body.documentId or new_id()
    fields = await _create_fields(collab, body)
    try:
        # Audited there ("create"), with the caller's address and user agent.
        await collab.create_document(document_id, principal, fields)
    except StorageConflict as exc:
        if await collab.content.get(DOCUMENTS, document_id) is not None:
            raise ApiError(409, "document exists", f"document id {document_id!r} is taken") from exc
        raise ApiError(409, "slug taken", f"slug {fields['slug']!r} is used") from exc
    await write_sections(collab, document_id, sections, "created over REST")
    await collab.snapshots.write_now(document_id)
    record = await _record(collab, document_id)
    location = f"/api/documents/{document_id}"
    return JSONResponse(document_view(record), status_code=201, headers={"Location": location})


# -- read ------------------------------------------------------------------------------------


async def get_document(request: Request) -> Response:
    """``GET /documents/{id}`` (view): the record with its content as of the last snapshot
    (``?fresh=1``: rendered from the live rooms first)."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.VIEW)
    check_params(request, frozenset({"fresh"}), frozenset())
    collab = collab_of(request)
    if query_flag(request, "fresh"):
        await _record(collab, document_id)
        await collab.snapshots.write_now(document_id)
    record = await _record(collab, document_id)
    access_logged(request, principal, document_id, "read", _sensitivity(record))
    return JSONResponse(document_view(record))


async def _visible(collab: Collab, principal: Principal) -> dict[str, Any]:
    """The Query arguments that keep a listing to what the caller may view."""
    subject = principal.subject
    conditions: dict[str, Any] = {}
    if principal.documents is not None:
        conditions["ids"] = tuple(sorted(principal.documents))[:MAX_QUERY_IDS]
    if visibility_filter(subject) is None:
        return conditions  # a role that sees every document
    granted = await collab.access.granted_documents(subject)
    if "*" in granted:
        return conditions  # a grant on every document
    conditions["accessible_to"] = principal.user_id
    conditions["accessible_ids"] = tuple(sorted(set(granted)))[:MAX_QUERY_IDS]
    return conditions


_LIST_PARAMS: Final = frozenset(
    {"type", "status", "category", "tag", "q", "limit", "offset", "sort", "order"}
)


def _list_query(request: Request, visible: Mapping[str, Any]) -> Query:
    params = request.query_params
    filters = {name: params[name] for name in ("type", "status", "category") if params.get(name)}
    sort = params.get("sort") or "updatedAt"
    if sort not in SORTS:
        raise ApiError(400, "invalid query parameter", f"sort must be one of {sorted(SORTS)}")
    order = params.get("order") or ("asc" if sort == "title" else "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "invalid query parameter", "order must be asc or desc")
    try:
        return Query(
            filters=filters,
            tags_all=tuple(dict.fromkeys(t for t in params.getlist("tag") if t)),
            text=params.get("q") or None,
            sort=sort,
            descending=order == "desc",
            limit=query_int(request, "limit", 20, 1, MAX_LIST_LIMIT),
            offset=query_int(request, "offset", 0, 0, MAX_OFFSET),
            **visible,
        )
    except ValueError as exc:
        raise ApiError(400, "invalid query parameter", str(exc)) from exc


async def list_documents(request: Request) -> Response:
    """``GET /documents``: ``{items, total, limit, offset}`` of the documents the caller may
    view. Filters are literal equality (``type``, ``status``, ``category``), every ``tag``,
    and ``q`` a case-insensitive substring of the title, description or content."""
    principal = await authenticated(request)
    check_params(request, _LIST_PARAMS, frozenset({"tag"}))
    collab = collab_of(request)
    query = _list_query(request, await _visible(collab, principal))
    page = await collab.content.find(DOCUMENTS, query)
    return JSONResponse(
        {
            "items": [document_summary(record) for record in page.items],
            "total": page.total,
            "limit": query.limit,
            "offset": query.offset,
        }
    )


# -- update ----------------------------------------------------------------------------------


async def _metadata_changes(
    collab: Collab, document_id: str, record: Mapping[str, Any], body: UpdateBody
) -> dict[str, Any]:
    """The fields a PATCH changes (given and different from the record)."""
    given = body.model_dump(include=body.model_fields_set)
    for required in ("title", "sensitivity", "tags", "linkedDocuments", "linkedProjects"):
        if required in given and given[required] is None:
            raise ApiError(422, "invalid request", f"{required}: may not be null")
    for name in ("tags", "linkedDocuments", "linkedProjects"):
        if name in given:
            given[name] = list(dict.fromkeys(given[name]))
    changes = {k: v for k, v in given.items() if record.get(k) != v}
    slug = changes.get("slug")
    if slug is not None:
        taken_by = await _slug_owner(collab, slug)
        if taken_by not in (None, document_id):
            raise ApiError(409, "slug taken", f"slug {slug!r} is used by another document")
    return changes


async def update_document(request: Request) -> Response:
    """``PATCH /documents/{id}`` (edit): metadata only; returns the record without content."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.EDIT)
    check_params(request, frozenset(), frozenset())
    body = await read_json(request, UpdateBody)
    if not body.model_fields_set:
        raise ApiError(422, "invalid request", f"nothing to change: give any of {METADATA_FIELDS}")
    collab = collab_of(request)
    record = await _record(collab, document_id)
    changes = await _metadata_changes(collab, document_id, record, body)
    if changes:
        before = {name: _jsonable(record.get(name)) for name in changes}
        stamped = {**changes, "updatedAt": datetime.now(UTC), "updatedBy": principal.user_id}
        record = await collab.content.update(DOCUMENTS, document_id, stamped)
        audit(
            request,
            principal,
            "update",
            RESOURCE_TYPE,
            document_id,
            {"before": before, "after": _jsonable(changes)},
        )
    return JSONResponse(document_view(record, content=False))


class PermissionsBody(PermissionLists):
    """``PUT /documents/{id}/permissions``: the three lists, replaced as a whole."""


async def put_permissions(request: Request) -> Response:
    """``PUT /documents/{id}/permissions`` (admin): replace the view/edit/comment lists."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.ADMIN)
    check_params(request, frozenset(), frozenset())
    body = await read_json(request, PermissionsBody)
    collab = collab_of(request)
    permissions = body.as_record()
    await _check_users(collab, permissions)
    record = await _record(collab, document_id)
    before = record.get("permissions")
    record = await collab.content.update(
        DOCUMENTS,
        document_id,
        {
            "permissions": permissions,
            "updatedAt": datetime.now(UTC),
            "updatedBy": principal.user_id,
        },
    )
    # Open sockets pick the change up at the rights guard's next round.
    collab.access.forget(document_id)
    audit(
        request,
        principal,
        "permission_change",
        RESOURCE_TYPE,
        document_id,
        {"before": before, "after": permissions},
    )
    collab.hooks.on_permission_change(
        PermissionChange(document_id, principal.context.user_id, before, permissions)
    )
    return JSONResponse({"documentId": document_id, "permissions": permissions})


# -- status ----------------------------------------------------------------------------------


def check_transition(current: str, target: str) -> None:
    """409 unless the workflow allows ``current`` -> ``target``."""
    allowed = TRANSITIONS.get(current, ("archived",))
    if target not in allowed:
        listed = ", ".join(allowed) if allowed else "none"
        raise ApiError(
            409,
            "invalid status transition",
            f"a {current} document cannot become {target}; allowed next states: {listed}",
            extra={"currentStatus": current, "allowed": list(allowed)},
        )


async def set_status(
    request: Request, principal: Principal, document_id: str, target: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Move the document to ``target`` (checked) and cut a revision; returns the record and
    the revision summary. Runs under the document's lock."""
    collab = collab_of(request)
    record = await _record(collab, document_id)
    current = str(record.get("status") or "draft")
    check_transition(current, target)
    now = datetime.now(UTC)
    fields: dict[str, Any] = {"status": target, "updatedAt": now, "updatedBy": principal.user_id}
    if current == "review":
        fields.update(lastReviewedAt=now, lastReviewedBy=principal.user_id)
    freezing = target == "review" and current != "review"
    if freezing:
        # Atomic with the status change: no edit is acknowledged after this, on any node,
        # and the revision cut below holds everything acknowledged before it.
        await collab.freeze_content(document_id)
    try:
        await collab.content.update(DOCUMENTS, document_id, fields)
    except BaseException:
        if freezing:
            await collab.thaw_content(document_id)
        raise
    collab.access.forget(document_id)  # sockets follow the review state at the next check
    if current == "review" and target != "review":
        await collab.thaw_content(document_id)
    revision = await collab.revisions.save(
        document_id, principal.user_id, reason=f"status {current} -> {target}"
    )
    audit(
        request,
        principal,
        "status_change",
        RESOURCE_TYPE,
        document_id,
        {"from": current, "to": target, "revision": revision["revisionId"]},
    )
    return await _record(collab, document_id), revision


async def change_status(request: Request) -> Response:
    """``POST /documents/{id}/status`` (edit; approve for approved and published)."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, right = await require(request, document_id, Right.EDIT)
    check_params(request, frozenset(), frozenset())
    body = await read_json(request, StatusBody)
    if body.status in APPROVAL_STATES and right < Right.APPROVE:
        raise ApiError(
            403,
            "forbidden",
            f"making a document {body.status} needs the approve right; you have {right.label}",
        )
    async with serialized(request, document_id):
        if body.status == "approved":
            pending = await collab_of(request).relational.approvals.find_requests(
                ApprovalQuery(
                    resource_type=RESOURCE_TYPE, resource_id=document_id, status="pending", limit=1
                )
            )
            if pending.items:
                raise ApiError(
                    409,
                    "approval pending",
                    "an approval request is open on this document: it becomes approved when "
                    "its last step is approved (POST /api/approvals/{id}/steps/{n}/decision)",
                    extra={"approvalRequest": str(pending.items[0].id)},
                )
        record, revision = await set_status(request, principal, document_id, body.status)
    return JSONResponse(
        {"document": document_view(record, content=False), "revision": _jsonable(revision)}
    )


# -- delete ----------------------------------------------------------------------------------


async def delete_document(request: Request) -> Response:
    """``DELETE /documents/{id}`` (admin): archive; ``?hard=1`` (admin role) deletes."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.ADMIN)
    check_params(request, frozenset({"hard"}), frozenset())
    collab = collab_of(request)
    if query_flag(request, "hard"):
        if principal.role != "admin":
            raise ApiError(403, "forbidden", "only admins may delete documents for good")
        async with serialized(request, document_id):
            if not await collab.content.delete(DOCUMENTS, document_id):
                raise ApiError(404, "document not found", f"no document {document_id!r}")
        collab.access.forget(document_id)
        audit(request, principal, "delete", RESOURCE_TYPE, document_id, {"mode": "hard"})
        return Response(status_code=204)
    async with serialized(request, document_id):
        record = await _record(collab, document_id)
        if record.get("status") != "archived":
            await set_status(request, principal, document_id, "archived")
    audit(request, principal, "delete", RESOURCE_TYPE, document_id, {"mode": "archive"})
    return Response(status_code=204)


# -- revisions -------------------------------------------------------------------------------


def _revision_json(revision: Mapping[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = _jsonable(revision)
    return result


def _diff_json(diff: SectionDiff) -> dict[str, Any]:
    return {
        "sectionId": diff.section_id,
        "status": diff.status,
        "titleBefore": diff.title_before,
        "titleAfter": diff.title_after,
        "diff": diff.unified_diff,
    }


async def _revision(collab: Collab, document_id: str, revision_id: str) -> dict[str, Any]:
    try:
        return await collab.revisions.get(document_id, revision_id)
    except RevisionNotFound as exc:
        raise ApiError(404, "revision not found", str(exc)) from exc


async def list_revisions(request: Request) -> Response:
    """``GET /documents/{id}/revisions`` (view): newest first, paged by ``before``."""
    document_id = document_id_of(request.path_params["document_id"])
    await require(request, document_id, Right.VIEW)
    check_params(request, frozenset({"before", "limit"}), frozenset())
    limit = query_int(request, "limit", 20, 1, MAX_REVISION_LIMIT)
    before: int | None = None
    if request.query_params.get("before"):
        before = query_int(request, "before", 0, 0, 2**53)
    collab = collab_of(request)
    items = await collab.content.list_revisions(document_id, limit=limit, before_version=before)
    next_before = items[-1]["version"] if len(items) == limit else None
    return JSONResponse(
        {"items": [_revision_summary(r) for r in items], "limit": limit, "nextBefore": next_before}
    )


async def get_revision(request: Request) -> Response:
    """``GET /documents/{id}/revisions/{revisionId}`` (view): one revision in full."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.VIEW)
    revision_id = _revision_id_of(request.path_params["revision_id"])
    check_params(request, frozenset(), frozenset())
    collab = collab_of(request)
    revision = await _revision(collab, document_id, revision_id)
    record = await _record(collab, document_id)
    access_logged(request, principal, document_id, "read", _sensitivity(record))
    return JSONResponse(_revision_json(revision))


async def diff_revisions(request: Request) -> Response:
    """``GET /documents/{id}/revisions/{a}/diff/{b}`` (view): per-section unified diffs."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.VIEW)
    before_id = _revision_id_of(request.path_params["before_id"])
    after_id = _revision_id_of(request.path_params["after_id"])
    check_params(request, frozenset(), frozenset())
    collab = collab_of(request)
    before = await _revision(collab, document_id, before_id)
    after = await _revision(collab, document_id, after_id)
    diffs = diff_sections(
        sections_from_dicts(before.get("sections", [])),
        sections_from_dicts(after.get("sections", [])),
        (f"v{before['version']}", f"v{after['version']}"),
    )
    record = await _record(collab, document_id)
    access_logged(request, principal, document_id, "read", _sensitivity(record))
    return JSONResponse(
        {
            "from": _revision_summary(before),
            "to": _revision_summary(after),
            "sections": [_diff_json(diff) for diff in diffs],
        }
    )


async def save_revision(request: Request) -> Response:
    """``POST /documents/{id}/revisions`` (edit): cut a revision now; 201 with it."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.EDIT)
    check_params(request, frozenset(), frozenset())
    body = await _optional_body(request, SaveBody)
    collab = collab_of(request)
    await _record(collab, document_id)
    async with serialized(request, document_id):
        revision = await collab.revisions.save(
            document_id, principal.user_id, reason=body.message or "save"
        )
    audit(
        request,
        principal,
        "revision_save",
        RESOURCE_TYPE,
        document_id,
        {"revision": revision["revisionId"], "version": revision["version"]},
    )
    return JSONResponse(_jsonable(revision), status_code=201)


async def restore_revision(request: Request) -> Response:
    """``POST /documents/{id}/revisions/{revisionId}/restore`` (edit): bring the live rooms
    back to a revision (forward CRDT edits every client receives) and cut a new revision."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.EDIT)
    revision_id = _revision_id_of(request.path_params["revision_id"])
    check_params(request, frozenset(), frozenset())
    collab = collab_of(request)
    source = await _revision(collab, document_id, revision_id)
    if (await _record(collab, document_id)).get("status") == "review":
        raise ApiError(
            409,
            "document in review",
            "its content is frozen while in review: end the review (approve, or move it "
            "back to draft) before restoring a revision",
        )
    async with serialized(request, document_id):
        try:
            revision = await collab.revisions.restore(document_id, revision_id, principal.user_id)
        except RevisionNotFound as exc:
            raise ApiError(404, "revision not found", str(exc)) from exc
        except (RoomNotFound, RoomUnavailable) as exc:
            raise ApiError(
                503, "rooms unavailable", str(exc), headers={"Retry-After": "5"}
            ) from exc
    audit(
        request,
        principal,
        "restore",
        RESOURCE_TYPE,
        document_id,
        {"from": revision_id, "fromVersion": source["version"], "revision": revision["revisionId"]},
    )
    return JSONResponse(
        {"restoredFrom": _revision_summary(source), "revision": _jsonable(revision)}
    )


# -- export ----------------------------------------------------------------------------------


def _filename(record: Mapping[str, Any], document_id: str) -> str:
    slug = record.get("slug")
    base = slug if isinstance(slug, str) and re.fullmatch(_SLUG, slug) else document_id
    return f"{base}.md"


async def export_document(request: Request) -> Response:
    """``GET /documents/{id}/export?format=markdown`` (view): the markdown rendered from the
    live rooms, as an attachment."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.VIEW)
    check_params(request, frozenset({"format"}), frozenset())
    export_format = request.query_params.get("format") or "markdown"
    if export_format not in EXPORT_FORMATS:
        raise ApiError(400, "unsupported export format", f"formats: {sorted(EXPORT_FORMATS)}")
    collab = collab_of(request)
    record = await _record(collab, document_id)
    content = await collab.snapshots.render(document_id)
    title = " ".join(str(record.get("title") or document_id).split())
    text = f"# {title}\n\n{content.markdown}\n" if content.markdown else f"# {title}\n"
    audit(request, principal, "export", RESOURCE_TYPE, document_id, {"format": export_format})
    access_logged(request, principal, document_id, "export", _sensitivity(record))
    return Response(
        text,
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{_filename(record, document_id)}"'},
    )


routes: list[BaseRoute] = [
    Route("/documents", list_documents, methods=["GET"]),
    Route("/documents", create_document, methods=["POST"]),
    Route("/documents/{document_id}", get_document, methods=["GET"]),
    Route("/documents/{document_id}", update_document, methods=["PATCH"]),
    Route("/documents/{document_id}", delete_document, methods=["DELETE"]),
    Route("/documents/{document_id}/permissions", put_permissions, methods=["PUT"]),
    Route("/documents/{document_id}/status", change_status, methods=["POST"]),
    Route("/documents/{document_id}/export", export_document, methods=["GET"]),
    Route("/documents/{document_id}/revisions", list_revisions, methods=["GET"]),
    Route("/documents/{document_id}/revisions", save_revision, methods=["POST"]),
    Route("/documents/{document_id}/revisions/{revision_id}", get_revision, methods=["GET"]),
    Route(
        "/documents/{document_id}/revisions/{before_id}/diff/{after_id}",
        diff_revisions,
        methods=["GET"],
    ),
    Route(
        "/documents/{document_id}/revisions/{revision_id}/restore",
        restore_revision,
        methods=["POST"],
    ),
]
