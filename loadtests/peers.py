"""The servers the benchmark compares: collab and its peers, each in its own process.

Every server is started pinned to one CPU (``taskset``) on a free loopback port and exposes
the same three things to the benchmark: ``ws_url`` (the base URL rooms are appended to),
``pid`` (for its CPU and RSS) and ``stop()``. The peers:

* ``collab``: ``collab serve`` on embedded defaults (:class:`~loadtests.harness.ServerProcess`).
* ``collab-services``: collab with real Redis and PostgreSQL (:class:`CollabServicesServer`):
  a throwaway ``redis-server`` (AOF, ``appendfsync always``) and a throwaway PostgreSQL
  (durable: ``fsync`` on) from this machine's binaries (:mod:`loadtests.services`), the
  relational schema migrated with ``collab migrate``, then ``collab serve`` with
  ``COLLAB_REDIS_URL`` and ``COLLAB_POSTGRES_URL``: sessions, rate limits, presence, locks and
  the change journal (the Redis stream) in Redis, users, rights and audit in PostgreSQL. The
  content store (with the CRDT states) stays embedded SQLite: MongoDB cannot run here. Only
  ``collab serve`` is pinned; Redis and PostgreSQL float over every CPU, and the benchmark's
  CPU and RSS figures are those of the ``collab serve`` process alone.
* ``pycrdt-websocket``: the Python peer from PyPI, in its own virtualenv under
  ``loadtests/results/peers/`` (created on first use, pinned versions), served by a small
  script written here: ``pycrdt.websocket.WebsocketServer`` behind ``websockets.serve``, one
  room per path, on uvloop.
* ``node``: the reference ``@y/websocket-server`` (``tests/interop/node_modules``, pinned by
  ``tests/interop/package.json``; ``npm ci`` there installs it).
* ``relay``: :mod:`loadtests.relay`, a bare ``websockets`` broadcast relay on uvloop.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from loadtests import services
from loadtests.harness import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(__file__).resolve().parent / "results" / "peers"
INTEROP_DIR = ROOT / "tests" / "interop"

PYCRDT_WEBSOCKET_PINS = (
    "pycrdt-websocket==0.16.5",
    "pycrdt==0.14.13",
    "pycrdt-store==0.1.5",
    "anyio==4.16.0",
    "websockets==17.4",
    "uvloop==0.23.0",
)
NODE_PACKAGE = "@y/websocket-server"
# No ".py": the script is not part of this repository's code (type checkers walk loadtests/).
SCRIPT_NAME = "pycrdt_server.script"
_START_TIMEOUT = 30.0
_INSTALL_TIMEOUT = 300.0
_MIGRATE_TIMEOUT = 120.0

PYCRDT_SERVER_SCRIPT = '''\
"""pycrdt-websocket behind websockets.serve, one room per path (written by loadtests.peers)."""
import logging
import sys

import anyio
from pycrdt.websocket import WebsocketServer
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed


class Channel:
    """The pycrdt Channel protocol over a websockets server connection."""

    def __init__(self, ws):
        self._ws = ws
        self._path = ws.request.path

    @property
    def path(self):
        return self._path

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration() from None

    async def send(self, message):
        try:
            await self._ws.send(message)
        except ConnectionClosed:
            pass

    async def recv(self):
        return bytes(await self._ws.recv())


async def main(port):
    async with WebsocketServer(log=logging.getLogger("pycrdt")) as server:

        async def handler(ws):
            await server.serve(Channel(ws))

        async with serve(
            handler, "127.0.0.1", port, compression=None, max_size=None, ping_interval=None
        ):
            print(f"pycrdt-websocket listening on 127.0.0.1:{port}", flush=True)
            await anyio.sleep_forever()


logging.basicConfig(level=logging.WARNING)
anyio.run(main, int(sys.argv[1]), backend_options={"use_uvloop": True})
'''


class PeerUnavailableError(RuntimeError):
    """This server cannot run here; the message says why (reported, not fatal)."""


class Server(Protocol):
    @property
    def ws_url(self) -> str: ...

    @property
    def pid(self) -> int: ...

    def stop(self, timeout: float = 15.0) -> int: ...


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    return services.free_port()


class CommandServer:
    """A server command on a free port, pinned with taskset; ready once it accepts TCP."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int | None,
        path: str = "/ws",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [part.replace("{port}", str(self.port)) for part in argv]
        if cpu is not None:
            self.argv = ["taskset", "-c", str(cpu), *self.argv]
        self.path = path
        self.env = {
            key: value.replace("{port}", str(self.port)) for key, value in (env or {}).items()
        }
        self.cwd = cwd
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> CommandServer:
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.cwd,
            env={**os.environ, **self.env},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n" + "\n".join(self.lines[-20:]))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)  # a child process offers nothing better to wait on
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on port {self.port}")

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self, timeout: float = 15.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._reader is not None:
            self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> CommandServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class CollabServer:
    """``collab serve`` on embedded defaults in a temporary data directory (of ``source``, a
    checkout of another commit, when given)."""

    def __init__(self, cpu: int | None, source: Path | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="collab-bench-")
        self._server = ServerProcess(Path(self._dir.name), cpu=cpu, source=source)

    @property
    def ws_url(self) -> str:
        return self._server.ws_url

    @property
    def pid(self) -> int:
        return self._server.pid

    def start(self) -> CollabServer:
        try:
            self._server.start()
        except BaseException:
            self._dir.cleanup()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> int:
        try:
            return self._server.stop(timeout)
        finally:
            self._dir.cleanup()


