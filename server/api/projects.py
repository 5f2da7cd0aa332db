"""``/api/projects``: projects (``docs/api.md``), with ``?include=documents`` (the schema's
``$lookup`` of the linked business documents, :class:`server.cms.projects.ProjectService`)
and ``GET /api/documents/{id}/projects``, the projects that link a document."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from server.api.cms_common import Resource, listing_of, page_view, record_id_of, view
from server.api.common import (
    ApiError,
    authenticated,
    check_params,
    collab_of,
    document_id_of,
    query_flag,
    require,
)
from server.identity.rights import Right

INCLUDES: Final = frozenset({"documents"})
resource = Resource("projects", lambda collab: collab.cms.projects)


async def get_project(request: Request) -> Response:
    """``GET /projects/{id}`` (view); ``?include=documents`` adds the linked documents the
    caller may view (``&content=1``: with their content)."""
    principal = await authenticated(request)
    project_id = record_id_of(request)
    check_params(request, frozenset({"include", "content"}))
    include = request.query_params.get("include") or None
    service = collab_of(request).cms.projects
    if include is None:
        return JSONResponse(view(await service.read(principal, project_id)))
    if include not in INCLUDES:
        raise ApiError(400, "invalid query parameter", f"include: one of {sorted(INCLUDES)}")
    found = await service.with_documents(
        principal, project_id, content=query_flag(request, "content")
    )
    body = view(found["project"])
    body["documents"] = [view(document) for document in found["documents"]]
    body["missingDocuments"] = found["missingDocuments"]
    body["hiddenDocuments"] = found["hiddenDocuments"]
    return JSONResponse(body)


async def projects_of_document(request: Request) -> Response:
    """``GET /documents/{id}/projects`` (view on the document): the projects the caller may
    view that link it, ``{items, total, limit, offset}``."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.VIEW)
    service = collab_of(request).cms.projects
    listing = listing_of(request, service)
    page = await service.linking(principal, document_id, listing)
    return JSONResponse(page_view(page, listing, view))


routes: list[BaseRoute] = [
    Route("/projects/{record_id}", get_project, methods=["GET"]),
    *resource.routes(),
    Route("/documents/{document_id}/projects", projects_of_document, methods=["GET"]),
]
