"""The Starlette application: ``/ws/{room}`` for y-websocket clients, ``/healthz``, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Mount, WebSocketRoute
from starlette.websockets import WebSocket

from persistence.content.ports import ContentStore
from persistence.rooms.ports import RoomStore
from server import shutdown
from server.api import api_routes
from server.api import health as health_routes
from server.api.common import exception_handlers, lower_headers
from server.api.cors import cors_middleware
from server.api.request_ids import RequestIds
from server.api.web import web_routes
from server.assembly import Collab as Collab
from server.hooks import (
    Hooks,
)
from server.identity.rights import DOCUMENTS
from server.ops import context, counters
from server.ops.health import Readiness
from server.ops.observe import PROBE_DOCUMENT, check_dependencies, metrics_of
from server.realtime.connection import Connection
from server.realtime.direct import DIRECT_HANDLER, FanoutWriter
from server.realtime.hub import Hub
from server.realtime.sessions import WS_PREFIX, Admission, Refusal, Session
from server.review.counters import review_counters
from server.services import open_services
from server.settings import Settings
from server.shutdown import CLOSE_SECONDS as CLOSE
from server.shutdown import TaskGroup, bounded
from server.stores import node_name, open_content_store, open_store

log = logging.getLogger(__name__)

_apps = itertools.count(1)


def problem_body(status: int, title: str, detail: str = "") -> dict[str, Any]:
    """An RFC 9457 problem document."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return body


def problem(status: int, title: str, detail: str = "") -> JSONResponse:
    """An RFC 9457 problem+json response."""
    return JSONResponse(
        problem_body(status, title, detail),
        status_code=status,
        media_type="application/problem+json",
    )


# A third-party extension: called once with the app's hooks and connection hub, it subscribes.
Extension = Callable[[Hooks, Hub], object]


def create_app(
    settings: Settings | None = None,
    *,
    room_store: RoomStore | None = None,
    content_store: ContentStore | None = None,
    extensions: Sequence[Extension] = (),
) -> Starlette:
    """Build the ASGI app. Nothing starts until the lifespan runs.

    ``room_store`` and ``content_store`` replace the stores the settings name (tests inject
    failing stores); the app then closes them at shutdown like its own. ``extensions`` are
    called once each, in order, with the app's hooks and hub, after the built-in features
    subscribed and before the first connection (``docs/extensions.md``).
    """
    settings = settings or Settings()
    # Unique per process and app: the origin of this node's stream entries.
    node_id = f"{node_name(settings)}.{os.getpid()}.{next(_apps)}"
    context.set_node(node_name(settings))
    readiness = Readiness()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            services = await open_services(settings, stack)
            content = content_store or await open_content_store(settings)
            stack.push_async_callback(bounded, "closing the content store", content.aclose, CLOSE)
            store = room_store or await open_store(settings, services.coordinator, content, stack)
            # The service store tries to drain its spool for 5 s itself: a second more here.
            stack.push_async_callback(bounded, "closing the room store", store.aclose, CLOSE + 1)
            tasks = await stack.enter_async_context(TaskGroup())
            collab = Collab(settings, store, content, tasks, services, node_id)
            app.state.collab = collab
            collab.guard.start(tasks)
            collab.stats.start(tasks)
            for extension in extensions:
                extension(collab.hooks, collab.hub)
            if collab.cluster is not None:
                collab.cluster.start(tasks)
            app.state.metrics = metrics_of(
                collab,
                {"section_locks_held": lambda: float(len(collab.locks.known))},
                review_counters(collab.comments, collab.notifier),
                readiness,
            )
            check_dependencies(
                readiness,
                settings,
                redis=services.coordinator.durability,
                postgres=services.relational.schema_revision,
                mongo=functools.partial(content.get, DOCUMENTS, PROBE_DOCUMENT),
            )
            readiness.started()
            log.info(
                "collab ready (storage=%s, data_dir=%s, relational=%s, coordinator=%s)",
                settings.storage,
                settings.data_dir,
                services.relational.backend,
                "redis" if settings.redis_url else "in-process",
            )
            try:
                # uvicorn hands this state to every connection's protocol: that is how our
                # WebSocket protocol finds the direct path's handler.
                yield {"collab": collab, DIRECT_HANDLER: DirectWebSockets(collab)}
            finally:
                # Every step has a deadline (see server.shutdown); the stack then closes the
                # stores, each within its own.
                readiness.drain("shutting down")
                collab.guard.stop()
                collab.shutdown_sockets()
                await bounded("writing the activity counters", collab.stats.aclose, 1.0)
                await bounded("flushing the rooms", collab.registry.close, shutdown.ROOMS_SECONDS)
                await bounded(
                    "writing snapshots", collab.snapshots.close, shutdown.SNAPSHOTS_SECONDS
                )
                if collab.cluster is not None:
                    # Let what the closing sockets said (leaves, unlocks) reach other nodes.
                    await collab.cluster.drain(timeout=shutdown.SIGNALS_SECONDS)
                    collab.cluster.stop()
                if collab.doc_cache is not None:
                    collab.doc_cache.stop()
                await tasks.settle(shutdown.TASKS_SECONDS)

    app = Starlette(
        routes=[
            *health_routes.routes(),
            WebSocketRoute("/ws/{room:path}", websocket_endpoint),
            Mount(
                "/api",
                routes=api_routes(),
                middleware=cors_middleware(settings.allowed_origins),
            ),
            *web_routes(),
        ],
        lifespan=lifespan,
        exception_handlers=exception_handlers(),
        middleware=[Middleware(RequestIds)],
    )
    app.state.readiness = readiness
    return app


