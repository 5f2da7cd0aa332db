"""``GET /api/search``: full-text search across the business collections (``docs/search.md``).

Answer: ``{"items": [{"type", "id", "title", "score", "snippet", "updatedAt"}], "total",
"limit", "offset"}``, best first, only what the caller may view (filtered inside the query:
totals and pages are right). Parameters: ``q`` (required: its words, matched literally),
``type`` (repeatable: ``business_document``, ``project``, ``market_research``,
``strategic_plan``, ``sales_opportunity``, ``knowledge_article``), ``status``, ``tag``,
``owner``, ``updatedFrom`` / ``updatedTo`` (ISO 8601 with a time zone), ``limit`` (1..100,
20), ``offset``.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.content.search import SearchHit
from server.admin.features import SEARCH
from server.api.common import (
    ApiError,
    authenticated,
    check_params,
    collab_of,
    query_int,
    query_moment,
)
from server.search.service import RESOURCE_TYPES, Search

MAX_LIMIT: Final = 100
MAX_OFFSET: Final = 10_000
PARAMS: Final = frozenset(
    {"q", "type", "status", "tag", "owner", "updatedFrom", "updatedTo", "limit", "offset"}
)


async def search_enabled(request: Request, user_id: str) -> None:
    """404 while the ``search`` feature flag is off for the caller (docs/administration.md)."""
    if not await collab_of(request).features.enabled(SEARCH, user_id):
        raise ApiError(404, "search is off", "full-text search is not enabled for you")


def hit_view(hit: SearchHit) -> dict[str, Any]:
    """A hit as the API shows it."""
    return {
        "type": RESOURCE_TYPES[hit.collection],
        "id": hit.id,
        "title": hit.title,
        "score": hit.score,
        "snippet": hit.snippet,
        "updatedAt": hit.updated_at.isoformat() if hit.updated_at is not None else None,
    }


async def search(request: Request) -> Response:
    """``GET /search?q=...``: see the module."""
    principal = await authenticated(request)
    await search_enabled(request, principal.user_id)
    check_params(request, PARAMS, frozenset({"type"}))
    params = request.query_params
    text = params.get("q")
    if text is None:
        raise ApiError(400, "invalid query parameter", "q (the words to look for) is required")
    limit = query_int(request, "limit", 20, 1, MAX_LIMIT)
    offset = query_int(request, "offset", 0, 0, MAX_OFFSET)
    page = await collab_of(request).search.search(
        principal,
        Search(
            text,
            types=tuple(kind for kind in params.getlist("type") if kind),
            status=params.get("status") or None,
            tag=params.get("tag") or None,
            owner=params.get("owner") or None,
            updated_from=query_moment(request, "updatedFrom"),
            updated_to=query_moment(request, "updatedTo"),
            limit=limit,
            offset=offset,
        ),
    )
    return JSONResponse(
        {
            "items": [hit_view(hit) for hit in page.items],
            "total": page.total,
            "limit": limit,
            "offset": offset,
        }
    )


routes: list[BaseRoute] = [Route("/search", search, methods=["GET"])]
