"""People of a document (``docs/api.md``, "People"): whom a comment may mention.

* ``GET /documents/{id}/people?q=&limit=``: ``{"items": [{"id", "name"}]}``, the active users
  who may view the document whose display name contains ``q`` (case-insensitive), by name;
  ``limit`` 1-50 (20). Needs the view right.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from server.api.common import ApiError, check_params, collab_of, query_int, require
from server.identity.rights import Right
from server.review.comments import store_errors
from server.review.mentions import mentionable

_PARAMS: Final = frozenset({"q", "limit"})
MAX_QUERY: Final = 100


async def list_people(request: Request) -> Response:
    document_id = request.path_params["document_id"]
    await require(request, document_id, Right.VIEW)
    check_params(request, _PARAMS)
    query = request.query_params.get("q", "").strip()
    if len(query) > MAX_QUERY or "\x00" in query:
        raise ApiError(400, "invalid query parameter", f"q must be at most {MAX_QUERY} characters")
    limit = query_int(request, "limit", 20, 1, 50)
    collab = collab_of(request)
    with store_errors("user"):
        people = await mentionable(
            collab.relational.users, collab.access, document_id, query, limit
        )
    return JSONResponse({"items": [{"id": p.id, "name": p.name} for p in people]})


routes: list[BaseRoute] = [
    Route("/documents/{document_id}/people", list_people, methods=["GET"]),
]
