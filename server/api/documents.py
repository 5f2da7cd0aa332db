"""The business documents API: records of ``business_documents``, their content, their
workflow status and their revisions, over REST (``docs/api.md``).

* ``POST /documents``: create a document (the caller's role must allow creating), with its
  initial sections written into the live rooms;
* ``GET /documents``: the documents the caller may view, filtered, sorted and paged;
* ``GET /documents/{id}`` (view), ``PATCH`` (edit: metadata), ``DELETE`` (admin: archive;
  ``?hard=1`` deletes, admins only), ``PUT .../permissions`` (admin);
* ``POST .../status`` (edit; approve to approve or publish): the workflow
  draft -> review -> approved -> published -> archived, review -> draft, any -> archived;
* ``.../revisions``: in :mod:`server.api.revisions`;
* ``GET .../export?format=markdown`` (view).

HTTP only: the workflow (status transitions, the per-document lock) is
:mod:`server.documents.workflow`, writing sections into the live rooms
:mod:`server.documents.sections`, bodies and views :mod:`server.api.document_bodies`. The
CRDT rooms are the source of truth of the content: the REST side writes sections only
through the registry's server-side edits (journaled, then broadcast like a client's), and
reads ``content`` as the snapshotter last wrote it (``?fresh=1`` renders it first).

Every mutation queues an audit entry; every read of a document's content and every export
queues a data-access entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from crdt.markdown import ContentSection
from persistence.content.ports import MAX_QUERY_IDS, Query
from persistence.errors import StorageConflict
from persistence.relational import ApprovalQuery
from server.api.common import (
    ApiError,
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
from server.api.document_bodies import (
    METADATA_FIELDS,
    CreateBody,
    PermissionLists,
    SectionBody,
    StatusBody,
    UpdateBody,
    document_summary,
    document_view,
    jsonable,
    sensitivity_of,
)
from server.api.search import search_enabled
from server.documents.sections import check_sizes, hold_sections, seed_outline
from server.documents.slugs import free_slug, section_id_of, slug_owner, slugify
from server.documents.workflow import APPROVAL_STATES
from server.hooks import PermissionChange
from server.identity.authentication import Principal
from server.identity.rights import DOCUMENTS, RESOURCE_TYPE, Right
from server.search.service import Search

if TYPE_CHECKING:
    from server.api.ports import ApiCollab

SORTS: Final = frozenset({"updatedAt", "createdAt", "title"})
MAX_LIST_LIMIT: Final = 100
MAX_OFFSET: Final = 1_000_000
MAX_REVISION_LIMIT: Final = 100
EXPORT_FORMATS: Final = frozenset({"markdown"})
_REVISION_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SLUG: Final = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_NON_SLUG: Final = re.compile(r"[^a-z0-9]+")


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
            section_id = section_id_of(body.title, taken)
            taken.add(section_id)
        sections.append(ContentSection(section_id, body.title, body.content, order))
    return sections


# -- request helpers -------------------------------------------------------------------------


async def _check_users(collab: ApiCollab, lists: Mapping[str, Sequence[str]]) -> None:
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


async def _write_sections(
    collab: ApiCollab, document_id: str, sections: Sequence[ContentSection], reason: str
) -> None:
    """Check the size caps (413 before anything is written), then make the live rooms hold
    ``sections`` (:func:`server.documents.sections.hold_sections`)."""
    settings = collab.settings
    check_sizes(
        sections,
        max_section_bytes=settings.max_section_bytes,
        max_document_bytes=settings.max_document_bytes,
    )
    if not settings.create_on_join:
        await seed_outline(collab.registry, collab.store, document_id)
    await hold_sections(collab.registry, document_id, sections, reason)


# -- create ----------------------------------------------------------------------------------


async def _may_create(collab: ApiCollab, principal: Principal) -> None:
    if not await collab.access.may_create(principal.subject):
        raise ApiError(403, "forbidden", f"the {principal.role} role may not create documents")


def _in_scope(principal: Principal, document_id: str | None) -> None:
    """A token scoped to documents creates only documents of its scope, named."""
    if principal.documents is not None and (
        document_id is None or document_id not in principal.documents
    ):
        raise ApiError(403, "forbidden", "the token is scoped to other documents")


async def _create_fields(collab: ApiCollab, body: CreateBody) -> dict[str, Any]:
    permissions = (body.permissions or PermissionLists()).as_record()
    await _check_users(collab, permissions)
    if body.slug is not None:
        taken_by = await slug_owner(collab.content, body.slug)
        if taken_by is not None:
            raise ApiError(409, "slug taken", f"slug {body.slug!r} is used by another document")
        slug = body.slug
    else:
        slug = await free_slug(collab.content, slugify(body.title))
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
    await _may_create(collab_of(request), principal)
    check_params(request, frozenset(), frozenset())
    body = await read_json(request, CreateBody)
    _in_scope(principal, body.documentId)
    collab = collab_of(request)
    sections = initial_sections(body.sections)
    document_id = body.documentId or new_id()
    fields = await _create_fields(collab, body)
    try:
        # Audited there ("create"), with the caller's address and user agent.
        await collab.workflow.create(document_id, principal, fields)
    except StorageConflict as exc:
        if await collab.content.get(DOCUMENTS, document_id) is not None:
            raise ApiError(409, "document exists", f"document id {document_id!r} is taken") from exc
        raise ApiError(409, "slug taken", f"slug {fields['slug']!r} is used") from exc
    await _write_sections(collab, document_id, sections, "created over REST")
    await collab.snapshots.write_now(document_id)
    record = await collab.workflow.record(document_id)
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
        await collab.workflow.record(document_id)
        await collab.snapshots.write_now(document_id)
    record = await collab.workflow.record(document_id)
    access_logged(request, principal, document_id, "read", sensitivity_of(record))
    collab.stats.count("views")
    return JSONResponse(document_view(record))


async def _visible(collab: ApiCollab, principal: Principal) -> dict[str, Any]:
    """The Query arguments that keep a listing to what the caller may view."""
    subject = principal.subject
    conditions: dict[str, Any] = {}
    if principal.documents is not None:
        conditions["ids"] = tuple(sorted(principal.documents))[:MAX_QUERY_IDS]
    if await collab.access.visibility(subject) is None:
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
            sort=sort,
            descending=order == "desc",
            limit=query_int(request, "limit", 20, 1, MAX_LIST_LIMIT),
            offset=query_int(request, "offset", 0, 0, MAX_OFFSET),
            **visible,
        )
    except ValueError as exc:
        raise ApiError(400, "invalid query parameter", str(exc)) from exc


async def _search_documents(request: Request, principal: Principal) -> Response:
    """The documents list with ``q``: the search engine's ranking (``docs/search.md``)."""
    await search_enabled(request, principal.user_id)
    params = request.query_params
    if params.get("sort") or params.get("order"):
        raise ApiError(
            400, "invalid query parameter", "with q the documents are ranked by relevance: no sort"
        )
    limit = query_int(request, "limit", 20, 1, MAX_LIST_LIMIT)
    offset = query_int(request, "offset", 0, 0, MAX_OFFSET)
    equal = {name: params[name] for name in ("type", "status", "category") if params.get(name)}
    page = await collab_of(request).search.search(
        principal,
        Search(
            params["q"],
            types=("business_document",),
            limit=limit,
            offset=offset,
            document_filters=equal,
            document_tags=tuple(dict.fromkeys(t for t in params.getlist("tag") if t)),
        ),
    )
    items = [
        {**document_summary(dict(hit.record)), "score": hit.score, "snippet": hit.snippet}
        for hit in page.items
    ]
    return JSONResponse({"items": items, "total": page.total, "limit": limit, "offset": offset})


