"""A generator process: runs its share of the scripted clients on one uvloop event loop.

The coordinator starts one per ``--workers`` with :func:`worker_main` and drives it through the
phases described in :mod:`loadtests.plan`. A worker never decides when a phase ends: it waits
for the next command, so every process connects, types and drains on the same schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import resource
import signal
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.connection import Connection
from typing import TypeVar

import uvloop
import websockets

from loadtests import wire
from loadtests.agents import Agent, Recorder, canonical_awareness, sleep_until, text_digest
from loadtests.client import YClient
from loadtests.plan import (
    Close,
    Command,
    Connect,
    Connected,
    Drain,
    Drained,
    Failed,
    Go,
    Ready,
    RoomText,
    Stopped,
    WorkerPlan,
)
from loadtests.writers import Writer, make_agent

CommandT = TypeVar("CommandT", Connect, Go, Drain, Close)
MAX_BACKOFF = 5.0  # seconds: the longest wait between two tries of a lost connection


class AbortedError(Exception):
    """The coordinator went away or closed the run before this phase."""


def worker_main(plan: WorkerPlan, conn: Connection) -> None:
    """Process entry point. Reports a crash as :class:`Failed` instead of dying silently."""
    # The coordinator owns Ctrl-C: it closes the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _reserve_descriptors(len(plan.clients))
    try:
        uvloop.run(Worker(plan, conn).run())
    except AbortedError:
        pass
    except Exception:  # noqa: BLE001 - the process boundary: the coordinator reports it
        with contextlib.suppress(OSError):
            conn.send(Failed(plan.worker, traceback.format_exc()))
    finally:
        conn.close()


def _reserve_descriptors(clients: int) -> None:
    """Grow this process's descriptor table once, now, to hold a socket per client: grown by
    doubling while the clients connect, each growth would pause the generator for an RCU
    grace period (8 to 16 ms here once the process has a thread), and the connects timed
    across it would be charged to the server (the server does the same:
    server/ops/process.py)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    highest = clients + 63
    if soft != resource.RLIM_INFINITY:
        highest = min(highest, soft - 1)
    try:
        os.fstat(highest)
    except OSError:
        pass  # not open: ours for a moment
    else:
        return  # open already: the table is that large
    source = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if source < highest:
            os.dup2(source, highest, inheritable=False)
            os.close(highest)
    finally:
        os.close(source)


