"""Users over REST, for admins (``users:manage``; ``docs/administration.md``).

* ``GET /api/users``: a page of users; filters ``role``, ``status``, ``department``;
  ``limit`` (1..200, 50), ``offset``. Answer ``{"items", "total", "limit", "offset"}``.
* ``POST /api/users``: ``{"email", "name", "role", "department"?}`` -> 201 with the user.
* ``GET /api/users/{id}``: one user.
* ``PATCH /api/users/{id}``: any of ``name``, ``department`` (null clears), ``role``,
  ``status`` (``suspended`` suspends, ``active`` reactivates, ``deactivated``).
* ``DELETE /api/users/{id}``: removes the user, or deactivates one who has a history
  (``{"removed": false, "user": ...}``).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from persistence.relational import UNSET, User
from server.api.common import (
    Model,
    check_params,
    collab_of,
    query_int,
    read_json,
    require_permission,
)
from server.identity.roles import MANAGE_USERS
from server.review.notifications import iso

FILTERS: Final = frozenset({"role", "status", "department", "limit", "offset"})


def user_view(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "department": user.department,
        "status": user.status,
        "lastLogin": iso(user.last_login),
        "suspendedAt": iso(user.suspended_at),
        "createdAt": iso(user.created_at),
        "updatedAt": iso(user.updated_at),
    }


class CreateBody(Model):
    email: str = Field(min_length=3, max_length=255)
    name: str = Field(min_length=1, max_length=255)
    role: str = Field(min_length=1, max_length=50)
    department: str | None = Field(None, max_length=100)


class UpdateBody(Model):
    name: str | None = Field(None, min_length=1, max_length=255)
    department: str | None = Field(None, max_length=100)
    role: str | None = Field(None, min_length=1, max_length=50)
    status: str | None = None


async def list_users(request: Request) -> Response:
    await require_permission(request, MANAGE_USERS)
    check_params(request, FILTERS)
    params = request.query_params
    limit = query_int(request, "limit", 50, 1, 200)
    offset = query_int(request, "offset", 0, 0, 10_000_000)
    page = await collab_of(request).users.list(
        role=params.get("role") or None,
        status=params.get("status") or None,
        department=params.get("department") or None,
        limit=limit,
        offset=offset,
    )
    return JSONResponse(
        {
            "items": [user_view(user) for user in page.items],
            "total": page.total,
            "limit": limit,
            "offset": offset,
        }
    )


async def create_user(request: Request) -> Response:
    principal = await require_permission(request, MANAGE_USERS)
    check_params(request, frozenset())
    body = await read_json(request, CreateBody)
    user = await collab_of(request).users.create(
        principal.context,
        email=body.email,
        name=body.name,
        role=body.role,
        department=body.department,
    )
    return JSONResponse(
        user_view(user), status_code=201, headers={"Location": f"/api/users/{user.id}"}
    )


async def get_user(request: Request) -> Response:
    await require_permission(request, MANAGE_USERS)
    check_params(request, frozenset())
    user = await collab_of(request).users.get(request.path_params["user_id"])
    return JSONResponse(user_view(user))


async def update_user(request: Request) -> Response:
    principal = await require_permission(request, MANAGE_USERS)
    check_params(request, frozenset())
    body = await read_json(request, UpdateBody)
    given = body.model_fields_set
    user = await collab_of(request).users.update(
        principal.context,
        request.path_params["user_id"],
        name=body.name if "name" in given and body.name is not None else UNSET,
        department=body.department if "department" in given else UNSET,
        role=body.role if "role" in given and body.role is not None else UNSET,
        status=body.status if "status" in given and body.status is not None else UNSET,
    )
    return JSONResponse(user_view(user))


async def delete_user(request: Request) -> Response:
    principal = await require_permission(request, MANAGE_USERS)
    check_params(request, frozenset())
    removal = await collab_of(request).users.delete(
        principal.context, request.path_params["user_id"]
    )
    return JSONResponse({"removed": removal.removed, "user": user_view(removal.user)})


routes: list[BaseRoute] = [
    Route("/users", list_users, methods=["GET"]),
    Route("/users", create_user, methods=["POST"]),
    Route("/users/{user_id}", get_user, methods=["GET"]),
    Route("/users/{user_id}", update_user, methods=["PATCH"]),
    Route("/users/{user_id}", delete_user, methods=["DELETE"]),
]
