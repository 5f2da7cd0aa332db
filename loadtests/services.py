"""Throwaway Redis and PostgreSQL servers for benchmarks and tests, from this machine's binaries.

* :class:`ThrowawayRedis`: a ``redis-server`` child process (``redis-server`` on PATH) on a
  free port of 127.0.0.1, its data in a directory of its own, no RDB snapshots, AOF on with
  ``appendfsync always`` as production runs it (the server refuses a Redis without it).
  ``start`` / ``kill`` (SIGKILL, like a crash) / ``restart`` (same port and directory: it
  reloads its AOF) / ``stop`` (kill, then remove the directory). Readiness is the "Ready to
  accept connections" line of its log (read from its stdout), not a sleep-and-poll.
* :class:`ThrowawayPostgres`: a PostgreSQL cluster made by ``initdb`` in a directory of its
  own (binaries: ``pg_ctl`` on PATH, else the newest ``/usr/lib/postgresql/*/bin``), started
  with ``pg_ctl -w`` on a free port of 127.0.0.1, trust authentication for the ``postgres``
  role. ``initdb`` refuses to run as root, so under root the cluster is made and run as an
  unprivileged OS user (``postgres``) through ``runuser``. ``fsync`` chooses between durable
  commits as in production (benchmarks) and ``fsync=off`` (tests: nothing outlives them).
  ``stop`` stops it at once and removes the directory.

Both take ``cpus``: the CPUs their processes may run on (``taskset``); None leaves them the
affinity of the calling process. A benchmark that pinned itself elsewhere passes
:func:`machine_cpus` so that the services float over every CPU.

What belongs to a test session only (reaping the servers of dead sessions, owner files, the
``COLLAB_TEST_*`` variables) is in ``tests/services/``, which builds on these classes.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

REDIS_START_TIMEOUT = 20.0
POSTGRES_START_TIMEOUT = 60.0
REDIS_READY_LINE = "Ready to accept connections"
REDIS_PID_FILE = "server.pid"
POSTGRES_OS_USER = "postgres"


class ServiceUnavailableError(RuntimeError):
    """The binaries (or the OS user) a throwaway server needs are missing; says which."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def machine_cpus() -> tuple[int, ...]:
    """Every online CPU of the machine (not only those this process may run on)."""
    try:
        text = Path("/sys/devices/system/cpu/online").read_text().strip()
    except OSError:
        return tuple(range(os.cpu_count() or 1))
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return tuple(cpus)


def _with_cpus(command: list[str], cpus: Collection[int] | None) -> list[str]:
    if cpus is None:
        return command
    return ["taskset", "-c", ",".join(str(cpu) for cpu in sorted(cpus)), *command]


# -- Redis -------------------------------------------------------------------------------------


