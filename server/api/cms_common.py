"""What the REST resources of the CMS collections share (``/api/projects``,
``/api/market-research``, ``/api/strategic-plans``, ``/api/sales-opportunities``,
``/api/knowledge-articles``): the five handlers of a collection (create, read, update,
delete, list) over its :class:`~server.cms.service.CmsService`, the list parameters, the
views. HTTP only: the rules are the service's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from pydantic import RootModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.content.ports import Page
from server.api.common import (
    ApiError,
    authenticated,
    check_params,
    collab_of,
    query_flag,
    query_int,
    read_json,
)
from server.api.ports import ApiCollab
from server.cms.schema import check_record_id, jsonable
from server.cms.service import CmsService, Listing
from server.errors import InvalidError

MAX_LIMIT: Final = 100
MAX_OFFSET: Final = 1_000_000
LIST_PARAMS: Final = frozenset({"q", "sort", "order", "limit", "offset"})

ServiceOf = Callable[[ApiCollab], CmsService]


class JsonObject(RootModel[dict[str, Any]]):
    """A request body that is a JSON object; its fields are checked by the service."""


async def read_object(request: Request) -> dict[str, Any]:
    return (await read_json(request, JsonObject)).root


def record_id_of(request: Request, name: str = "record_id") -> str:
    """The record id of the path; 400 when it cannot be one."""
    try:
        return check_record_id(request.path_params[name], "id")
    except InvalidError as exc:
        raise ApiError(400, "invalid id", exc.detail) from exc


def view(record: Mapping[str, Any], hidden: Sequence[str] = ()) -> dict[str, Any]:
    """A record as JSON (dates as ISO 8601 UTC), without the ``hidden`` fields."""
    shown: dict[str, Any] = jsonable({k: v for k, v in record.items() if k not in hidden})
    return shown


def list_params(service: CmsService) -> frozenset[str]:
    kind = service.kind
    ranges = {f"{name}{end}" for name in kind.ranges for end in ("From", "To")}
    return LIST_PARAMS | set(kind.filters) | ranges | ({"tag"} if kind.tags else set())


def listing_of(
    request: Request, service: CmsService, extra: frozenset[str] = frozenset()
) -> Listing:
    """The list parameters: a filter per field people filter by (equality), ``{field}From``
    / ``{field}To`` ranges, ``tag`` (repeatable, every one), ``q`` (a substring of the text
    fields), ``sort`` and ``order``, ``limit`` (1..100, 20) and ``offset``."""
    kind = service.kind
    check_params(request, list_params(service) | extra, frozenset({"tag"}))
    params = request.query_params
    order = params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise ApiError(400, "invalid query parameter", "order must be asc or desc")
    ranges = {
        name: (params.get(f"{name}From") or None, params.get(f"{name}To") or None)
        for name in kind.ranges
        if params.get(f"{name}From") or params.get(f"{name}To")
    }
    return Listing(
        filters={name: params[name] for name in kind.filters if params.get(name)},
        ranges=ranges,
        tags=tuple(dict.fromkeys(t for t in params.getlist("tag") if t)),
        text=params.get("q") or None,
        sort=params.get("sort") or None,
        descending=order == "desc",
        limit=query_int(request, "limit", 20, 1, MAX_LIMIT),
        offset=query_int(request, "offset", 0, 0, MAX_OFFSET),
    )


def page_view(
    page: Page, listing: Listing, shown: Callable[[Mapping[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    return {
        "items": [shown(item) for item in page.items],
        "total": page.total,
        "limit": listing.limit,
        "offset": listing.offset,
    }


class Resource:
    """The CRUD handlers of one collection; ``shown`` renders a record for the response."""

    def __init__(
        self,
        path: str,
        service_of: ServiceOf,
        shown: Callable[[Mapping[str, Any]], dict[str, Any]] = view,
    ) -> None:
        self.path = path
        self.service_of = service_of
        self.shown = shown

    def service(self, request: Request) -> CmsService:
        return self.service_of(collab_of(request))

    async def create(self, request: Request) -> Response:
        """``POST``: 201 with the record and its ``Location``."""
        principal = await authenticated(request)
        check_params(request, frozenset())
        body = await read_object(request)
        service = self.service(request)
        record = await service.create(principal, body)
        record_id = record[service.kind.id_field]
        return JSONResponse(
            self.shown(record),
            status_code=201,
            headers={"Location": f"/api/{self.path}/{record_id}"},
        )

    async def get(self, request: Request) -> Response:
        """``GET /{id}`` (view)."""
        principal = await authenticated(request)
        record_id = record_id_of(request)
        check_params(request, frozenset())
        record = await self.service(request).read(principal, record_id)
        return JSONResponse(self.shown(record))

    async def update(self, request: Request) -> Response:
        """``PATCH /{id}`` (edit): partial; keyed arrays replaced or edited by key."""
        principal = await authenticated(request)
        record_id = record_id_of(request)
        check_params(request, frozenset())
        body = await read_object(request)
        record = await self.service(request).update(principal, record_id, body)
        return JSONResponse(self.shown(record))

    async def delete(self, request: Request) -> Response:
        """``DELETE /{id}`` (admin right): archive or delete; ``?hard=1`` (admins) deletes."""
        principal = await authenticated(request)
        record_id = record_id_of(request)
        check_params(request, frozenset({"hard"}))
        await self.service(request).delete(principal, record_id, hard=query_flag(request, "hard"))
        return Response(status_code=204)

    async def listing(self, request: Request) -> Response:
        """``GET``: ``{items, total, limit, offset}`` of the records the caller may view."""
        principal = await authenticated(request)
        service = self.service(request)
        listing = listing_of(request, service)
        page = await service.list(principal, listing)
        return JSONResponse(page_view(page, listing, self.shown))

    def routes(self, *extra: BaseRoute) -> list[BaseRoute]:
        """The collection's routes, ``extra`` ones (fixed paths) before ``/{id}``."""
        base = f"/{self.path}"
        item = f"{base}/{{record_id}}"
        return [
            Route(base, self.listing, methods=["GET"]),
            Route(base, self.create, methods=["POST"]),
            *extra,
            Route(item, self.get, methods=["GET"]),
            Route(item, self.update, methods=["PATCH"]),
            Route(item, self.delete, methods=["DELETE"]),
        ]
