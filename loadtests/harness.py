"""Start and stop a ``collab serve`` process on a free loopback port (tests and benchmarks)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

_LISTENING = re.compile(r"collab listening on http://(?P<host>[^ ]+):(?P<port>\d+)")


BENCH_ENV = {
    "COLLAB_INSECURE_DEV": "true",
    "COLLAB_RATE_MESSAGES_PER_SECOND": "10000000",
    "COLLAB_RATE_CONNECTS_PER_MINUTE": "10000000",
    "COLLAB_MAX_SOCKETS_PER_USER": "10000000",
    "COLLAB_RATE_REQUESTS_PER_MINUTE": "10000000",
}


class ServerProcess:
    """A collab server in a child process, its log lines kept in memory.

    The server runs in insecure-dev mode with rate limits out of the way (a benchmark's
    thousands of clients are all the one development user) unless ``env`` says otherwise.
    ``start()`` returns once ``/healthz`` answers. Use as a context manager, or call
    ``stop()`` (SIGTERM, then SIGKILL after ``timeout``) / ``kill()`` (SIGKILL at once).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        port: int = 0,
        cpu: int | None = None,
        source: Path | None = None,
    ) -> None:
        """``source``: run the server of another checkout (its ``server`` package is found
        first, from its directory), as the benchmark's ``collab-baseline`` does."""
        self.data_dir = data_dir
        self.source = source
        self.extra_args = list(extra_args)
        self.env = {**BENCH_ENV, **(env or {})}
        self.requested_port = port
        self.cpu = cpu
        self.port = 0
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The base URL a WebsocketProvider takes: rooms are ``{ws_url}/{room}``."""
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> ServerProcess:
        command = [sys.executable, "-m", "server", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.requested_port), "--data-dir", str(self.data_dir)]
        command += self.extra_args
        if self.cpu is not None:
            command = ["taskset", "-c", str(self.cpu), *command]
        self._listening.clear()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **self.env},
            cwd=self.source,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        if not self._listening.wait(timeout):
            self.kill()
            raise RuntimeError("server did not start:\n" + "\n".join(self.lines[-30:]))
        self._wait_healthy(timeout)
        return self

    def _read_output(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match:
                self.port = int(match["port"])
                self._listening.set()

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.http_url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError("server never became healthy") from None
            # The socket is bound before the app's startup finishes; retry shortly.
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; SIGKILL if it has not exited after ``timeout``."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self._finish()

    def kill(self) -> int:
        """SIGKILL at once (crash tests)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        return self._finish()

    def _finish(self) -> int:
        assert self.process is not None
        if self._reader is not None:
            self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        code = self.process.returncode
        return code

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
