"""Shared fixtures: collab servers in-process and as child processes.

Fixtures for throwaway PostgreSQL and Redis servers (pytest-postgresql / pytest-redis, or
``COLLAB_TEST_POSTGRES_URL`` / ``COLLAB_TEST_REDIS_URL``) join here with the issues that need
those services.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from starlette.applications import Starlette

from loadtests.harness import ServerProcess
from persistence.content.ports import ContentStore
from persistence.relational import NewUser, User
from persistence.rooms.ports import RoomStore
from server.app import Collab, Extension, create_app
from server.cli import uvicorn_config
from server.settings import Settings

# Throwaway PostgreSQL and Redis servers, for every test folder.
pytest_plugins = ("tests.services.postgres", "tests.services.redis")


@pytest.fixture(scope="session")
def collab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A ``collab serve`` child process on embedded defaults, shared by the session."""
    with ServerProcess(
        tmp_path_factory.mktemp("collab-server"), env={"COLLAB_INSECURE_DEV": "true"}
    ) as server:
        yield server


@pytest.fixture(scope="session")
def collab_ws_url(collab_server: ServerProcess) -> str:
    """Base URL for y-websocket clients: ``{collab_ws_url}/{room}``."""
    return collab_server.ws_url


@dataclass
class LiveServer:
    """An in-process server on a free port, for tests that also look at its state."""

    app: Starlette
    settings: Settings
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def collab(self) -> Collab:
        collab: Collab = self.app.state.collab
        return collab

    async def add_user(self, email: str, role: str = "analyst", name: str = "") -> User:
        """A new active user of this server."""
        return await self.collab.relational.users.add(
            NewUser(email, name or email.partition("@")[0], role)
        )

    def token(
        self, user: User, *, ttl: float = 3600, documents: Iterable[str] | None = None
    ) -> str:
        """A signed access token for ``user``."""
        scope = frozenset(documents) if documents is not None else None
        return self.collab.authn.tokens.issue(str(user.id), ttl=ttl, documents=scope)


StartServer = Callable[..., Awaitable[LiveServer]]


@pytest.fixture
async def start_server(tmp_path: Path) -> AsyncIterator[StartServer]:
    """Factory: ``await start_server(**settings)`` runs uvicorn in this event loop.

    Servers run in insecure-dev mode (no token needed) unless ``insecure_dev=False`` is
    given; tests of authentication add users and issue tokens through the LiveServer.
    Every server it started is shut down (lifespan and all) when the test ends.
    """
    running: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(
        *,
        room_store: RoomStore | None = None,
        content_store: ContentStore | None = None,
        extensions: Sequence[Extension] = (),
        **overrides: Any,
    ) -> LiveServer:
        values: dict[str, Any] = {
            "data_dir": tmp_path / f"data{len(running)}",
            "port": 0,
            "insecure_dev": True,
        }
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(
            settings, room_store=room_store, content_store=content_store, extensions=extensions
        )
        config = uvicorn_config(app, settings)
        config.loop = "none"
        server = uvicorn.Server(config)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        task = asyncio.create_task(server.serve(sockets=[sock]))
        running.append((server, task))
        async with httpx2.AsyncClient() as http:
            async with asyncio.timeout(20):
                while not server.started:
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.01)  # uvicorn offers no started event to wait on
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        return LiveServer(app, settings, port)

    yield start
    for server, _ in running:
        server.should_exit = True
    for _, task in running:
        await asyncio.wait_for(task, 20)
