"""Feature flags over REST (``docs/administration.md``).

* ``GET /api/features/{name}`` (any signed-in user): ``{"name", "enabled", "rollout",
  "default", "set", "forYou"}``: the flag as stored (``set`` false: unset, ``enabled`` is then
  the default) and whether it is on for the caller.
* ``PUT /api/features/{name}`` (``features:manage``): ``{"enabled": bool, "rollout"?: 0..100}``.
* ``DELETE /api/features/{name}`` (``features:manage``): back to the default (204; 404 if
  it was not set).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictBool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from server.admin.features import FlagState, check_name
from server.api.common import (
    ApiError,
    Model,
    authenticated,
    check_params,
    collab_of,
    read_json,
    require_permission,
)
from server.identity.roles import MANAGE_FEATURES


def flag_view(state: FlagState, for_you: bool) -> dict[str, Any]:
    return {
        "name": state.name,
        "enabled": state.enabled,
        "rollout": state.rule.rollout if state.rule is not None else None,
        "default": state.default,
        "set": state.rule is not None,
        "forYou": for_you,
    }


class FlagBody(Model):
    enabled: StrictBool
    rollout: int | None = Field(None, ge=0, le=100, strict=True)


async def get_flag(request: Request) -> Response:
    principal = await authenticated(request)
    check_params(request, frozenset())
    features = collab_of(request).features
    name = check_name(request.path_params["name"])
    state = await features.state(name)
    return JSONResponse(flag_view(state, await features.enabled(name, principal.user_id)))


async def put_flag(request: Request) -> Response:
    principal = await require_permission(request, MANAGE_FEATURES)
    check_params(request, frozenset())
    body = await read_json(request, FlagBody)
    features = collab_of(request).features
    state = await features.set(
        principal.context, request.path_params["name"], body.enabled, body.rollout
    )
    return JSONResponse(flag_view(state, await features.enabled(state.name, principal.user_id)))


async def delete_flag(request: Request) -> Response:
    principal = await require_permission(request, MANAGE_FEATURES)
    check_params(request, frozenset())
    name = request.path_params["name"]
    if not await collab_of(request).features.delete(principal.context, name):
        raise ApiError(404, "feature flag not found", f"the flag {name} is not set")
    return Response(status_code=204)


routes: list[BaseRoute] = [
    Route("/features/{name}", get_flag, methods=["GET"]),
    Route("/features/{name}", put_flag, methods=["PUT"]),
    Route("/features/{name}", delete_flag, methods=["DELETE"]),
]
