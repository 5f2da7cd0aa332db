"""Sessions over REST: who am I, trade a token for a session cookie, log out.

* ``GET /api/me``: the caller's user record and how they are authenticated.
* ``POST /api/session``: with a valid token (Bearer header), sets the session cookie (the
  token itself; HttpOnly, SameSite=Strict, Secure on https) for browsers, whose WebSockets
  then authenticate with the cookie.
* ``DELETE /api/session``: ends the session: its token and cookie are refused from then on.
  ``DELETE /api/session?all=true`` ends every session of the caller (every token issued
  until now, on every node within 5 s; open sockets are closed).
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.api.common import (
    ApiError,
    audit,
    authenticated,
    collab_of,
    lower_headers,
    request_scheme,
)
from server.identity.authentication import find_token


async def me(request: Request) -> JSONResponse:
    principal = await authenticated(request)
    return JSONResponse(
        {
            "id": principal.user_id,
            "email": principal.email,
            "name": principal.name,
            "role": principal.role,
            "sessionId": principal.session_id,
            "scope": sorted(principal.documents) if principal.documents is not None else None,
            "expiresAt": principal.expires_at or None,
        }
    )


async def open_session(request: Request) -> Response:
    principal = await authenticated(request)
    collab = collab_of(request)
    headers = lower_headers(request.headers)
    found = find_token(headers, "", collab.settings.session_cookie)
    if found is None or found[1] != "header":
        raise ApiError(400, "token required", "send the token as Authorization: Bearer")
    response = JSONResponse({"sessionId": principal.session_id}, status_code=201)
    response.set_cookie(
        collab.settings.session_cookie,
        found[0],
        max_age=max(1, int(principal.expires_at - time.time())),
        httponly=True,
        samesite="strict",
        secure=request_scheme(request) == "https",
        path="/",
    )
    audit(request, principal, "login", "session", principal.session_id)
    collab.signins.signed_in(principal)
    return response


async def close_session(request: Request) -> Response:
    principal = await authenticated(request)
    collab = collab_of(request)
    headers = lower_headers(request.headers)
    everywhere = request.query_params.get("all", "false")
    if everywhere not in ("true", "false"):
        raise ApiError(400, "invalid query parameter", "all must be true or false")
    identity = collab.authn.identify(headers, request.url.query)
    if identity is not None:
        await collab.authn.end_session(identity)
    if everywhere == "true":
        await collab.authn.revoke_user(principal.user_id)
    response = Response(status_code=204)
    response.delete_cookie(collab.settings.session_cookie, path="/")
    changes = {"allSessions": True} if everywhere == "true" else None
    audit(request, principal, "logout", "session", principal.session_id, changes)
    return response


routes = [
    Route("/me", me, methods=["GET"]),
    Route("/session", open_session, methods=["POST"]),
    Route("/session", close_session, methods=["DELETE"]),
]
