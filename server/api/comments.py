"""The comments API (``docs/api.md``): list and add a document's comments, read, edit,
resolve, reopen and delete one. The work is :class:`server.review.comments.CommentService`'s, shared
with the socket events: every change is audited (``comment``) and reaches every client of the
document as a ``comment`` event, exactly as one made over the socket.

* ``GET /documents/{id}/comments`` (view): ``section``, ``unresolved``, ``thread``,
  ``deleted``, ``limit``, ``offset``; anchors resolved against the current text;
* ``POST /documents/{id}/comments`` (comment): 201 with the comment;
* ``GET /comments/{cid}`` (view), ``PATCH /comments/{cid}`` (the author),
  ``POST /comments/{cid}/resolve`` and ``.../reopen`` (comment),
  ``DELETE /comments/{cid}`` (the author or an admin of the document).
"""

from __future__ import annotations

import uuid
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.relational.records import MAX_PAGE_SIZE
from server.api.common import (
    ApiError,
    access_logged,
    authenticated,
    check_params,
    collab_of,
    document_id_of,
    query_flag,
    query_int,
    read_json,
    require,
)
from server.identity.rights import Right
from server.review.bodies import CreateBody, EditBody, ListQuery

_LIST_PARAMS: Final = frozenset({"section", "unresolved", "thread", "deleted", "limit", "offset"})


def uuid_of(value: object, what: str) -> uuid.UUID:
    """A UUID from a path or query parameter; 404 for a path that names nothing valid."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ApiError(
            404, f"{what} not found", f"{str(value)[:80]!r} is not a {what} id"
        ) from None


async def list_comments(request: Request) -> Response:
    """``GET /documents/{id}/comments`` (view): ``{items, total, limit, offset}``."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.VIEW)
    check_params(request, _LIST_PARAMS)
    params = request.query_params
    thread = None
    if params.get("thread"):
        try:
            thread = uuid.UUID(params["thread"])
        except ValueError:
            raise ApiError(400, "invalid query parameter", "thread must be a comment id") from None
    query = ListQuery(
        section=params.get("section") or None,
        unresolved=query_flag(request, "unresolved"),
        thread=thread,
        deleted=query_flag(request, "deleted"),
        limit=query_int(request, "limit", 50, 1, MAX_PAGE_SIZE),
        offset=query_int(request, "offset", 0, 0, 1_000_000),
    )
    items, total = await collab_of(request).comments.find(principal, document_id, query)
    facts = await collab_of(request).access.document(document_id)
    access_logged(
        request, principal, document_id, "read", facts.sensitivity if facts is not None else None
    )
    return JSONResponse(
        {"items": items, "total": total, "limit": query.limit, "offset": query.offset}
    )


async def create_comment(request: Request) -> Response:
    """``POST /documents/{id}/comments`` (comment): 201 with the stored comment."""
    document_id = document_id_of(request.path_params["document_id"])
    principal, _ = await require(request, document_id, Right.COMMENT)
    check_params(request, frozenset())
    body = await read_json(request, CreateBody)
    service = collab_of(request).comments
    view = await service.create(principal, document_id, body, "rest")
    service.publish("created", view)
    return JSONResponse(view, status_code=201, headers={"Location": f"/api/comments/{view['id']}"})


async def get_comment(request: Request) -> Response:
    """``GET /comments/{cid}`` (view)."""
    principal = await authenticated(request)
    comment_id = uuid_of(request.path_params["comment_id"], "comment")
    check_params(request, frozenset())
    return JSONResponse(await collab_of(request).comments.get(principal, comment_id))


async def edit_comment(request: Request) -> Response:
    """``PATCH /comments/{cid}`` (the author): new content, and mentions if given."""
    principal = await authenticated(request)
    comment_id = uuid_of(request.path_params["comment_id"], "comment")
    check_params(request, frozenset())
    body = await read_json(request, EditBody)
    service = collab_of(request).comments
    view = await service.edit(principal, comment_id, body, "rest")
    service.publish("edited", view)
    return JSONResponse(view)


async def resolve_comment(request: Request) -> Response:
    """``POST /comments/{cid}/resolve`` (comment): resolve the thread."""
    principal = await authenticated(request)
    comment_id = uuid_of(request.path_params["comment_id"], "comment")
    check_params(request, frozenset())
    service = collab_of(request).comments
    view = await service.resolve(principal, comment_id, "rest")
    service.publish("resolved", view)
    return JSONResponse(view)


async def reopen_comment(request: Request) -> Response:
    """``POST /comments/{cid}/reopen`` (comment): reopen the thread."""
    principal = await authenticated(request)
    comment_id = uuid_of(request.path_params["comment_id"], "comment")
    check_params(request, frozenset())
    service = collab_of(request).comments
    view = await service.reopen(principal, comment_id, "rest")
    service.publish("reopened", view)
    return JSONResponse(view)


async def delete_comment(request: Request) -> Response:
    """``DELETE /comments/{cid}`` (the author or an admin): 204."""
    principal = await authenticated(request)
    comment_id = uuid_of(request.path_params["comment_id"], "comment")
    check_params(request, frozenset())
    service = collab_of(request).comments
    view = await service.delete(principal, comment_id, "rest")
    service.publish("deleted", view)
    return Response(status_code=204)


routes: list[BaseRoute] = [
    Route("/documents/{document_id}/comments", list_comments, methods=["GET"]),
    Route("/documents/{document_id}/comments", create_comment, methods=["POST"]),
    Route("/comments/{comment_id}", get_comment, methods=["GET"]),
    Route("/comments/{comment_id}", edit_comment, methods=["PATCH"]),
    Route("/comments/{comment_id}", delete_comment, methods=["DELETE"]),
    Route("/comments/{comment_id}/resolve", resolve_comment, methods=["POST"]),
    Route("/comments/{comment_id}/reopen", reopen_comment, methods=["POST"]),
]