class CollabServicesServer:
    """``collab serve`` in service mode against a throwaway Redis and PostgreSQL of its own.

    ``start()`` starts Redis (AOF, ``appendfsync always``) and PostgreSQL (``fsync`` on),
    both floating over every CPU, migrates the relational schema (``python -m server
    migrate``), then starts the server through :class:`~loadtests.harness.ServerProcess`
    pinned to ``cpu``. ``stop()`` stops the three and removes their directories; so does a
    ``start()`` that fails.
    """

    REDIS_PREFIX = "collab-bench-redis-"
    POSTGRES_PREFIX = "collab-bench-pg-"

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu
        self._dir = tempfile.TemporaryDirectory(prefix="collab-bench-services-")
        self.data_dir = Path(self._dir.name)
        self.redis: services.ThrowawayRedis | None = None
        self.postgres: services.ThrowawayPostgres | None = None
        self._server: ServerProcess | None = None

    @property
    def ws_url(self) -> str:
        assert self._server is not None
        return self._server.ws_url

    @property
    def http_url(self) -> str:
        assert self._server is not None
        return self._server.http_url

    @property
    def pid(self) -> int:
        assert self._server is not None
        return self._server.pid

    def start(self) -> CollabServicesServer:
        try:
            floating = services.machine_cpus()
            self.redis = services.ThrowawayRedis.launch(prefix=self.REDIS_PREFIX, cpus=floating)
            self.postgres = services.ThrowawayPostgres.launch(
                os_user=services.postgres_os_user(),
                prefix=self.POSTGRES_PREFIX,
                fsync=True,
                cpus=floating,
            )
            env = {
                "COLLAB_REDIS_URL": self.redis.url,
                "COLLAB_POSTGRES_URL": self.postgres.url,
            }
            self._migrate(env["COLLAB_POSTGRES_URL"])
            self._server = ServerProcess(self.data_dir, env=env, cpu=self.cpu)
            self._server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _migrate(self, postgres_url: str) -> None:
        """``python -m server migrate`` on the PostgreSQL URL and the data directory."""
        command = [sys.executable, "-m", "server", "migrate", "--data-dir", str(self.data_dir)]
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_MIGRATE_TIMEOUT,
            env={**os.environ, "COLLAB_POSTGRES_URL": postgres_url},
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"collab migrate failed ({result.returncode}):\n{result.stdout}{result.stderr}"
            )

    def stop(self, timeout: float = 15.0) -> int:
        """Stop the server, then PostgreSQL and Redis; remove every directory. The server's
        exit status (0 if it never started)."""
        server, self._server = self._server, None
        postgres, self.postgres = self.postgres, None
        redis, self.redis = self.redis, None
        try:
            return 0 if server is None else server.stop(timeout)
        finally:
            try:
                if postgres is not None:
                    postgres.stop()
            finally:
                try:
                    if redis is not None:
                        redis.stop()
                finally:
                    self._dir.cleanup()


BASELINE_ENV = "COLLAB_BENCH_BASELINE"


def baseline_source() -> Path:
    """The checkout ``collab-baseline`` runs: ``$COLLAB_BENCH_BASELINE``, a directory holding
    another commit of this repository (``git worktree add ../baseline <commit>``), run with
    this checkout's virtualenv; PeerUnavailableError when it is not set or not a checkout."""
    value = os.environ.get(BASELINE_ENV, "")
    if not value:
        raise PeerUnavailableError(
            f"set {BASELINE_ENV} to a checkout of the commit to compare with "
            "(git worktree add ../baseline <commit>)"
        )
    source = Path(value).resolve()
    if not (source / "server" / "__main__.py").is_file():
        raise PeerUnavailableError(f"{BASELINE_ENV}={value} is not a checkout of collab")
    return source


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """How to start one kind of server; ``stateless`` servers keep no document."""

    name: str
    label: str
    stateless: bool = False

    def prepare(self) -> None:
        """Install what the server needs (once); raise PeerUnavailableError if impossible."""
        if self.name == "collab-services":
            check_services()
        elif self.name == "collab-baseline":
            baseline_source()
        elif self.name == "pycrdt-websocket":
            pycrdt_websocket_python()
        elif self.name == "node":
            node_server_command()

    def server(self, cpu: int | None) -> CollabServer | CollabServicesServer | CommandServer:
        if self.name == "collab":
            return CollabServer(cpu)
        if self.name == "collab-baseline":
            return CollabServer(cpu, baseline_source())
        if self.name == "collab-services":
            return CollabServicesServer(cpu)
        if self.name == "pycrdt-websocket":
            python = pycrdt_websocket_python()
            script = python.parent.parent / SCRIPT_NAME
            return CommandServer(self.name, [str(python), str(script), "{port}"], cpu=cpu)
        if self.name == "node":
            return CommandServer(
                self.name,
                node_server_command(),
                cpu=cpu,
                env={"HOST": "127.0.0.1", "PORT": "{port}"},
                cwd=INTEROP_DIR,
            )
        if self.name == "relay":
            argv = [sys.executable, "-m", "loadtests.relay", "--port", "{port}"]
            return CommandServer(self.name, argv, cpu=cpu, cwd=ROOT)
        raise PeerUnavailableError(f"unknown server {self.name!r}")


