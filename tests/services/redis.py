"""Throwaway Redis servers for the contract suites (a pytest plugin: ``pytest_plugins``).

``redis_url`` gives the URL of the Redis the session's tests share:

* ``COLLAB_TEST_REDIS_URL`` when it is set. Tests then never flush anything: each test
  works under a key prefix of its own (``collab-test-<run>-<n>:``) and the session deletes
  exactly the keys under ``collab-test-<run>-`` when it ends.
* otherwise a ``redis-server`` of its own (``redis-server`` on PATH, or
  ``COLLAB_TEST_REDIS_SERVER``) on a free port of 127.0.0.1, in a temporary directory, with
  no RDB snapshots and AOF on with ``appendfsync always`` (as production runs it), killed
  and removed when the session ends. Never the Redis on the default port.

``redis_servers`` starts dedicated servers for one test (killed when it ends): the tests
that restart Redis or need AOF off use them. Readiness is the "Ready to accept connections"
line of the server's log (read from its stdout), not a sleep-and-poll. A session killed
with -9 leaves its servers behind: the next session kills them (only ``redis-server``
processes running in a ``collab-redis-*`` directory of a dead owner) and removes the
directories. The server itself is :class:`loadtests.services.ThrowawayRedis`; this plugin
adds the owner file, the reaping and the ``COLLAB_TEST_*`` variables.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from loadtests import services
from loadtests.redis_cluster import CLUSTER_ARGS, ThrowawayRedisCluster

REDIS_URL_ENV = "COLLAB_TEST_REDIS_URL"
RUN_ID = uuid.uuid4().hex[:8]
RUN_PREFIX = f"collab-test-{RUN_ID}-"
ROOT_PREFIX = "collab-redis-"
OWNER_FILE = "owner.pid"
SERVER_PID_FILE = services.REDIS_PID_FILE
START_TIMEOUT = services.REDIS_START_TIMEOUT
READY_LINE = services.REDIS_READY_LINE

_prefix_count = 0


def next_prefix() -> str:
    """A key prefix no other test of any run uses."""
    global _prefix_count
    _prefix_count += 1
    return f"{RUN_PREFIX}{_prefix_count}:"


def redis_binary() -> str | None:
    configured = os.environ.get("COLLAB_TEST_REDIS_SERVER")
    if configured:
        return configured
    return services.redis_binary()


class ThrowawayRedis(services.ThrowawayRedis):
    """:class:`loadtests.services.ThrowawayRedis` that records which process started it
    (``owner.pid``): a later session reaps it if that process dies without stopping it."""

    def start(self) -> None:
        (self.root / OWNER_FILE).write_text(str(os.getpid()))
        super().start()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap_stale_servers() -> None:
    """Kill the servers of dead test sessions (checked by name and directory) and remove their
    directories; servers of sessions still running are left alone."""
    for root in Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _process_alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError):
            pid = int((root / SERVER_PID_FILE).read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            # Redis rewrites its process title ("redis-server 127.0.0.1:port [cluster]"), so
            # the directory is checked as its working directory (it runs in --dir).
            home = os.readlink(f"/proc/{pid}/cwd")
            if any(b"redis-server" in part for part in cmdline) and home == str(root):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def start_throwaway(*, aof: bool = True) -> ThrowawayRedis:
    binary = redis_binary()
    if binary is None:
        pytest.fail(
            "no redis-server found: install Redis, set COLLAB_TEST_REDIS_SERVER, or set "
            f"{REDIS_URL_ENV} (the restart and AOF-off tests still need redis-server)"
        )
    return ThrowawayRedis.launch(binary=binary, prefix=ROOT_PREFIX, aof=aof)


def _delete_run_keys(url: str) -> None:
    """Delete exactly the keys this run wrote on a shared server (by prefix)."""
    client = redis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{RUN_PREFIX}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of the Redis this session's tests share (see the module docstring)."""
    configured = os.environ.get(REDIS_URL_ENV)
    if configured:
        try:
            yield configured
        finally:
            _delete_run_keys(configured)
        return
    _reap_stale_servers()
    server = start_throwaway(aof=True)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_key_prefix() -> str:
    """A key prefix of this test's own (``collab-test-<run>-<n>:``)."""
    return next_prefix()


StartRedis = Callable[..., ThrowawayRedis]


def start_cluster() -> ThrowawayRedisCluster:
    """Three masters with a replica each, in cluster mode, AOF ``always`` (reaped like the
    other throwaway servers)."""
    binary = redis_binary()
    if binary is None:
        pytest.fail("no redis-server found: the Redis Cluster tests need redis-server")

    def make() -> ThrowawayRedis:
        return ThrowawayRedis.launch(binary=binary, prefix=ROOT_PREFIX, extra=CLUSTER_ARGS)

    return ThrowawayRedisCluster(make=make).start()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A URL naming one node of the session's throwaway Redis Cluster (three masters, three
    replicas); tests share it under key prefixes of their own, none kills its nodes."""
    _reap_stale_servers()
    cluster = start_cluster()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def redis_clusters() -> Iterator[Callable[[], ThrowawayRedisCluster]]:
    """Factory: a dedicated cluster for a test that kills its nodes."""
    started: list[ThrowawayRedisCluster] = []

    def start() -> ThrowawayRedisCluster:
        cluster = start_cluster()
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
def redis_servers() -> Iterator[StartRedis]:
    """Factory: ``redis_servers(aof=...)`` starts a dedicated server for this test."""
    started: list[ThrowawayRedis] = []

    def start(*, aof: bool = True) -> ThrowawayRedis:
        server = start_throwaway(aof=aof)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
