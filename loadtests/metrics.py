"""Matching sends to deliveries across generator processes, and the numbers drawn from them.

An edit is named ``(room, client_id, clock)`` (see :mod:`loadtests.updates`). A writer records
when it sent each edit; every listener records when each edit reached it. The coordinator
joins the two as batches arrive, whatever their order:

* delivery latency: one per (edit, receiving client), ``received - sent``;
* fan-out latency: one per edit, from the send to the moment the LAST other client of the room
  received it, counted once every client that was connected at the start has it.

Edits still short of receivers when the run ends are lost deliveries; receivers beyond the
room's size are duplicates; deliveries naming an edit nobody sent are unmatched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtests.plan import Batch

EditKey = tuple[int, int, int]


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of sorted values, linearly interpolated; NaN if empty."""
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Milliseconds. ``count`` samples; every field is NaN (null in JSON) when there are none."""

    count: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        ordered = sorted(seconds)
        if not ordered:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(ordered),
            mean=1000 * sum(ordered) / len(ordered),
            p50=1000 * percentile(ordered, 50),
            p95=1000 * percentile(ordered, 95),
            p99=1000 * percentile(ordered, 99),
            max=1000 * ordered[-1],
        )

    def to_json(self) -> dict[str, Any]:
        return {key: _finite(value) for key, value in asdict(self).items()}


def _finite(value: float | int) -> float | int | None:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    return value


@dataclass(slots=True)
class TimeBin:
    """One second of the measured window (``t`` seconds after its start)."""

    t: int
    edits: int = 0
    deliveries: int = 0
    fanout: list[float] = field(default_factory=list)
    server_cpu_percent: float | None = None
    clients: int = 0

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.fanout)
        return {
            "t": self.t,
            "edits": self.edits,
            "deliveries": self.deliveries,
            "fanout_p50_ms": _finite(1000 * percentile(ordered, 50)),
            "fanout_p99_ms": _finite(1000 * percentile(ordered, 99)),
            "server_cpu_percent": self.server_cpu_percent,
            "clients": self.clients,
        }


class Collector:
    """Joins the sends and deliveries of every worker; no I/O."""

    def __init__(self) -> None:
        self.t_start = math.inf
        self.bins: list[TimeBin] = []
        self.expected: dict[int, int] = {}
        self.sent: dict[EditKey, float] = {}
        self.sent_by_room: dict[int, int] = {}
        self.received: dict[EditKey, list[float]] = {}
        self.unmatched: dict[EditKey, list[float]] = {}
        self.delivery_latencies: list[float] = []
        self.fanout_latencies: list[float] = []
        self.deliveries = 0
        self.errors: dict[str, int] = {}
        self.recent_fanout: list[float] = []
        self.recent_edits = 0
        self.recent_deliveries = 0
        self.recent_frames = 0

    def start(self, t_start: float, duration: float, expected: dict[int, int]) -> None:
        """Open the window; ``expected[room]`` receivers per edit (connected clients - 1)."""
        self.t_start = t_start
        self.bins = [TimeBin(t) for t in range(max(1, math.ceil(duration)))]
        self.expected = expected

    def bin_at(self, when: float) -> TimeBin | None:
        """The one-second bin holding monotonic time ``when``, if inside the window."""
        index = int(when - self.t_start)
        if 0 <= index < len(self.bins):
            return self.bins[index]
        return None

    def add(self, batch: Batch) -> None:
        self.recent_frames += batch.frames
        for kind, count in batch.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        for room, client, clock, when in batch.sends.rows():
            self._add_send((room, client, clock), when)
        for room, client, clock, when in batch.deliveries.rows():
            self._add_delivery((room, client, clock), when)
        for key, times in batch.received.groups():
            self._add_group(key, times)

    def _add_send(self, key: EditKey, when: float) -> None:
        self.sent[key] = when
        self.sent_by_room[key[0]] = self.sent_by_room.get(key[0], 0) + 1
        self.recent_edits += 1
        slot = self.bin_at(when)
        if slot is not None:
            slot.edits += 1
        early = self.unmatched.pop(key, None)
        if early:
            self.delivery_latencies.extend(received - when for received in early)
            self._check_complete(key)

    def _add_delivery(self, key: EditKey, when: float) -> None:
        self.deliveries += 1
        self.recent_deliveries += 1
        slot = self.bin_at(when)
        if slot is not None:
            slot.deliveries += 1
        state = self.received.get(key)
        if state is None:
            self.received[key] = [1.0, when]
        else:
            state[0] += 1
            state[1] = max(state[1], when)
        sent = self.sent.get(key)
        if sent is None:
            self.unmatched.setdefault(key, []).append(when)
            return
        self.delivery_latencies.append(when - sent)
        self._check_complete(key)

    def _add_group(self, key: EditKey, times: list[float]) -> None:
        """Several deliveries of one edit (to different receivers), as a worker grouped them."""
        count = len(times)
        self.deliveries += count
        self.recent_deliveries += count
        t_start = self.t_start
        bins = self.bins
        for when in times:
            index = int(when - t_start)
            if 0 <= index < len(bins):
                bins[index].deliveries += 1
        latest = max(times)
        state = self.received.get(key)
        if state is None:
            self.received[key] = [float(count), latest]
        else:
            state[0] += count
            state[1] = max(state[1], latest)
        sent = self.sent.get(key)
        if sent is None:
            self.unmatched.setdefault(key, []).extend(times)
            return
        self.delivery_latencies.extend([when - sent for when in times])
        self._check_complete(key)

    def _check_complete(self, key: EditKey) -> None:
        state = self.received[key]
        if state[0] != self.expected.get(key[0], 0):
            return
        sent = self.sent[key]
        latency = state[1] - sent
        self.fanout_latencies.append(latency)
        self.recent_fanout.append(latency)
        slot = self.bin_at(sent)
        if slot is not None:
            slot.fanout.append(latency)

    def take_recent(self) -> tuple[int, int, int, list[float]]:
        """Edits, deliveries, frames and fan-out latencies since the previous call."""
        recent = (
            self.recent_edits,
            self.recent_deliveries,
            self.recent_frames,
            self.recent_fanout,
        )
        self.recent_edits = self.recent_deliveries = self.recent_frames = 0
        self.recent_fanout = []
        return recent

    def expected_deliveries(self) -> int:
        return sum(self.expected.get(room, 0) for room, _, _ in self.sent)

    def delivery_errors(self) -> dict[str, int]:
        """Lost, duplicate and unmatched deliveries, once every batch is in."""
        lost = duplicate = 0
        for key in self.sent:
            expected = self.expected.get(key[0], 0)
            state = self.received.get(key)
            count = int(state[0]) if state is not None else 0
            lost += max(0, expected - count)
            duplicate += max(0, count - expected)
        unmatched = sum(len(times) for times in self.unmatched.values())
        found = {"lost_delivery": lost, "duplicate_delivery": duplicate}
        found["unmatched_delivery"] = unmatched
        return {kind: count for kind, count in found.items() if count}