PEERS = (
    PeerSpec("collab", "collab (embedded defaults)"),
    PeerSpec("collab-services", "collab (Redis + PostgreSQL; content in SQLite)"),
    PeerSpec("collab-baseline", "collab at another commit (embedded defaults)"),
    PeerSpec("pycrdt-websocket", "pycrdt-websocket 0.16.5"),
    PeerSpec("node", f"{NODE_PACKAGE} (Node)"),
    PeerSpec("relay", "bare relay (websockets)", stateless=True),
)
PEER_NAMES = tuple(spec.name for spec in PEERS)


def peer(name: str) -> PeerSpec:
    for spec in PEERS:
        if spec.name == name:
            return spec
    raise KeyError(name)


def check_services() -> None:
    """What ``collab-services`` needs: redis-server, the PostgreSQL binaries, taskset, and
    under root the ``postgres`` OS user; PeerUnavailableError naming what is missing."""
    if services.redis_binary() is None:
        raise PeerUnavailableError("unavailable: redis-server is not on PATH")
    bin_dir = services.postgres_bin_dir()
    if bin_dir is None:
        raise PeerUnavailableError(
            "unavailable: no PostgreSQL binaries (pg_ctl not on PATH nor in "
            "/usr/lib/postgresql/*/bin)"
        )
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (bin_dir / name).exists()]
    if missing:
        raise PeerUnavailableError(f"unavailable: {', '.join(missing)} missing in {bin_dir}")
    if shutil.which("taskset") is None:
        raise PeerUnavailableError("unavailable: taskset is not on PATH")
    try:
        user = services.postgres_os_user()
    except services.ServiceUnavailableError as exc:
        raise PeerUnavailableError(f"unavailable: {exc}") from exc
    if user is not None and shutil.which("runuser") is None:
        raise PeerUnavailableError("unavailable: running as root needs runuser, not on PATH")


def pycrdt_websocket_python() -> Path:
    """The peer environment's python, created under loadtests/results/peers/ on first use."""
    env_dir = PEERS_DIR / "pycrdt-websocket-0.16.5"
    python = env_dir / "bin" / "python"
    marker = env_dir / "installed.json"
    if not marker.exists() or json.loads(marker.read_text()) != list(PYCRDT_WEBSOCKET_PINS):
        base = getattr(sys, "_base_executable", sys.executable)
        try:
            subprocess.run([base, "-m", "venv", str(env_dir)], check=True, timeout=120)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", *PYCRDT_WEBSOCKET_PINS],
                check=True,
                timeout=_INSTALL_TIMEOUT,
                capture_output=True,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            raise PeerUnavailableError(
                f"unavailable: cannot install pycrdt-websocket: {exc}"
            ) from exc
        marker.write_text(json.dumps(list(PYCRDT_WEBSOCKET_PINS)))
    (env_dir / SCRIPT_NAME).write_text(PYCRDT_SERVER_SCRIPT)
    return python


def node_server_command() -> list[str]:
    """``node <bin of @y/websocket-server>``; runs ``npm ci`` in tests/interop if needed."""
    node = shutil.which("node")
    if node is None:
        raise PeerUnavailableError("unavailable: node is not on PATH")
    package_dir = INTEROP_DIR / "node_modules" / "@y" / "websocket-server"
    if not (package_dir / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise PeerUnavailableError("unavailable: npm is not on PATH")
        try:
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"],
                cwd=INTEROP_DIR,
                check=True,
                timeout=_INSTALL_TIMEOUT,
                capture_output=True,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            raise PeerUnavailableError(f"unavailable: npm ci failed: {exc}") from exc
    package = json.loads((package_dir / "package.json").read_text())
    return [node, str(package_dir / package["bin"]["y-websocket-server"])]