async def list_documents(request: Request) -> Response:
    """``GET /documents``: ``{items, total, limit, offset}`` of the documents the caller may
    view. Filters are literal equality (``type``, ``status``, ``category``) and every
    ``tag``; with ``q``, the documents holding its words, ranked by relevance, each with its
    ``score`` and ``snippet`` (the search engine of ``GET /search``)."""
    principal = await authenticated(request)
    check_params(request, _LIST_PARAMS, frozenset({"tag"}))
    if request.query_params.get("q"):
        return await _search_documents(request, principal)
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
    collab: ApiCollab, document_id: str, record: Mapping[str, Any], body: UpdateBody
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
        taken_by = await slug_owner(collab.content, slug)
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
    record = await collab.workflow.record(document_id)
    changes = await _metadata_changes(collab, document_id, record, body)
    if changes:
        before = {name: jsonable(record.get(name)) for name in changes}
        stamped = {**changes, "updatedAt": datetime.now(UTC), "updatedBy": principal.user_id}
        record = await collab.content.update(DOCUMENTS, document_id, stamped)
        audit(
            request,
            principal,
            "update",
            RESOURCE_TYPE,
            document_id,
            {"before": before, "after": jsonable(changes)},
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
    record = await collab.workflow.record(document_id)
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
    async with collab_of(request).workflow.serialized(document_id):
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
        record, revision = await collab_of(request).workflow.set_status(
            principal, document_id, body.status
        )
    return JSONResponse(
        {"document": document_view(record, content=False), "revision": jsonable(revision)}
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
        async with collab_of(request).workflow.serialized(document_id):
            if not await collab.content.delete(DOCUMENTS, document_id):
                raise ApiError(404, "document not found", f"no document {document_id!r}")
        collab.access.forget(document_id)
        audit(request, principal, "delete", RESOURCE_TYPE, document_id, {"mode": "hard"})
        return Response(status_code=204)
    async with collab_of(request).workflow.serialized(document_id):
        record = await collab.workflow.record(document_id)
        if record.get("status") != "archived":
            await collab_of(request).workflow.set_status(principal, document_id, "archived")
    audit(request, principal, "delete", RESOURCE_TYPE, document_id, {"mode": "archive"})
    return Response(status_code=204)


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
    record = await collab.workflow.record(document_id)
    content = await collab.snapshots.render(document_id)
    title = " ".join(str(record.get("title") or document_id).split())
    text = f"# {title}\n\n{content.markdown}\n" if content.markdown else f"# {title}\n"
    audit(request, principal, "export", RESOURCE_TYPE, document_id, {"format": export_format})
    access_logged(request, principal, document_id, "export", sensitivity_of(record))
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
]
