"""nginx from Debian's package, running the repository's ``deploy/nginx.conf`` rendered for a
test's ports (the docker-compose topology, without Docker).

:func:`nginx_binary` finds ``nginx`` (PATH, then ``/usr/sbin/nginx``); when it is missing and
the tests run as root it installs Debian's ``nginx`` package with apt-get (``apt-get update``
first if the package is unknown). :func:`render` turns the deployment file into one that
runs unprivileged in a temporary directory: the upstream replicas and the listening port
become the test's, and the pid file, logs and temporary files go into that directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONF = ROOT / "deploy" / "nginx.conf"
DEBIAN_NGINX = "/usr/sbin/nginx"
UPSTREAMS = ("collab-1:8765", "collab-2:8765")
LISTEN = "listen 8080;"


def nginx_binary() -> str:
    """The nginx executable; installed with apt-get when missing and root, else a skip."""
    found = shutil.which("nginx") or (DEBIAN_NGINX if os.path.exists(DEBIAN_NGINX) else None)
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("nginx is not installed and installing it needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "nginx"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        subprocess.run(install, env=env, capture_output=True, check=True)
    return shutil.which("nginx") or DEBIAN_NGINX


def render(conf: str, upstreams: list[int], port: int, root: Path) -> str:
    """The deployment file for replicas on ``upstreams`` (127.0.0.1 ports) and a proxy on
    127.0.0.1:``port``, its run-time files under ``root``. Fails if the file no longer has
    what is replaced (the test must run the real file, not a copy of it)."""
    for name in (*UPSTREAMS, LISTEN, "http {"):
        assert name in conf, f"deploy/nginx.conf no longer has {name!r}"
    for name, replica in zip(UPSTREAMS, upstreams, strict=True):
        conf = conf.replace(name, f"127.0.0.1:{replica}")
    conf = conf.replace(LISTEN, f"listen 127.0.0.1:{port};")
    temp = "\n".join(
        f"  {kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    extra = f"  access_log {root / 'access.log'};\n{temp}\n  uwsgi_temp_path {root / 'uwsgi'};\n"
    extra += f"  scgi_temp_path {root / 'scgi'};\n"
    conf = conf.replace("http {", "http {\n" + extra, 1)
    head = f"pid {root / 'nginx.pid'};\nerror_log {root / 'error.log'} info;\n"
    return head + conf


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Nginx:
    """nginx in the foreground on a rendered copy of ``deploy/nginx.conf``."""

    def __init__(self, root: Path, upstreams: list[int]) -> None:
        self.root = root
        self.port = free_port()
        self.conf = root / "nginx.conf"
        root.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(render(DEPLOY_CONF.read_text(), upstreams, self.port, root))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 10.0) -> Nginx:
        binary = nginx_binary()
        checked = subprocess.run(
            [binary, "-t", "-c", str(self.conf), "-p", str(self.root)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
        self.process = subprocess.Popen(
            [binary, "-c", str(self.conf), "-p", str(self.root), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:  # nginx says nothing when it listens: try to connect
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.root / "error.log").read_text()) from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
