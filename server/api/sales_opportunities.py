"""``/api/sales-opportunities``: sales opportunities (``docs/api.md``) and
``GET /api/sales-opportunities/pipeline``, the pipeline per stage and currency
(:class:`server.cms.opportunities.OpportunityService`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from server.api.cms_common import Resource, listing_of
from server.api.common import authenticated, collab_of

resource = Resource("sales-opportunities", lambda collab: collab.cms.opportunities)


async def pipeline(request: Request) -> Response:
    """``GET /sales-opportunities/pipeline`` (the opportunities the caller may view, with
    the list's filters): ``{"stages": [...], "currencies": [...]}``."""
    principal = await authenticated(request)
    service = collab_of(request).cms.opportunities
    listing = listing_of(request, service)
    return JSONResponse(await service.pipeline(principal, listing))


routes: list[BaseRoute] = resource.routes(
    Route("/sales-opportunities/pipeline", pipeline, methods=["GET"])
)