def redis_binary() -> str | None:
    """``redis-server`` on PATH (or in /usr/bin), or None."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


class ThrowawayRedis:
    """A ``redis-server`` child process with its data in ``root``; restartable in place."""

    def __init__(
        self,
        binary: str,
        root: Path,
        *,
        aof: bool = True,
        cpus: Collection[int] | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.root = root
        self.aof = aof
        self.cpus = cpus
        self.extra = tuple(extra)
        self.port = 0
        self.bus_port = 0
        self._process: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None
        self._log: list[str] = []

    @classmethod
    def launch(
        cls,
        *,
        binary: str | None = None,
        prefix: str = "collab-redis-",
        aof: bool = True,
        cpus: Collection[int] | None = None,
        extra: Sequence[str] = (),
    ) -> Self:
        """Start a server in a new temporary directory named ``prefix...``; removed again if
        it does not start. Raises :class:`ServiceUnavailableError` without redis-server.
        ``extra``: more ``redis-server`` arguments (``--cluster-enabled yes``...)."""
        binary = binary or redis_binary()
        if binary is None:
            raise ServiceUnavailableError("redis-server is not on PATH")
        server = cls(binary, Path(tempfile.mkdtemp(prefix=prefix)), aof=aof, cpus=cpus, extra=extra)
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (taskset execs it: the same process)."""
        return None if self._process is None else self._process.pid

    def _command(self) -> list[str]:
        return _with_cpus(
            [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.root),
                "--save", "",
                "--appendonly", "yes" if self.aof else "no",
                "--appendfsync", "always",
                "--daemonize", "no",
                "--logfile", "",
                "--pidfile", str(self.root / REDIS_PID_FILE),
                *self._bus(),
                *self.extra,
            ],
            self.cpus,
        )  # fmt: skip

    def _bus(self) -> list[str]:
        """In cluster mode, a free port for the cluster bus too (by default it is the port
        plus 10000, which may be taken)."""
        if "--cluster-enabled" not in self.extra:
            return []
        if not self.bus_port:
            self.bus_port = free_port()
        return ["--cluster-port", str(self.bus_port)]

    def _launch(self) -> bool:
        """Start the server and wait for its ready line; False if it exited first."""
        process = subprocess.Popen(
            self._command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._process = process
        settled = threading.Event()  # ready, or exited
        accepted: list[bool] = []

        def drain() -> None:
            # Reads the log until the server exits, so its pipe never fills up.
            assert process.stdout is not None
            with process.stdout:
                for line in process.stdout:
                    self._log.append(line)
                    if REDIS_READY_LINE in line:
                        accepted.append(True)
                        settled.set()
            settled.set()

        self._drain = threading.Thread(target=drain, daemon=True)
        self._drain.start()
        if not settled.wait(REDIS_START_TIMEOUT):
            self.kill()
            raise RuntimeError(f"redis-server not ready in {REDIS_START_TIMEOUT}s:\n{self.log()}")
        if not accepted:
            process.wait(REDIS_START_TIMEOUT)  # it exited (a port taken): reap it
        return bool(accepted)

    def start(self) -> None:
        """Start on a free port (tried up to three times: a port may be taken meanwhile)."""
        for _ in range(3):
            self.port = free_port()
            self.bus_port = 0
            if self._launch():
                return
        raise RuntimeError(f"redis-server did not start:\n{self.log()}")

    def restart(self) -> None:
        """Start again on the same port and directory (it reloads its AOF)."""
        if not self._launch():
            raise RuntimeError(f"redis-server did not restart:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL, like a crash: only what was fsynced to the AOF survives."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(REDIS_START_TIMEOUT)
        if self._drain is not None:
            self._drain.join(REDIS_START_TIMEOUT)  # it closes the pipe at end of file
        self._process = None
        self._drain = None

    def stop(self) -> None:
        """Kill the server and remove its directory."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        """The last lines the server logged."""
        return "".join(self._log[-40:])


# -- PostgreSQL --------------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """The directory of ``pg_ctl`` on PATH, else of the newest /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def postgres_os_user(name: str = POSTGRES_OS_USER) -> str | None:
    """Who runs the PostgreSQL binaries: None (ourselves) unless we are root, else ``name``;
    raises :class:`ServiceUnavailableError` when that OS user does not exist."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ServiceUnavailableError(
            f"running as root, initdb needs an unprivileged OS user: {name!r} does not exist"
        ) from None
    return name


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL cluster in ``root`` (data in ``root/data``, its socket and log beside it),
    owned by the unprivileged ``os_user`` (None: the binaries run as ourselves)."""

    bin_dir: Path
    root: Path
    port: int
    os_user: str | None
    fsync: bool = False
    """True: durable commits (fsync, synchronous_commit, full_page_writes on, as production).
    False: all three off, for tests whose data outlives nothing."""
    cpus: Collection[int] | None = None

    @classmethod
    def launch(
        cls,
        *,
        os_user: str | None,
        bin_dir: Path | None = None,
        prefix: str = "collab-pg-",
        fsync: bool = False,
        cpus: Collection[int] | None = None,
    ) -> Self:
        """initdb and start a cluster in a new temporary directory named ``prefix...`` (under
        the system temporary directory: the OS user must reach it) on a free port; the
        directory is removed again if that fails. ``os_user`` runs the binaries (None: as
        ourselves; see :func:`postgres_os_user`). Raises :class:`ServiceUnavailableError`
        without binaries."""
        bin_dir = bin_dir or postgres_bin_dir()
        if bin_dir is None:
            raise ServiceUnavailableError(
                "no PostgreSQL binaries: pg_ctl is not on PATH nor in /usr/lib/postgresql/*/bin"
            )
        root = Path(tempfile.mkdtemp(prefix=prefix))
        server = cls(bin_dir, root, free_port(), os_user, fsync=fsync, cpus=cpus)
        try:
            server.start()
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return server

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:{port}/postgres`` (the maintenance database)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        """Run one of the binaries (as the OS user); RuntimeError with its output and the
        server log's tail if it fails."""
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.os_user is not None:
            command = ["runuser", "-u", self.os_user, "--", *command]
        command = _with_cpus(command, self.cpus)
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=POSTGRES_START_TIMEOUT, check=False
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{tail}"
            )

    def server_options(self) -> str:
        """The ``postgres`` options ``pg_ctl start -o`` passes."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
        if not self.fsync:
            options += "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        return options + "-c max_connections=200"

    def start(self) -> None:
        """initdb (as the OS user, who then owns ``root``) and start; returns once the server
        accepts connections."""
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        # --no-sync: initdb's own files need no fsync; the server's commits follow ``fsync``.
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        # -w: pg_ctl returns once the server accepts connections (no sleep-and-poll here).
        self._run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-w",
            "-t", str(int(POSTGRES_START_TIMEOUT)),
            "-l", str(self.root / "server.log"), "-o", self.server_options(),
        )  # fmt: skip

    def stop(self) -> None:
        """Stop at once (``-m immediate``) and remove the directory, even if stopping fails."""
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
