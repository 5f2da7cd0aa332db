"""SIGTERM: an orderly drain that ends with exit code 0 within a bound, with open sockets and
loaded rooms, embedded and in service mode."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest

from loadtests.client import YClient
from loadtests.harness import ServerProcess
from tests.services.redis import StartRedis

# Far above what an orderly shutdown takes (well under a second here), far below a hang.
EXIT_BOUND = 30.0


async def _terminate(server: ServerProcess) -> tuple[int, float]:
    """SIGTERM the server; its exit code and how long it took (fails past EXIT_BOUND)."""
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(server.process.wait, EXIT_BOUND)
    except subprocess.TimeoutExpired:
        server.kill()
        pytest.fail(f"no exit within {EXIT_BOUND} s of SIGTERM:\n" + "\n".join(server.lines))
    server.stop()  # joins the log reader
    return code, time.monotonic() - started


async def _stop_with_open_sockets(server: ServerProcess) -> tuple[int, float]:
    clients = [YClient(server.ws_url, f"plan/s{n % 3}") for n in range(6)]
    for client in clients:
        await client.connect()
        await asyncio.wait_for(client.synced.wait(), 10)
    await clients[0].insert(0, "typed just before the stop")
    await clients[3].wait_for(lambda: str(clients[3].text).startswith("typed"))
    try:
        return await _terminate(server)
    finally:
        for client in clients:
            await client.close()


def _assert_clean(server: ServerProcess, code: int) -> None:
    log = "\n".join(server.lines)
    assert code == 0, log
    assert "compaction at shutdown failed" not in log
    assert "Traceback" not in log


async def test_sigterm_exits_0_with_open_sockets(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    code, _ = await _stop_with_open_sockets(server)
    _assert_clean(server, code)


async def test_sigterm_right_after_a_room_loaded_exits_0(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    async with YClient(server.ws_url, "plan/intro") as client:
        await client.insert(0, "stored")
    server.stop()
    restarted = ServerProcess(tmp_path / "data").start()
    async with YClient(restarted.ws_url, "plan/intro") as client:
        assert str(client.text) == "stored"
        code, _ = await _terminate(restarted)
    _assert_clean(restarted, code)


async def test_sigterm_in_service_mode_exits_0(tmp_path: Path, redis_servers: StartRedis) -> None:
    redis = redis_servers(aof=True)
    env = {"COLLAB_REDIS_URL": redis.url}
    first = ServerProcess(tmp_path / "data", env=env).start()
    code, _ = await _stop_with_open_sockets(first)
    _assert_clean(first, code)
    # Stopped right after loading the rooms back: no spurious compaction failure.
    second = ServerProcess(tmp_path / "data", env=env).start()
    async with YClient(second.ws_url, "plan/s0") as client:
        assert str(client.text).startswith("typed")
        code, _ = await _terminate(second)
    _assert_clean(second, code)


async def test_sigterm_with_redis_down_exits_within_the_bound(
    tmp_path: Path, redis_servers: StartRedis
) -> None:
    """Every step that needs Redis fails or times out; the stop is still bounded, and
    orderly (exit 0): the edits made meanwhile wait in the spool for the next start."""
    redis = redis_servers(aof=True)
    env = {"COLLAB_REDIS_URL": redis.url}
    server = ServerProcess(tmp_path / "data", env=env).start()
    async with YClient(server.ws_url, "plan/s0") as client:
        await client.insert(0, "before ")
        redis.kill()
        await client.insert(len(client.text), "during the outage")
        code, took = await _terminate(server)
    log = "\n".join(server.lines)
    assert code == 0, log
    assert took < EXIT_BOUND
    redis.restart()
    restarted = ServerProcess(tmp_path / "data", env=env).start()
    try:
        async with YClient(restarted.ws_url, "plan/s0") as client:
            await client.wait_for(lambda: str(client.text) == "before during the outage", 20)
    finally:
        restarted.stop()
