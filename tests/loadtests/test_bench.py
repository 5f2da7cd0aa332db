"""The benchmark's plumbing: the bare relay, the load clients' wire, a quick side-by-side run."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loadtests import bench, peers, services, wire
from loadtests.peers import CollabServicesServer, PeerUnavailableError, peer
from loadtests.relay import EMPTY_STEP2, serve_relay
from protocol.ysync import SyncStep1, SyncStep2, SyncUpdate, decode, encode, encode_update


@pytest.fixture
async def relay_url() -> AsyncIterator[str]:
    """A relay in this event loop on a free port; its base URL."""
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve_relay("127.0.0.1", 0, bound))
    port = await asyncio.wait_for(bound, 10)
    yield f"ws://127.0.0.1:{port}/ws"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class Inbox:
    """Messages a wire client received, with a way to wait for the next one."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[bytes | None] = asyncio.Queue()

    def __call__(self, data: bytes | None, when: float) -> None:
        self.messages.put_nowait(data)

    async def next(self) -> bytes | None:
        return await asyncio.wait_for(self.messages.get(), 5)


async def test_relay_answers_step1_with_an_empty_step2_and_relays_the_rest(
    relay_url: str,
) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    a = await wire.connect(f"{relay_url}/room", inbox_a, 5)
    b = await wire.connect(f"{relay_url}/room", inbox_b, 5)
    other = await wire.connect(f"{relay_url}/elsewhere", Inbox(), 5)
    try:
        await a.send(encode(SyncStep1(b"\x00")))
        reply = await inbox_a.next()
        assert reply == EMPTY_STEP2
        assert decode(reply) == SyncStep2(b"\x00\x00")

        update = encode_update(b"\x00\x00")
        await a.send(update)
        assert await inbox_b.next() == update, "relayed to the other client of the path"
        await b.send(encode(SyncUpdate(b"\x00\x01\x00")))
        assert await inbox_a.next() == encode(SyncUpdate(b"\x00\x01\x00"))
        assert inbox_a.messages.empty(), "a client never gets its own message back"
    finally:
        for client in (a, b, other):
            await client.close()
    assert a.close_code == 1000


async def test_wire_reports_a_refused_upgrade_with_its_status() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(wire.HandshakeError) as caught:
            await wire.connect(f"ws://127.0.0.1:{port}/ws/x", Inbox(), 5)
        assert caught.value.status == 403
    finally:
        server.close()
        await server.wait_closed()


def test_the_relay_is_stateless_and_collab_services_says_what_it_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert peer("relay").stateless
    assert peer("collab-services").label == "collab (Redis + PostgreSQL; content in SQLite)"
    peer("collab-services").prepare()  # redis-server and PostgreSQL are on this machine

    monkeypatch.setattr(services, "postgres_bin_dir", lambda: None)
    with pytest.raises(PeerUnavailableError, match=r"^unavailable: no PostgreSQL binaries"):
        peer("collab-services").prepare()
    monkeypatch.setattr(services, "redis_binary", lambda: None)
    with pytest.raises(PeerUnavailableError, match=r"^unavailable: redis-server is not on PATH"):
        peer("collab-services").prepare()


def test_collab_services_serves_in_service_mode_and_cleans_up() -> None:
    server = CollabServicesServer(cpu=None).start()
    try:
        assert server.redis is not None
        assert server.postgres is not None
        directories = [server.data_dir, server.redis.root, server.postgres.root]
        postmaster = (server.postgres.data_dir / "postmaster.pid").read_text().split()[0]
        pids = [server.pid, server.redis.pid, int(postmaster)]
        with urllib.request.urlopen(server.http_url + "/healthz", timeout=5) as response:
            health = json.load(response)
        assert health["status"] == "ok"
        # The change journal is the Redis stream: the node follows it (cluster counters).
        assert "cluster_updates_applied" in health
        assert server.ws_url.startswith("ws://127.0.0.1:")
    finally:
        server.stop()
    assert not any(directory.exists() for directory in directories)
    running = [pid for pid in pids if pid is not None and _running(pid)]
    assert not running, "collab serve, redis-server and postgres have all exited"


def _running(pid: int) -> bool:
    """Whether a process runs: a zombie has exited (the daemonised postmaster's parent is
    PID 1, which may reap it late)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_quick_bench_against_collab_and_the_relay_gives_a_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # collab-services is reported, not run, when its binaries are missing (and stays fast).
    monkeypatch.setattr(services, "redis_binary", lambda: None)
    out = tmp_path / "bench.json"
    argv = ["--quick", "--no-pin", "--quiet", "--servers", "collab,collab-services,relay"]
    argv += ["--scenarios", "rooms", "--duration", "1", "--out", str(out)]
    assert bench.main(argv) == 0

    table = capsys.readouterr().out
    assert "unavailable: redis-server is not on PATH" in table
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    relay_row = rows["| bare relay (websockets)"]
    ratio = relay_row.rstrip(" |").rsplit(" | ", 1)[1]
    assert float(ratio) > 0, "collab / relay on CPU per frame"
    document = json.loads(out.read_text())
    ran = {(m["server"], m["status"]) for m in document["measurements"]}
    assert ran == {("collab", "ok"), ("relay", "ok")}
    assert document["unavailable"]["collab-services"].startswith("unavailable")
    assert out.with_suffix(".md").read_text().startswith("Machine:")


def test_the_baseline_peer_says_how_to_name_the_checkout_it_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(peers.BASELINE_ENV, raising=False)
    with pytest.raises(peers.PeerUnavailableError, match="git worktree add"):
        peers.peer("collab-baseline").prepare()
    monkeypatch.setenv(peers.BASELINE_ENV, str(tmp_path))
    with pytest.raises(peers.PeerUnavailableError, match="not a checkout of collab"):
        peers.peer("collab-baseline").prepare()
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "__main__.py").write_text("")
    assert peers.baseline_source() == tmp_path.resolve()
