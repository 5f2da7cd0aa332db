"""Request ids: every HTTP request and WebSocket upgrade through the ASGI app gets one.

The client's ``X-Request-ID`` is kept when it is a sane token, else a new id is made
(:func:`server.ops.context.accept_request_id`); it is set as the request's log context,
echoed in the response's ``X-Request-ID`` header and carried into the audit rows the
request writes (their ``changes.requestId``). A pure ASGI middleware: one context-variable
set and one header per request, nothing per WebSocket frame.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.ops import context

_HEADER = context.REQUEST_ID_HEADER.encode()


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given: str | None = None
        for name, value in scope.get("headers", ()):
            if name == _HEADER:
                given = value.decode("latin-1")
                break
        request_id = context.accept_request_id(given)
        echoed = (_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            await send(message)

        token = context.request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            context.request_id.reset(token)
