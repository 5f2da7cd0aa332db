"""Cold loads: a long history ingested into a fresh section, then timed late joiners.

For each room (one after another), in the calling process on one uvloop event loop:

1. ``history_edits`` single-character edits are prepared beforehand (typing at the end of
   the text, one pycrdt update each), so that preparing them costs nothing during the run.
2. A writer and a passive listener join the fresh room. The writer sends the edits as fast as
   the server takes them, with at most ``ingest_window`` edits ahead of what the listener has
   received (the listener's receipt is the acknowledgement y-websocket lacks).
   Ingest rate = edits / (time the listener received the last edit - time of the first send).
3. With ``reload = true`` the writer and the listener leave, so that a server that unloads
   idle rooms must load this one again from its storage for the first joiner.
4. ``late_joiners`` fresh clients join one after another. Join-to-full-state is the time
   from opening the socket to having applied a sync step 2 that holds every edit.
5. The room converged when every joiner (and the listener) ends with the writer's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import pycrdt
import uvloop

from loadtests import wire
from loadtests.agents import ApplyingListener, PassiveListener, Recorder, text_digest
from loadtests.metrics import LatencySummary
from loadtests.monitor import ProcessMonitor
from loadtests.plan import ClientPlan, Role
from loadtests.runner import RunOptions
from loadtests.scenario import Scenario
from loadtests.updates import update_header
from protocol.ysync import SyncUpdate, decode, encode_update

_UNLOAD_WAIT = 2.0


@dataclass(slots=True)
class RoomLoad:
    room: str
    edits: int
    ingest_seconds: float | None = None
    join_seconds: list[float] = field(default_factory=list)
    incomplete_joins: int = 0
    converged: bool = False
    why: str = ""

    @property
    def ingest_edits_per_second(self) -> float | None:
        if not self.ingest_seconds:
            return None
        return self.edits / self.ingest_seconds

    def to_json(self) -> dict[str, Any]:
        rate = self.ingest_edits_per_second
        return {
            "room": self.room,
            "edits": self.edits,
            "ingest_seconds": None
            if self.ingest_seconds is None
            else round(self.ingest_seconds, 4),
            "ingest_edits_per_second": None if rate is None else round(rate, 1),
            "join_ms": [round(1000 * value, 3) for value in self.join_seconds],
            "incomplete_joins": self.incomplete_joins,
            "converged": self.converged,
            "why": self.why,
        }


@dataclass(slots=True)
class ColdLoadResult:
    scenario: Scenario
    target: str
    rooms: list[RoomLoad]
    errors: dict[str, int]
    server: dict[str, Any] | None
    generator: dict[str, Any]
    joins_checked: bool = True

    @property
    def converged(self) -> bool:
        return all(room.converged for room in self.rooms)

    @property
    def ingest_edits_per_second(self) -> float | None:
        rates = [room.ingest_edits_per_second for room in self.rooms]
        known = sorted(rate for rate in rates if rate is not None)
        return known[len(known) // 2] if known else None

    @property
    def join(self) -> LatencySummary:
        return LatencySummary.of([value for room in self.rooms for value in room.join_seconds])

    @property
    def first_join_ms(self) -> float:
        firsts = [room.join_seconds[0] for room in self.rooms if room.join_seconds]
        return 1000 * max(firsts) if firsts else math.nan

    def to_json(self) -> dict[str, Any]:
        rate = self.ingest_edits_per_second
        return {
            "tool": "collab-loadtests",
            "format": 1,
            "kind": "cold_load",
            "scenario": self.scenario.to_dict(),
            "target": self.target,
            "ingest_edits_per_second": None if rate is None else round(rate, 1),
            "join_ms": self.join.to_json(),
            "first_join_ms": None if math.isnan(self.first_join_ms) else self.first_join_ms,
            "joins_checked": self.joins_checked,
            "converged": self.converged,
            "rooms": [room.to_json() for room in self.rooms],
            "errors": self.errors,
            "server": self.server,
            "generator": self.generator,
        }


def prepare_history(edits: int) -> tuple[list[bytes], str]:
    """``edits`` one-character inserts typed at the end of a text: the frames and the text."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    text = doc.get("content", type=pycrdt.Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    alphabet = "abcdefghijklmnopqrstuvwxyz "
    for index in range(edits):
        text += alphabet[index % len(alphabet)]
    return [encode_update(update) for update in updates], str(text)


def run_cold_load(scenario: Scenario, base_url: str, options: RunOptions) -> ColdLoadResult:
    """Run a cold-load scenario; blocks until every room is done or its time is up."""
    monitor = ProcessMonitor(options.server_pid) if options.server_pid else None
    loader = ColdLoader(scenario, base_url, options, monitor)
    return uvloop.run(loader.run())


