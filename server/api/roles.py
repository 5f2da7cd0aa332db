"""Roles over REST (``docs/administration.md``): ``GET /api/roles`` (any signed-in user:
which roles exist and what they allow), ``POST /api/roles`` (``{"name", "description"?,
"permissions": [...]}``), ``GET /api/roles/{name}``, ``PATCH /api/roles/{name}``
(``description``, ``permissions``) and ``DELETE /api/roles/{name}`` (custom roles no user
holds) for admins (``roles:manage``). The built-in roles are read-only here."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.relational import UNSET, Role
from server.api.common import (
    Model,
    authenticated,
    check_params,
    collab_of,
    read_json,
    require_permission,
)
from server.identity.roles import BUILT_IN_ROLES, MANAGE_ROLES
from server.review.notifications import iso


def role_view(role: Role) -> dict[str, Any]:
    return {
        "name": role.name,
        "description": role.description,
        "permissions": list(role.permissions),
        "builtIn": role.name in BUILT_IN_ROLES,
        "createdAt": iso(role.created_at),
    }


class CreateBody(Model):
    name: str = Field(min_length=1, max_length=50)
    description: str | None = Field(None, max_length=10_000)
    permissions: list[str] = Field(default_factory=list, max_length=100)


class UpdateBody(Model):
    description: str | None = Field(None, max_length=10_000)
    permissions: list[str] | None = Field(None, max_length=100)


async def list_roles(request: Request) -> Response:
    await authenticated(request)
    check_params(request, frozenset())
    roles = await collab_of(request).roles.list()
    return JSONResponse({"items": [role_view(role) for role in roles]})


async def get_role(request: Request) -> Response:
    await authenticated(request)
    check_params(request, frozenset())
    return JSONResponse(role_view(await collab_of(request).roles.get(request.path_params["name"])))


async def create_role(request: Request) -> Response:
    principal = await require_permission(request, MANAGE_ROLES)
    check_params(request, frozenset())
    body = await read_json(request, CreateBody)
    role = await collab_of(request).roles.create(
        principal.context,
        name=body.name,
        description=body.description,
        permissions=body.permissions,
    )
    return JSONResponse(
        role_view(role), status_code=201, headers={"Location": f"/api/roles/{role.name}"}
    )


async def update_role(request: Request) -> Response:
    principal = await require_permission(request, MANAGE_ROLES)
    check_params(request, frozenset())
    body = await read_json(request, UpdateBody)
    given = body.model_fields_set
    role = await collab_of(request).roles.update(
        principal.context,
        request.path_params["name"],
        description=body.description if "description" in given else UNSET,
        permissions=body.permissions
        if "permissions" in given and body.permissions is not None
        else UNSET,
    )
    return JSONResponse(role_view(role))


async def delete_role(request: Request) -> Response:
    principal = await require_permission(request, MANAGE_ROLES)
    check_params(request, frozenset())
    await collab_of(request).roles.delete(principal.context, request.path_params["name"])
    return Response(status_code=204)


routes: list[BaseRoute] = [
    Route("/roles", list_roles, methods=["GET"]),
    Route("/roles", create_role, methods=["POST"]),
    Route("/roles/{name}", get_role, methods=["GET"]),
    Route("/roles/{name}", update_role, methods=["PATCH"]),
    Route("/roles/{name}", delete_role, methods=["DELETE"]),
]