class DirectWebSockets:
    """The direct path's handler (see :mod:`server.realtime.direct`): rooms under ``/ws/``."""

    def __init__(self, collab: Collab) -> None:
        self._collab = collab

    def handles(self, path: str) -> bool:
        return path.startswith(WS_PREFIX)

    def admit(
        self, path: str, query: str, headers: dict[str, str], client: str | None
    ) -> tuple[int, dict[str, Any]] | Admission:
        decision = self._collab.admit(path, query, headers, client)
        if isinstance(decision, Refusal):
            return decision.status, decision.body()
        return decision

    async def open(self, ticket: Admission, writer: FanoutWriter) -> Session | None:
        collab = self._collab
        if not collab.accepting:  # the server began shutting down meanwhile
            collab.joins.leave()
            writer.close(1012, "server restarting")
            return None
        try:
            conn = Connection(
                str(ticket.room),
                max_buffered_bytes=collab.settings.max_buffered_bytes,
                fast=writer,
                app_events=ticket.app_events,
            )
            return await collab.open_session(ticket, conn)
        finally:
            collab.joins.leave()  # counted in by admit()


async def websocket_endpoint(websocket: WebSocket) -> None:
    """The ASGI route to the rooms, for servers without our protocol (and TestClient)."""
    collab: Collab = websocket.app.state.collab
    headers = lower_headers(websocket.headers)
    client = websocket.client.host if websocket.client is not None else None
    decision = collab.admit(websocket.url.path, websocket.url.query, headers, client)
    if isinstance(decision, Refusal):
        denial = problem(decision.status, decision.title, decision.detail)
        denial.headers.update(decision.headers())
        await websocket.send_denial_response(denial)
        return
    try:
        conn = Connection(
            str(decision.room),
            max_buffered_bytes=collab.settings.max_buffered_bytes,
            websocket=websocket,
            app_events=decision.app_events,
        )
        await websocket.accept()
    except BaseException:
        collab.joins.leave()  # counted in by admit()
        raise
    async with asyncio.TaskGroup() as tasks:
        writer = tasks.create_task(conn.run_writer(), name=f"writer {conn.id}")
        try:
            session = await collab.open_session(decision, conn)
        finally:
            collab.joins.leave()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    if not conn.closing:  # the client closed it (or the link was lost)
                        counters.client_closed(message.get("code"))
                    break
                if session is not None:
                    session.on_frame(message.get("bytes"))
        finally:
            if session is not None:
                session.on_close()
            # The socket is gone: whatever the writer still holds cannot be delivered.
            writer.cancel()
