"""Audit and data-access trails over REST, for the roles holding ``audit:read`` (built in:
admins and managers).

* ``GET /api/audit``: ``audit_logs`` newest first; filters ``user`` (id), ``action``,
  ``resourceType``, ``resource``, ``since`` / ``until`` (ISO 8601), ``limit`` (1-500),
  ``cursor`` (from the previous page's ``nextCursor``).
* ``GET /api/audit/access``: ``data_access_logs``; filters ``user``, ``document``,
  ``accessType``, ``since``, ``until``, ``limit``, ``cursor``.

Both flush the audit pipeline first, so a caller sees the entries of its own past requests.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from persistence.relational import AccessQuery, AuditQuery
from server.api.common import ApiError, authenticated, collab_of, query_int, query_moment
from server.identity.authentication import Principal
from server.identity.roles import READ_AUDIT

_AUDIT_FILTERS = frozenset({"user", "action", "resourceType", "resource", "since", "until"})
_ACCESS_FILTERS = frozenset({"user", "document", "accessType", "since", "until"})


async def _reader(request: Request, filters: frozenset[str]) -> Principal:
    principal = await authenticated(request)
    if not await collab_of(request).access.allows(principal.subject, READ_AUDIT):
        raise ApiError(
            403,
            "forbidden",
            "the audit trail needs the audit:read permission (admins and managers hold it)",
        )
    unknown = set(request.query_params) - filters - {"limit", "cursor"}
    if unknown:
        raise ApiError(400, "unknown query parameter", ", ".join(sorted(unknown)))
    return principal


def _user(request: Request) -> uuid.UUID | None:
    raw = request.query_params.get("user")
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError(400, "invalid query parameter", "user must be a user id") from None


def _json(entry: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(entry):
        value = getattr(entry, field.name)
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        parts = field.name.split("_")
        out[parts[0] + "".join(p.title() for p in parts[1:])] = value
    return out


def _common(request: Request) -> dict[str, Any]:
    """The filters both trails share: user, time range, page size, cursor."""
    return {
        "user_id": _user(request),
        "since": query_moment(request, "since"),
        "until": query_moment(request, "until"),
        "limit": query_int(request, "limit", 50, 1, 500),
        "cursor": request.query_params.get("cursor") or None,
    }


async def _page(
    request: Request, make_query: Callable[[], Any], fetch: Callable[[Any], Awaitable[Any]]
) -> JSONResponse:
    """Build the query (400 if it does not hold), flush the trail, return one page."""
    try:
        query = make_query()
    except ValueError as exc:
        raise ApiError(400, "invalid query", str(exc)) from exc
    await collab_of(request).audit.flush()
    try:
        page = await fetch(query)
    except ValueError as exc:
        raise ApiError(400, "invalid query", str(exc)) from exc
    return JSONResponse({"items": [_json(e) for e in page.items], "nextCursor": page.next_cursor})


async def audit_log(request: Request) -> JSONResponse:
    await _reader(request, _AUDIT_FILTERS)
    params = request.query_params
    return await _page(
        request,
        lambda: AuditQuery(
            action=params.get("action") or None,
            resource_type=params.get("resourceType") or None,
            resource_id=params.get("resource") or None,
            **_common(request),
        ),
        collab_of(request).relational.audit.query,
    )


async def access_log(request: Request) -> JSONResponse:
    await _reader(request, _ACCESS_FILTERS)
    params = request.query_params
    return await _page(
        request,
        lambda: AccessQuery(
            document_id=params.get("document") or None,
            access_type=params.get("accessType") or None,
            **_common(request),
        ),
        collab_of(request).relational.audit.query_access,
    )


routes = [
    Route("/audit", audit_log, methods=["GET"]),
    Route("/audit/access", access_log, methods=["GET"]),
]
