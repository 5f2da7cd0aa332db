"""The Starlette application: ``/ws/{room}`` for y-websocket clients, ``/healthz``, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import psutil
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from crdt.ids import RoomName
from persistence.content import ContentStore
from persistence.memory import MemoryRoomStore
from persistence.ports import RoomStore
from persistence.sqlite import SqliteRoomStore
from persistence.sqlite_content import SqliteContentStore
from server.connection import Connection
from server.errors import ServerShuttingDown
from server.registry import RoomRegistry
from server.revisions import Revisions
from server.sessions import WS_PREFIX, Refusal, Session, admit
from server.settings import Settings
from server.snapshots import Snapshotter
from server.transport import DIRECT_HANDLER, FanoutWriter

log = logging.getLogger(__name__)


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


async def open_content_store(settings: Settings) -> ContentStore:
    """The document content store: MongoDB when ``mongo_url`` is set, else embedded SQLite."""
    if settings.mongo_url:
        # Imported only when configured: pymongo weighs tens of MB of memory.
        from persistence.mongo import MongoContentStore

        return MongoContentStore.from_url(settings.mongo_url, settings.mongo_database)
    return await SqliteContentStore.open(settings.data_dir / "content.sqlite3")


async def open_store(settings: Settings) -> RoomStore:
    """The room store the settings ask for (embedded SQLite by default)."""
    if settings.storage == "memory":
        return MemoryRoomStore()
    return await SqliteRoomStore.open(settings.data_dir / "rooms.sqlite3")


class Collab:
    """Everything the app owns while it runs; created and torn down by the lifespan."""

    def __init__(
        self,
        settings: Settings,
        store: RoomStore,
        content: ContentStore,
        tasks: asyncio.TaskGroup,
    ) -> None:
        self.settings = settings
        self.store = store
        self.content = content
        self.registry = RoomRegistry(store, settings, tasks)
        self.snapshots = Snapshotter(
            content,
            store,
            self.registry.live_doc,
            tasks,
            idle=settings.snapshot_idle_seconds,
            max_wait=settings.snapshot_max_wait_seconds,
        )
        self.registry.on_change = lambda name: self.snapshots.touched(name.document_id)
        self.revisions = Revisions(
            content,
            self.registry,
            self.snapshots,
            keep_inline=settings.revisions_inline,
            interval=settings.revision_interval_seconds,
        )
        self.snapshots.after_write = self.revisions.on_snapshot
        self.connections: set[Connection] = set()
        self.started = time.monotonic()
        self.process = psutil.Process()
        self.accepting = True

    async def open_session(self, room: RoomName, conn: Connection) -> Session | None:
        """Register the connection and join its room (None: it was closed with the error)."""
        self.connections.add(conn)
        session = await Session.open(self.registry, room, conn)
        if session is None:
            self.connections.discard(conn)
            return None
        chained = conn.on_close

        def on_close(closing: Connection) -> None:
            self.connections.discard(closing)
            if chained is not None:
                chained(closing)

        conn.on_close = on_close
        return session

    def shutdown_sockets(self) -> None:
        self.accepting = False
        for conn in list(self.connections):
            conn.fail(ServerShuttingDown("server shutting down"))


def create_app(
    settings: Settings | None = None, *, room_store: RoomStore | None = None
) -> Starlette:
    """Build the ASGI app. Nothing starts until the lifespan runs.

    ``room_store`` replaces the store the settings name (tests inject failing stores); the
    app then closes it at shutdown like its own.
    """
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            store = room_store if room_store is not None else await open_store(settings)
            stack.push_async_callback(store.aclose)
            content = await open_content_store(settings)
            stack.push_async_callback(content.aclose)
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            collab = Collab(settings, store, content, tasks)
            app.state.collab = collab
            log.info("collab ready (storage=%s, data_dir=%s)", settings.storage, settings.data_dir)
            try:
                # uvicorn hands this state to every connection's protocol: that is how our
                # WebSocket protocol finds the direct path's handler.
                yield {"collab": collab, DIRECT_HANDLER: DirectWebSockets(collab)}
            finally:
                collab.shutdown_sockets()
                await collab.registry.close()
                await collab.snapshots.flush()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            WebSocketRoute("/ws/{room:path}", websocket_endpoint),
        ],
        lifespan=lifespan,
    )
    return app


async def healthz(request: Request) -> JSONResponse:
    collab: Collab = request.app.state.collab
    with collab.process.oneshot():
        cpu = collab.process.cpu_times()
        rss = collab.process.memory_info().rss
    return JSONResponse(
        {
            "status": "ok",
            "uptime_seconds": round(time.monotonic() - collab.started, 3),
            "cpu_seconds": round(cpu.user + cpu.system, 3),
            "rss_bytes": rss,
            **collab.registry.stats(),
            **collab.snapshots.stats(),
        }
    )


class DirectWebSockets:
    """The direct path's handler (see :mod:`server.transport`): rooms under ``/ws/``."""

    def __init__(self, collab: Collab) -> None:
        self._collab = collab

    def handles(self, path: str) -> bool:
        return path.startswith(WS_PREFIX)

    def refuse(self, path: str, query: str) -> tuple[int, dict[str, Any]] | None:
        decision = admit(path, query, accepting=self._collab.accepting)
        if isinstance(decision, Refusal):
            return decision.status, problem_body(decision.status, decision.title, decision.detail)
        return None

    async def open(self, path: str, query: str, writer: FanoutWriter) -> Session | None:
        decision = admit(path, query, accepting=self._collab.accepting)
        if isinstance(decision, Refusal):  # the server began shutting down meanwhile
            writer.close(1012, decision.title)
            return None
        conn = Connection(
            str(decision.room),
            max_buffered_bytes=self._collab.settings.max_buffered_bytes,
            fast=writer,
            app_events=decision.app_events,
        )
        return await self._collab.open_session(decision.room, conn)


async def websocket_endpoint(websocket: WebSocket) -> None:
    """The ASGI route to the rooms, for servers without our protocol (and TestClient)."""
    collab: Collab = websocket.app.state.collab
    decision = admit(websocket.url.path, websocket.url.query, accepting=collab.accepting)
    if isinstance(decision, Refusal):
        await websocket.send_denial_response(
            problem(decision.status, decision.title, decision.detail)
        )
        return
    conn = Connection(
        str(decision.room),
        max_buffered_bytes=collab.settings.max_buffered_bytes,
        websocket=websocket,
        app_events=decision.app_events,
    )
    await websocket.accept()
    async with asyncio.TaskGroup() as tasks:
        writer = tasks.create_task(conn.run_writer(), name=f"writer {conn.id}")
        session = await collab.open_session(decision.room, conn)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if session is not None:
                    session.on_frame(message.get("bytes"))
        finally:
            if session is not None:
                session.on_close()
            # The socket is gone: whatever the writer still holds cannot be delivered.
            writer.cancel()
