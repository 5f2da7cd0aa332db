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

from crdt.ids import InvalidRoomName, parse_room_name
from persistence.errors import StorageError
from persistence.memory import MemoryRoomStore
from persistence.ports import RoomStore
from persistence.sqlite import SqliteRoomStore
from server.connection import Connection
from server.errors import CollabError, ServerShuttingDown, UnsupportedData, classify
from server.registry import RoomRegistry
from server.settings import Settings

log = logging.getLogger(__name__)


def problem(status: int, title: str, detail: str = "") -> JSONResponse:
    """An RFC 9457 problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


async def open_store(settings: Settings) -> RoomStore:
    """The room store the settings ask for (embedded SQLite by default)."""
    if settings.storage == "memory":
        return MemoryRoomStore()
    return await SqliteRoomStore.open(settings.data_dir / "rooms.sqlite3")


class Collab:
    """Everything the app owns while it runs; created and torn down by the lifespan."""

    def __init__(self, settings: Settings, store: RoomStore, tasks: asyncio.TaskGroup) -> None:
        self.settings = settings
        self.store = store
        self.registry = RoomRegistry(store, settings, tasks)
        self.connections: set[Connection] = set()
        self.started = time.monotonic()
        self.process = psutil.Process()
        self.accepting = True

    def shutdown_sockets(self) -> None:
        self.accepting = False
        for conn in list(self.connections):
            conn.fail(ServerShuttingDown("server shutting down"))


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app. Nothing starts until the lifespan runs."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            store = await open_store(settings)
            stack.push_async_callback(store.aclose)
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            collab = Collab(settings, store, tasks)
            app.state.collab = collab
            log.info("collab ready (storage=%s, data_dir=%s)", settings.storage, settings.data_dir)
            try:
                yield
            finally:
                collab.shutdown_sockets()
                await collab.registry.close()

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
        }
    )


async def websocket_endpoint(websocket: WebSocket) -> None:
    collab: Collab = websocket.app.state.collab
    try:
        name = parse_room_name(websocket.path_params["room"])
    except InvalidRoomName as exc:
        await websocket.send_denial_response(problem(400, "invalid room name", str(exc)))
        return
    if not collab.accepting:
        await websocket.send_denial_response(problem(503, "server restarting"))
        return
    events = websocket.query_params.get("events") in {"1", "true", "yes"}
    conn = Connection(
        websocket,
        str(name),
        max_buffered_bytes=collab.settings.max_buffered_bytes,
        app_events=events,
    )
    await websocket.accept()
    collab.connections.add(conn)
    try:
        if conn.needs_writer:
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(conn.run_writer(), name=f"writer {conn.id}")
                await _serve(collab, conn, websocket, name)
                # The socket is gone: whatever the writer still holds cannot be delivered.
                writer.cancel()
        else:
            await _serve(collab, conn, websocket, name)
    finally:
        collab.connections.discard(conn)


async def _serve(collab: Collab, conn: Connection, websocket: WebSocket, name: Any) -> None:
    """Join the room and pump frames into it until the socket closes or fails."""
    registry = collab.registry
    try:
        room = await registry.join(name, conn)
    except (CollabError, StorageError) as exc:
        conn.fail(exc)
        await _drain_until_disconnect(websocket)
        return
    log.debug("conn %s joined room %s", conn.id, room.key)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            try:
                if data is None:
                    raise UnsupportedData("text frames are not part of the y-websocket protocol")
                room.receive(conn, data)
            except Exception as exc:
                if classify(exc).http_status == 500:
                    log.exception("conn %s room %s: unexpected error", conn.id, room.key)
                conn.fail(exc)
                await _drain_until_disconnect(websocket)
                return
            registry.maybe_compact(room)
    finally:
        registry.leave(room, conn)


async def _drain_until_disconnect(websocket: WebSocket) -> None:
    """After asking to close, read until the peer's close arrives (frames are ignored)."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
