"""Grants over REST, for admins (``permissions:manage``; ``docs/administration.md``).

* ``POST /api/permissions``: ``{"userId", "resourceType", "resourceId", "permissionLevel",
  "expiresAt"?}`` -> 201 with the grant (a second grant of the same user on the same
  resource replaces the first and keeps its id).
* ``GET /api/permissions?userId=...`` or ``?resourceType=...&resourceId=...``: the grants.
* ``DELETE /api/permissions/{id}``: revokes one grant (204).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.relational import Grant
from server.api.common import (
    Model,
    check_params,
    collab_of,
    read_json,
    require_permission,
)
from server.identity.roles import MANAGE_PERMISSIONS
from server.review.notifications import iso

FILTERS: Final = frozenset({"userId", "resourceType", "resourceId"})


def grant_view(grant: Grant) -> dict[str, Any]:
    return {
        "id": str(grant.id),
        "userId": str(grant.user_id),
        "resourceType": grant.resource_type,
        "resourceId": grant.resource_id,
        "permissionLevel": grant.permission_level,
        "grantedBy": str(grant.granted_by) if grant.granted_by is not None else None,
        "grantedAt": iso(grant.granted_at),
        "expiresAt": iso(grant.expires_at),
    }


class GrantBody(Model):
    userId: str = Field(min_length=1, max_length=64)
    resourceType: str = Field(min_length=1, max_length=100)
    resourceId: str = Field(min_length=1, max_length=255)
    permissionLevel: str = Field(min_length=1, max_length=50)
    expiresAt: datetime | None = None


async def create_grant(request: Request) -> Response:
    principal = await require_permission(request, MANAGE_PERMISSIONS)
    check_params(request, frozenset())
    body = await read_json(request, GrantBody)
    grant = await collab_of(request).grants.grant(
        principal.context,
        user_id=body.userId,
        resource_type=body.resourceType,
        resource_id=body.resourceId,
        level=body.permissionLevel,
        expires_at=body.expiresAt,
    )
    return JSONResponse(
        grant_view(grant), status_code=201, headers={"Location": f"/api/permissions/{grant.id}"}
    )


async def list_grants(request: Request) -> Response:
    await require_permission(request, MANAGE_PERMISSIONS)
    check_params(request, FILTERS)
    params = request.query_params
    grants = await collab_of(request).grants.list(
        user_id=params.get("userId") or None,
        resource_type=params.get("resourceType") or None,
        resource_id=params.get("resourceId") or None,
    )
    return JSONResponse({"items": [grant_view(grant) for grant in grants]})


async def delete_grant(request: Request) -> Response:
    principal = await require_permission(request, MANAGE_PERMISSIONS)
    check_params(request, frozenset())
    await collab_of(request).grants.revoke(principal.context, request.path_params["grant_id"])
    return Response(status_code=204)


routes: list[BaseRoute] = [
    Route("/permissions", create_grant, methods=["POST"]),
    Route("/permissions", list_grants, methods=["GET"]),
    Route("/permissions/{grant_id}", delete_grant, methods=["DELETE"]),
]
