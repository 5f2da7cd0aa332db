"""The coordinator of a load run: plans the clients, drives the workers, gathers the result.

It runs in the calling process without an event loop: it only waits on the workers' pipes,
joins their records in a :class:`~loadtests.metrics.Collector`, samples the server process once
a second and prints the progress line. The phases are listed in :mod:`loadtests.plan`.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import multiprocessing
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, TypeVar

from loadtests.metrics import Collector, LatencySummary
from loadtests.monitor import ProcessMonitor
from loadtests.plan import (
    Batch,
    ClientPlan,
    Close,
    Command,
    Connect,
    Connected,
    Drain,
    Drained,
    Failed,
    Go,
    Ready,
    Report,
    Role,
    RoomText,
    Stopped,
    WorkerPlan,
)
from loadtests.scenario import Scenario
from loadtests.worker import worker_main

ReportT = TypeVar("ReportT", Ready, Connected, Stopped, Drained)

_START_DELAY = 0.3
_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
_SATURATED_PERCENT = 85.0


class RunError(RuntimeError):
    """The run could not complete: a worker crashed or a phase overran its deadline."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    workers: int = 2
    server_pid: int | None = None
    progress: Callable[[str], None] | None = None
    seed: int | None = None
    fresh_join: bool = True
    """Check convergence with a fresh client joining each room at the end. Off for servers
    that keep no document (a bare relay): the clients' texts are still compared."""
    tokens: tuple[str, ...] = ()
    """Access tokens of many users, shared round robin by the clients (a reconnect storm
    of many users keeps every per-user limit of the server in play)."""


@dataclass(slots=True)
class RunResult:
    """Everything a run measured; :meth:`to_json` is the JSON result file."""

    scenario: Scenario
    target: str
    run_id: str
    started_at: str
    workers: int
    window_seconds: float
    clients: dict[str, Any]
    edits: dict[str, Any]
    fanout: LatencySummary
    delivery: LatencySummary
    errors: dict[str, int]
    convergence: dict[str, Any]
    server: dict[str, Any] | None
    generator: dict[str, Any]
    timeseries: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """What a kind adds: ``reconnect`` (dropped, returned, resync_ms)."""

    @property
    def converged(self) -> bool:
        return bool(self.convergence["all"])

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": "collab-loadtests",
            "format": 1,
            "scenario": self.scenario.to_dict(),
            "target": self.target,
            "run_id": self.run_id,
            "started_at": self.started_at,
            "workers": self.workers,
            "window_seconds": round(self.window_seconds, 3),
            "clients": self.clients,
            "edits": self.edits,
            "latency_ms": {"fanout": self.fanout.to_json(), "delivery": self.delivery.to_json()},
            "errors": self.errors,
            "convergence": self.convergence,
            "server": self.server,
            "generator": self.generator,
            "timeseries": self.timeseries,
            "extra": self.extra,
        }


def plan_clients(scenario: Scenario, run_id: str) -> list[ClientPlan]:
    """Every client of the run in order. Rooms fill side by side during the ramp-up."""
    plans = []
    total = scenario.total_clients
    for room in range(scenario.rooms):
        name = scenario.room_name(run_id, room)
        for slot in range(scenario.clients_per_room):
            index = room * scenario.clients_per_room + slot
            role: Role = scenario.listeners
            if not scenario.idle and slot < scenario.writers_per_room:
                role = "writer"
            rank = slot * scenario.rooms + room
            drops = scenario.kind == "reconnect" and _chosen(slot, scenario.reconnect_fraction)
            plans.append(
                ClientPlan(index, room, name, role, scenario.ramp_up * rank / total, drops)
            )
    return plans


def _chosen(slot: int, fraction: float) -> bool:
    """Spread a fraction of each room's slots evenly (golden-ratio sequence)."""
    return fraction >= 1 or (slot * 0.618034 + 0.5) % 1.0 < fraction


def run_load(scenario: Scenario, base_url: str, options: RunOptions | None = None) -> RunResult:
    """Run ``scenario`` against ``base_url`` (already checked by the caller) and measure it.

    Blocks for the ramp-up, the duration and the drain. Raises RunError; the worker processes
    are always stopped before it returns.
    """
    with Coordinator(scenario, base_url, options or RunOptions()) as coordinator:
        return coordinator.run()