@contextlib.contextmanager
def _collector_off() -> Iterator[None]:
    """No cyclic garbage collection during a run: a full collection over thousands of
    clients' objects pauses the generator for up to 100 ms, and the connects and deliveries
    timed across it would be charged to the server. Reference counting still frees what the
    run drops; what is cyclic waits for the end of the run, a bounded amount."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


class Worker:
    def __init__(self, plan: WorkerPlan, conn: Connection) -> None:
        self.plan = plan
        self.scenario = plan.scenario
        self.conn = conn
        self.presence = plan.scenario.kind == "presence"
        self.recorder = Recorder(plan.worker, track_awareness=self.presence)
        self.random = random.Random(plan.seed)
        urls = plan.base_url.split(",")
        self.agents: list[Agent] = [
            make_agent(
                client,
                urls[client.index % len(urls)],
                plan.query_of(client.index),
                self.recorder,
                writers_apply=plan.scenario.writers_apply,
            )
            for client in plan.clients
        ]
        self.dropped = 0
        self.returned = 0
        self.shed = 0  # upgrades the server refused with 503 + Retry-After, then retried
        self.reset = 0  # connections reset or refused, then retried after a backoff
        self.resync_seconds: list[float] = []
        self.writers = [agent for agent in self.agents if isinstance(agent, Writer)]
        self._commands: asyncio.Queue[Command] = asyncio.Queue()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._on_command)
        # uvloop makes a watched fd non-blocking, and a pipe shares that flag between its two
        # directions: a batch larger than the socket buffer would then be cut short by
        # BlockingIOError in the middle of a pickle, desynchronising the stream. The loop only
        # polls this fd, so it may stay blocking.
        os.set_blocking(self.conn.fileno(), True)
        try:
            self.conn.send(Ready(self.plan.worker))
            connect = await self._next(Connect)
            flusher = asyncio.create_task(self._flush_every(self.plan.batch_interval))
            try:
                with _collector_off():
                    await self._connect_all(connect.t0)
                    await self._run_phases()
            finally:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
        finally:
            loop.remove_reader(self.conn.fileno())
            await asyncio.gather(*(agent.close() for agent in self.agents))

    async def _run_phases(self) -> None:
        go = await self._next(Go)
        stopped = await self._edit(go)
        self._flush()
        self.conn.send(stopped)
        drain = await self._next(Drain)
        drained = await self._drain(drain)
        self._flush()
        self.conn.send(drained)
        await self._next(Close)

    # -- commands -------------------------------------------------------------------------

    def _on_command(self) -> None:
        try:
            while self.conn.poll():
                self._commands.put_nowait(self.conn.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self._commands.put_nowait(Close())

    async def _next(self, kind: type[CommandT]) -> CommandT:
        command = await self._commands.get()
        if not isinstance(command, kind):
            raise AbortedError(f"expected {kind.__name__}, got {type(command).__name__}")
        return command

    def _flush(self) -> None:
        self.conn.send(self.recorder.take())

    async def _flush_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._flush()

    # -- phases ---------------------------------------------------------------------------

    async def _connect_all(self, t0: float) -> None:
        timeout = self.scenario.connect_timeout
        results = await asyncio.gather(
            *(self._connect(agent, t0 + agent.plan.connect_at, timeout) for agent in self.agents)
        )
        by_room: dict[int, int] = {}
        for agent in self.agents:
            if agent.connected:
                by_room[agent.plan.room] = by_room.get(agent.plan.room, 0) + 1
        seconds = [result for result in results if result is not None]
        connected = [agent for agent in self.agents if agent.connected]
        self._flush()
        self.conn.send(
            Connected(
                self.plan.worker,
                by_room,
                seconds,
                [agent.handshake_seconds for agent in connected],
                [agent.sync_seconds for agent in connected],
            )
        )

    async def _connect(self, agent: Agent, at: float, timeout: float) -> float | None:
        await sleep_until(at)
        seconds = await self._shed_aware(agent.connect, timeout, "connect")
        if seconds is None:
            await agent.close()
        return seconds

    async def _shed_aware(
        self, connect: Callable[[float], Awaitable[float]], timeout: float, what: str
    ) -> float | None:
        """``connect`` within ``timeout`` seconds; the seconds it took, retries included
        (None: it failed, recorded as ``{what}_...``). A shed upgrade (HTTP 503 with
        Retry-After) is retried after the server's Retry-After times a random factor in
        [0.5, 1.5], as docs/protocol.md asks clients to do; a connection reset or refused
        (a listen queue overflowing) after an exponential backoff with full jitter; a retry
        whose wait would end past the deadline is a failure."""
        started = time.monotonic()
        deadline = started + timeout
        failures = 0
        while True:
            try:
                await connect(max(0.1, deadline - time.monotonic()))
                return time.monotonic() - started
            except TimeoutError:
                self.recorder.error(f"{what}_timeout")
            except wire.HandshakeError as exc:
                if exc.status == 503 and exc.retry_after is not None:
                    self.shed += 1
                    wait = exc.retry_after * self.random.uniform(0.5, 1.5)
                    if time.monotonic() + wait < deadline:
                        await asyncio.sleep(wait)
                        continue
                    self.recorder.error(f"{what}_shed_past_deadline")
                else:
                    self.recorder.error(f"{what}_http_{exc.status}")
            except (OSError, wire.WireError) as exc:
                # A lost or reset connection: exponential backoff with full jitter.
                failures += 1
                wait = self.random.uniform(0, min(MAX_BACKOFF, 0.5 * 2**failures))
                if isinstance(exc, OSError) and time.monotonic() + wait < deadline:
                    self.reset += 1
                    await asyncio.sleep(wait)
                    continue
                self.recorder.error(f"{what}_{type(exc).__name__}")
            return None

    async def _edit(self, go: Go) -> Stopped:
        self.recorder.window = (go.t_start, go.t_end)
        scenario = self.scenario
        for writer in self.writers:
            writer.place_cursor(self.random.random())
        await sleep_until(go.t_start)
        cpu_started = time.process_time()
        if not scenario.idle:
            async with asyncio.TaskGroup() as tasks:
                for writer in self.writers:
                    tasks.create_task(
                        writer.type_until(
                            go.t_start,
                            go.t_end,
                            scenario.edits_per_second,
                            scenario.cursor,
                            presence=self.presence,
                        )
                    )
                if scenario.kind == "reconnect":
                    tasks.create_task(self._storm(go.t_start + scenario.reconnect_at))
        await sleep_until(go.t_end)
        cpu_seconds = time.process_time() - cpu_started
        last_clocks: dict[int, dict[int, int]] = {}
        lags: list[float] = []
        for writer in self.writers:
            lags.extend(writer.schedule_lag)
            if writer.last_clock is not None:
                room = last_clocks.setdefault(writer.plan.room, {})
                room[writer.client_id] = writer.last_clock
        reconnect = {}
        if scenario.kind == "reconnect":
            reconnect = {
                "dropped": self.dropped,
                "returned": self.returned,
                "shed": self.shed,
                "reset": self.reset,
                "resync_seconds": self.resync_seconds,
            }
        return Stopped(
            self.plan.worker,
            last_clocks,
            cpu_seconds,
            self.recorder.frames_in_window,
            lags,
            reconnect,
        )

    async def _storm(self, at: float) -> None:
        """Reconnect storm: the chosen clients drop at one instant and come back together."""
        await sleep_until(at)
        leaving = [agent for agent in self.agents if agent.plan.drops and agent.connected]
        for agent in leaving:
            agent.drop()
        self.dropped = len(leaving)
        await asyncio.sleep(self.scenario.reconnect_delay)
        timeout = self.scenario.connect_timeout
        results = await asyncio.gather(
            *(self._come_back(agent, timeout) for agent in leaving), return_exceptions=False
        )
        self.resync_seconds = [seconds for seconds in results if seconds is not None]
        self.returned = len(self.resync_seconds)

    async def _come_back(self, agent: Agent, timeout: float) -> float | None:
        """Reconnect and resync within ``timeout`` seconds (shed upgrades retried)."""
        return await self._shed_aware(agent.come_back, timeout, "reconnect")

    async def _drain(self, drain: Drain) -> Drained:
        for agent in self.agents:
            agent.expect(drain.expected.get(agent.plan.room, {}))
        waits = [asyncio.ensure_future(agent.caught_up.wait()) for agent in self.agents]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=drain.timeout)
            for wait in pending:
                wait.cancel()
        not_caught_up = sum(1 for agent in self.agents if not agent.caught_up.is_set())
        texts: dict[int, list[RoomText]] = {}
        for agent in self.agents:
            if agent.synced.is_set():
                final = agent.awareness_text() if self.presence else agent.final_text()
                texts.setdefault(agent.plan.room, []).append(text_digest(final))
        fresh: dict[int, RoomText] = {}
        for room, name in drain.fresh_rooms.items():
            text = await self._fresh_text(name)
            if text is not None:
                fresh[room] = text
        return Drained(self.plan.worker, texts, fresh, not_caught_up)

    async def _fresh_text(self, room_name: str) -> RoomText | None:
        """The room's text as a client joining now sees it (sync step 2 from the server)."""
        client = YClient(self.plan.base_url.split(",")[0], room_name, query=self.plan.query_of(0))
        try:
            await client.connect(self.scenario.connect_timeout)
            await asyncio.wait_for(client.synced.wait(), self.scenario.connect_timeout)
            if self.presence:
                return await self._fresh_awareness(client)
            return text_digest(str(client.text))
        except (TimeoutError, OSError, websockets.WebSocketException) as exc:
            self.recorder.error(f"fresh_join_{type(exc).__name__}")
            return None
        finally:
            await client.close()

    async def _fresh_awareness(self, client: YClient) -> RoomText:
        """The awareness states a joining client is given (servers send them on join)."""
        publishers = self.scenario.writers_per_room
        with contextlib.suppress(TimeoutError):
            await client.wait_for(lambda: len(client.awareness) >= publishers, timeout=2.0)
        return text_digest(canonical_awareness(client.awareness))