class ColdLoader:
    def __init__(
        self,
        scenario: Scenario,
        base_url: str,
        options: RunOptions,
        monitor: ProcessMonitor | None,
    ) -> None:
        self.scenario = scenario
        self.base_url = base_url
        self.options = options
        self.monitor = monitor
        self.recorder = Recorder(0)
        self.run_id = secrets.token_hex(4)
        self._index = 0
        self.server_seconds = 0.0
        self.own_seconds = 0.0
        self.ingest_total = 0.0

    def _plan(self, room: int, name: str, role: Role = "passive") -> ClientPlan:
        self._index += 1
        return ClientPlan(self._index, room, name, role, 0)

    def _say(self, line: str) -> None:
        if self.options.progress is not None:
            self.options.progress(line)

    async def run(self) -> ColdLoadResult:
        rooms = []
        for room in range(self.scenario.rooms):
            name = self.scenario.room_name(self.run_id, room)
            rooms.append(await self._room(room, name))
        server = None
        if self.monitor is not None:
            edits = sum(room.edits for room in rooms if room.ingest_seconds)
            server = {
                "pid": self.monitor.pid,
                "ingest_cpu_seconds": round(self.server_seconds, 3),
                "ingest_cpu_percent_of_core": round(
                    100 * self.server_seconds / self.ingest_total, 1
                )
                if self.ingest_total
                else None,
                "cpu_us_per_edit": round(1e6 * self.server_seconds / edits, 2) if edits else None,
                "rss_bytes_end": self.monitor.rss_bytes(),
            }
        generator = {
            "cpu_seconds": round(self.own_seconds, 3),
            "cpu_percent_of_core": round(100 * self.own_seconds / self.ingest_total, 1)
            if self.ingest_total
            else None,
        }
        return ColdLoadResult(
            self.scenario,
            self.base_url,
            rooms,
            dict(sorted(self.recorder.errors.items())),
            server,
            generator,
            joins_checked=self.options.fresh_join,
        )

    async def _room(self, room: int, name: str) -> RoomLoad:
        scenario = self.scenario
        self._say(f"[cold load] preparing {scenario.history_edits} edits for {name}")
        frames, expected_text = prepare_history(scenario.history_edits)
        outcome = RoomLoad(name, len(frames))
        writer = PassiveListener(
            self._plan(room, name), self.base_url, scenario.query, self.recorder
        )
        listener = PassiveListener(
            self._plan(room, name), self.base_url, scenario.query, self.recorder
        )
        try:
            await writer.connect(scenario.connect_timeout)
            await listener.connect(scenario.connect_timeout)
        except (TimeoutError, OSError, wire.WireError) as exc:
            self.recorder.error(f"connect_{type(exc).__name__}")
            outcome.why = "the writer or the listener could not join"
            await asyncio.gather(writer.close(), listener.close())
            return outcome
        self._say(f"[cold load] ingesting {len(frames)} edits into {name}")
        try:
            outcome.ingest_seconds = await self._ingest(writer, listener, frames)
        except (TimeoutError, wire.WireError) as exc:
            self.recorder.error(f"ingest_{type(exc).__name__}")
            outcome.why = f"ingest did not complete within {scenario.duration:g} s"
        listener_text = listener.final_text()
        if scenario.reload:
            await asyncio.gather(writer.close(), listener.close())
            await asyncio.sleep(_UNLOAD_WAIT)
        joined = await self._joiners(room, name, outcome)
        await asyncio.gather(writer.close(), listener.close())
        outcome.why = outcome.why or self._divergence(expected_text, listener_text, joined)
        outcome.converged = not outcome.why
        return outcome

    async def _ingest(
        self, writer: PassiveListener, listener: PassiveListener, frames: list[bytes]
    ) -> float:
        """Send every frame, at most ``ingest_window`` ahead of the listener's receipts."""
        window = self.scenario.ingest_window
        client = _writer_client(frames)
        server_before = self.monitor.cpu_seconds() if self.monitor else None
        own_before = time.process_time()
        started = time.monotonic()
        async with asyncio.timeout(self.scenario.duration):
            for index, frame in enumerate(frames):
                if index >= window:
                    await listener.wait_seen(client, index - window)
                await writer.send(frame)
            await listener.wait_seen(client, len(frames) - 1)
        seconds = time.monotonic() - started
        self.own_seconds += time.process_time() - own_before
        if self.monitor is not None and server_before is not None:
            server_after = self.monitor.cpu_seconds()
            if server_after is not None:
                self.server_seconds += server_after - server_before
        self.ingest_total += seconds
        return seconds

    async def _joiners(self, room: int, name: str, outcome: RoomLoad) -> list[str]:
        if not self.options.fresh_join:
            return []
        texts = []
        for _ in range(self.scenario.late_joiners):
            joiner = ApplyingListener(
                self._plan(room, name, "applying"),
                self.base_url,
                self.scenario.query,
                self.recorder,
            )
            try:
                seconds = await joiner.connect(self.scenario.connect_timeout)
                if len(joiner.text) < outcome.edits:
                    outcome.incomplete_joins += 1
                else:
                    outcome.join_seconds.append(seconds)
                texts.append(str(joiner.text))
            except (TimeoutError, OSError, wire.WireError) as exc:
                self.recorder.error(f"join_{type(exc).__name__}")
            finally:
                with contextlib.suppress(wire.WireError, OSError):
                    await joiner.close()
        return texts

    def _divergence(self, expected: str, listener: str, joined: list[str]) -> str:
        if listener != expected:
            return "the listener's text differs from the writer's"
        if self.options.fresh_join:
            if len(joined) < self.scenario.late_joiners:
                return f"only {len(joined)} of {self.scenario.late_joiners} joiners synced"
            want = text_digest(expected)
            if any(text_digest(text) != want for text in joined):
                return "a joiner's step 2 did not hold the whole history"
        return ""


def _writer_client(frames: list[bytes]) -> int:
    message = decode(frames[0])
    assert isinstance(message, SyncUpdate)
    header = update_header(message.update)
    assert header is not None
    return header[0]
