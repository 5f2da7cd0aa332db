"""CORS for the REST API: browser apps on the origins of ``COLLAB_ALLOWED_ORIGINS`` may call it.

Starlette's :class:`~starlette.middleware.cors.CORSMiddleware` does the work; this module only
decides which of two configurations answers a request, so that credentials (the session
cookie) are allowed for the listed origins only and never together with ``*``:

* an Origin listed by name gets its own origin back with
  ``Access-Control-Allow-Credentials: true``;
* with ``*`` in the list, any other Origin gets ``Access-Control-Allow-Origin: *`` and no
  credentials (a browser then sends no cookie; a token in ``Authorization`` still works);
* any other Origin gets no CORS header, and its preflight is refused (400).

The server's own origin needs no CORS (browsers do not preflight same-origin requests). CORS
only lets a browser read the answers: the Origin check of every request
(:func:`server.api.common.authenticated`) still refuses origins that are not allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")
REQUEST_HEADERS: Final = ("Authorization", "Content-Type")
EXPOSED_HEADERS: Final = ("Location", "Retry-After", "Content-Disposition")
PREFLIGHT_MAX_AGE: Final = 600


def normalized(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class ApiCors:
    """ASGI middleware: the named-origins CORS policy or the ``*`` one (see the module)."""

    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str]) -> None:
        self.app = app
        named = [normalized(o) for o in allowed_origins if o.strip() != "*"]
        self.named = frozenset(named)
        self.with_credentials = policy(app, named, credentials=True)
        self.anyone: CORSMiddleware | None = None
        if any(o.strip() == "*" for o in allowed_origins):
            self.anyone = policy(app, ["*"], credentials=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if origin is None:
            await self.app(scope, receive, send)
        elif self.anyone is not None and normalized(origin) not in self.named:
            await self.anyone(scope, receive, send)
        else:
            await self.with_credentials(scope, receive, send)


def policy(app: ASGIApp, origins: Sequence[str], *, credentials: bool) -> CORSMiddleware:
    return CORSMiddleware(
        app,
        allow_origins=origins,
        allow_methods=METHODS,
        allow_headers=REQUEST_HEADERS,
        allow_credentials=credentials,
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE,
    )


def cors_middleware(allowed_origins: Sequence[str]) -> list[Middleware]:
    """The middleware list of the ``/api`` mount."""
    return [Middleware(ApiCors, allowed_origins=list(allowed_origins))]
