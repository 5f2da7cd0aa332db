"""``/api/knowledge-articles``: knowledge articles (``docs/api.md``), publish / unpublish,
likes, lookup by slug (:class:`server.cms.articles.ArticleService`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from server.api.cms_common import Resource, record_id_of, view
from server.api.common import authenticated, check_params, collab_of
from server.cms.articles import HIDDEN


def shown(record: Mapping[str, Any]) -> dict[str, Any]:
    return view(record, HIDDEN)


resource = Resource("knowledge-articles", lambda collab: collab.cms.articles, shown)


async def by_slug(request: Request) -> Response:
    """``GET /knowledge-articles/by-slug/{slug}`` (view)."""
    principal = await authenticated(request)
    check_params(request, frozenset())
    service = collab_of(request).cms.articles
    return JSONResponse(shown(await service.by_slug(principal, request.path_params["slug"])))


def _publisher(published: bool) -> Any:
    async def handler(request: Request) -> Response:
        principal = await authenticated(request)
        article_id = record_id_of(request)
        check_params(request, frozenset())
        service = collab_of(request).cms.articles
        record = await service.publish(principal, article_id, published=published)
        return JSONResponse(shown(record))

    return handler


def _liker(liked: bool) -> Any:
    async def handler(request: Request) -> Response:
        principal = await authenticated(request)
        article_id = record_id_of(request)
        check_params(request, frozenset())
        service = collab_of(request).cms.articles
        return JSONResponse(await service.like(principal, article_id, liked=liked))

    return handler


_ITEM = "/knowledge-articles/{record_id}"
routes: list[BaseRoute] = resource.routes(
    Route("/knowledge-articles/by-slug/{slug}", by_slug, methods=["GET"]),
    Route(f"{_ITEM}/publish", _publisher(True), methods=["POST"]),
    Route(f"{_ITEM}/unpublish", _publisher(False), methods=["POST"]),
    Route(f"{_ITEM}/like", _liker(True), methods=["PUT"]),
    Route(f"{_ITEM}/like", _liker(False), methods=["DELETE"]),
)