class Coordinator:
    def __init__(self, scenario: Scenario, base_url: str, options: RunOptions) -> None:
        self.scenario = scenario
        self.base_url = base_url
        self.options = options
        self.run_id = secrets.token_hex(4)
        self.clients = plan_clients(scenario, self.run_id)
        self.worker_count = max(1, min(options.workers, len(self.clients)))
        self.collector = Collector()
        self.monitor = ProcessMonitor(options.server_pid) if options.server_pid else None
        self.processes: list[BaseProcess] = []
        self.conns: dict[Connection, int] = {}
        self.connected_now: dict[int, int] = {}
        self.phase = "starting"
        self._next_tick = 0.0
        self._last_tick = time.monotonic()
        self._early: list[Report] = []
        self._window: tuple[float, float] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Coordinator:
        try:
            self._spawn()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        seed = self.options.seed if self.options.seed is not None else secrets.randbits(32)
        for worker in range(self.worker_count):
            plan = WorkerPlan(
                worker=worker,
                base_url=self.base_url,
                scenario=self.scenario,
                clients=tuple(self.clients[worker :: self.worker_count]),
                seed=seed + worker,
                tokens=self.options.tokens,
            )
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker_main, args=(plan, theirs), name=f"loadtests-worker-{worker}"
            )
            process.start()
            theirs.close()
            self.processes.append(process)
            self.conns[ours] = worker

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for conn in self.conns:
            # A worker that is already gone has closed its end of the pipe.
            with contextlib.suppress(OSError):
                conn.send(Close())
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for conn in self.conns:
            conn.close()

    # -- the phases -----------------------------------------------------------------------

    def run(self) -> RunResult:
        scenario = self.scenario
        started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self._await_all(Ready, _READY_TIMEOUT)
        self.phase = "connecting"
        self._broadcast(Connect(time.monotonic() + 0.1))
        connected = self._await_all(
            Connected, scenario.ramp_up + scenario.connect_timeout + _READY_TIMEOUT
        )
        by_room: dict[int, int] = {}
        for report in connected.values():
            for room, count in report.connected_by_room.items():
                by_room[room] = by_room.get(room, 0) + count
        expected = {room: max(0, by_room.get(room, 0) - 1) for room in range(scenario.rooms)}
        t_start = time.monotonic() + _START_DELAY
        t_end = t_start + scenario.duration
        self.collector.start(t_start, scenario.duration, expected)
        self._window = (t_start, t_end)
        self.phase = "running"
        self._broadcast(Go(t_start, t_end))
        self._pump_until(t_start)
        server_before = self._server_cpu()
        own_before = time.process_time()
        self._next_tick = t_start + 1.0
        self._last_tick = t_start
        self.collector.take_recent()
        self._pump_until(t_end)
        server_after = self._server_cpu()
        own_seconds = time.process_time() - own_before
        rss_end = self.monitor.rss_bytes() if self.monitor else None
        self.phase = "draining"
        stopped = self._await_all(Stopped, _STOP_TIMEOUT)
        drained = self._drain(stopped)
        self.phase = "done"
        server = self._server_stats(server_before, server_after, rss_end, stopped)
        return RunResult(
            scenario=scenario,
            target=self.base_url,
            run_id=self.run_id,
            started_at=started_at,
            workers=self.worker_count,
            window_seconds=scenario.duration,
            clients=self._clients_stats(connected),
            edits=self._edit_stats(stopped),
            fanout=LatencySummary.of(self.collector.fanout_latencies),
            delivery=LatencySummary.of(self.collector.delivery_latencies),
            errors=self._errors(drained),
            convergence=self._convergence(drained),
            server=server,
            generator=self._generator_stats(stopped, own_seconds),
            timeseries=[slot.to_json() for slot in self.collector.bins],
            extra=self._extra(stopped),
        )

    def _extra(self, stopped: dict[int, Stopped]) -> dict[str, Any]:
        if self.scenario.kind != "reconnect":
            return {}
        reports = [report.reconnect for report in stopped.values()]
        seconds = [value for report in reports for value in report.get("resync_seconds", [])]
        return {
            "reconnect": {
                "dropped": sum(report.get("dropped", 0) for report in reports),
                "returned": sum(report.get("returned", 0) for report in reports),
                "shed": sum(report.get("shed", 0) for report in reports),
                "reset": sum(report.get("reset", 0) for report in reports),
                "resync_ms": LatencySummary.of(seconds).to_json(),
            }
        }

    def _drain(self, stopped: dict[int, Stopped]) -> dict[int, Drained]:
        expected: dict[int, dict[int, int]] = {}
        for report in stopped.values():
            for room, clocks in report.last_clocks.items():
                expected.setdefault(room, {}).update(clocks)
        names = {client.room: client.room_name for client in self.clients}
        per_worker = math.ceil(self.scenario.rooms / self.worker_count)
        for conn, worker in self.conns.items():
            fresh = {
                room: names[room]
                for room in names
                if room % self.worker_count == worker and self.options.fresh_join
            }
            conn.send(Drain(expected, fresh, self.scenario.drain_timeout))
        timeout = self.scenario.drain_timeout + per_worker * self.scenario.connect_timeout
        return self._await_all(Drained, timeout + _READY_TIMEOUT)

    # -- receiving ------------------------------------------------------------------------

    def _broadcast(self, command: Command) -> None:
        for conn in self.conns:
            conn.send(command)

    def _await_all(self, kind: type[ReportT], timeout: float) -> dict[int, ReportT]:
        got: dict[int, ReportT] = {}
        deadline = time.monotonic() + timeout
        early, self._early = self._early, []
        while len(got) < len(self.conns):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = sorted(set(self.conns.values()) - set(got))
                raise RunError(f"workers {missing} did not report {kind.__name__} in {timeout:g} s")
            reports, early = early + self._receive(min(remaining, 0.25)), []
            for report in reports:
                if not isinstance(report, kind):
                    raise RunError(f"worker sent {type(report).__name__}, expected {kind.__name__}")
                got[report.worker] = report
        return got

    def _pump_until(self, deadline: float) -> None:
        """Absorb batches until ``deadline``; other reports wait for :meth:`_await_all`."""
        while (remaining := deadline - time.monotonic()) > 0:
            self._early.extend(self._receive(min(remaining, 0.25)))

    def _receive(self, timeout: float) -> list[Report]:
        """Reports other than batches that arrived within ``timeout``; batches are absorbed."""
        reports: list[Report] = []
        for ready in wait(list(self.conns), timeout):
            assert isinstance(ready, Connection)
            worker = self.conns[ready]
            try:
                report: Report = ready.recv()
            except EOFError:
                code = self.processes[worker].exitcode
                raise RunError(f"worker {worker} exited unexpectedly (exit code {code})") from None
            if isinstance(report, Failed):
                raise RunError(f"worker {report.worker} failed:\n{report.error}")
            if isinstance(report, Batch):
                self.connected_now[report.worker] = report.connected
                self.collector.add(report)
            else:
                reports.append(report)
        self._tick()
        return reports

    def _tick(self) -> None:
        now = time.monotonic()
        if now < self._next_tick:
            return
        interval = max(1e-3, now - self._last_tick)
        self._last_tick = now
        self._next_tick = now + 1.0
        cpu = self.monitor.sample() if self.monitor else None
        clients = sum(self.connected_now.values())
        if self._window is not None and self.phase == "running":
            slot = self.collector.bin_at(now - 0.5)
            if slot is not None:
                slot.server_cpu_percent = cpu
                slot.clients = clients
        recent = self.collector.take_recent()
        if self.options.progress is not None:
            self.options.progress(self._progress_line(now, interval, clients, cpu, recent))

    def _progress_line(
        self,
        now: float,
        interval: float,
        clients: int,
        cpu: float | None,
        recent: tuple[int, int, int, list[float]],
    ) -> str:
        edits, deliveries, frames, fanout = recent
        planned = len(self.clients)
        line = f"[{self.phase:>10}] clients {clients}/{planned}"
        if self._window is not None and self.phase == "running":
            elapsed = now - self._window[0]
            p99 = LatencySummary.of(fanout).p99
            line = (
                f"[{elapsed:6.1f} s] clients {clients}/{planned}  "
                f"edits/s {edits / interval:.0f}  deliveries/s {deliveries / interval:.0f}  "
                f"frames/s {frames / interval:.0f}  fan-out p99 "
                + ("-" if math.isnan(p99) else f"{p99:.1f} ms")
            )
        errors = sum(self.collector.errors.values())
        line += f"  errors {errors}"
        if cpu is not None:
            line += f"  server cpu {cpu:.0f}%"
        return line

    # -- the result -----------------------------------------------------------------------

    def _server_cpu(self) -> float | None:
        if self.monitor is None:
            return None
        self.monitor.sample()
        return self.monitor.cpu_seconds()

    def _server_stats(
        self,
        before: float | None,
        after: float | None,
        rss_end: int | None,
        stopped: dict[int, Stopped],
    ) -> dict[str, Any] | None:
        if self.monitor is None:
            return None
        frames = sum(report.frames_in_window for report in stopped.values())
        cpu = None if before is None or after is None else after - before
        return {
            "pid": self.monitor.pid,
            "cpu_seconds": None if cpu is None else round(cpu, 3),
            "cpu_percent_of_core": None
            if cpu is None
            else round(100 * cpu / self.scenario.duration, 1),
            "frames_in_window": frames,
            "cpu_us_per_frame": None if cpu is None or not frames else round(1e6 * cpu / frames, 2),
            "rss_bytes_end": rss_end,
            "rss_bytes_peak": self.monitor.rss_peak or None,
        }

    def _clients_stats(self, connected: dict[int, Connected]) -> dict[str, Any]:
        reports = connected.values()
        seconds = [value for report in reports for value in report.connect_seconds]
        handshake = [value for report in reports for value in report.handshake_seconds]
        sync = [value for report in reports for value in report.sync_seconds]
        return {
            "planned": len(self.clients),
            "connected": len(seconds),
            "connect_ms": LatencySummary.of(seconds).to_json(),
            "handshake_ms": LatencySummary.of(handshake).to_json(),
            "sync_ms": LatencySummary.of(sync).to_json(),
        }

    def _edit_stats(self, stopped: dict[int, Stopped]) -> dict[str, Any]:
        collector = self.collector
        duration = self.scenario.duration
        sent = len(collector.sent)
        delivered = len(collector.delivery_latencies)
        lags = [lag for report in stopped.values() for lag in report.schedule_lag_seconds]
        return {
            "sent": sent,
            "sent_per_second": round(sent / duration, 2),
            "planned_per_second": self.scenario.planned_edits_per_second,
            "deliveries": delivered,
            "expected_deliveries": collector.expected_deliveries(),
            "delivered_per_second": round(delivered / duration, 2),
            "frames_in_window": sum(report.frames_in_window for report in stopped.values()),
            "schedule_lag_ms": LatencySummary.of(lags).to_json(),
        }

    def _errors(self, drained: dict[int, Drained]) -> dict[str, int]:
        errors = dict(self.collector.errors)
        errors.update(self.collector.delivery_errors())
        not_caught_up = sum(report.not_caught_up for report in drained.values())
        if not_caught_up:
            errors["drain_timeout_clients"] = not_caught_up
        return dict(sorted(errors.items()))

    def _convergence(self, drained: dict[int, Drained]) -> dict[str, Any]:
        texts: dict[int, list[RoomText]] = {}
        fresh: dict[int, RoomText] = {}
        for report in drained.values():
            for room, room_texts in report.texts.items():
                texts.setdefault(room, []).extend(room_texts)
            fresh.update(report.fresh)
        failed = []
        for room in range(self.scenario.rooms):
            reason = self._room_divergence(room, texts.get(room, []), fresh.get(room))
            if reason:
                failed.append({"room": self.scenario.room_name(self.run_id, room), "why": reason})
        return {
            "rooms": self.scenario.rooms,
            "converged": self.scenario.rooms - len(failed),
            "all": not failed,
            "failed": failed[:20],
        }

    def _room_divergence(self, room: int, texts: list[RoomText], fresh: RoomText | None) -> str:
        planned = self.scenario.clients_per_room
        edits = self.collector.sent_by_room.get(room, 0)
        if len(texts) < planned:
            return f"only {len(texts)} of {planned} clients were connected"
        if fresh is None and self.options.fresh_join:
            return "no fresh client could join at the end"
        if len({text.digest for text in texts}) > 1:
            what = "awareness states" if self.scenario.kind == "presence" else "texts"
            return f"clients ended with different {what}"
        if fresh is not None and texts[0] != fresh:
            return "a fresh client sees a different text than the room's clients"
        if self.scenario.kind == "presence":
            return ""
        if texts[0].length != edits:
            return f"the text has {texts[0].length} characters for {edits} one-character edits"
        return ""

    def _generator_stats(self, stopped: dict[int, Stopped], own_seconds: float) -> dict[str, Any]:
        duration = self.scenario.duration
        per_worker = [
            round(100 * stopped[worker].cpu_seconds / duration, 1) for worker in sorted(stopped)
        ]
        total = sum(report.cpu_seconds for report in stopped.values()) + own_seconds
        return {
            "workers": self.worker_count,
            "cpus": sorted(os.sched_getaffinity(0)),
            "cpu_seconds": round(total, 3),
            "cpu_percent_of_core": round(100 * total / duration, 1),
            "worker_cpu_percent": per_worker,
            "coordinator_cpu_percent": round(100 * own_seconds / duration, 1),
            "saturated": any(percent > _SATURATED_PERCENT for percent in per_worker),
        }
