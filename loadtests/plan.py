"""What the coordinator and its generator processes tell each other.

The coordinator (:mod:`loadtests.runner`) splits the clients of a scenario over worker
processes (:mod:`loadtests.worker`) and drives them through fixed phases, one command each:

    worker -> Ready        coordinator -> Connect(t0)
    worker -> Connected    coordinator -> Go(t_start, t_end)
    worker -> Batch...     (every ``batch_interval`` while running, and before each reply below)
    worker -> Stopped      coordinator -> Drain(expected last clocks, fresh rooms)
    worker -> Drained      coordinator -> Close
    worker -> Failed       (at any time: the worker crashed; the run is aborted)

Every timestamp is ``time.monotonic()``: on Linux that is CLOCK_MONOTONIC, one clock for every
process of the machine, so a send timed in one process and a delivery timed in another can be
subtracted. Edit records travel as parallel ``array`` columns: they pickle as raw bytes.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from loadtests.scenario import Scenario

Role = Literal["writer", "applying", "passive"]


@dataclass(frozen=True, slots=True)
class ClientPlan:
    """One scripted client: its room, its role, when it connects (seconds after t0)."""

    index: int
    room: int
    room_name: str
    role: Role
    connect_at: float
    drops: bool = False
    """Reconnect storms: this client drops its connection and comes back."""


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    worker: int
    base_url: str
    scenario: Scenario
    clients: tuple[ClientPlan, ...]
    seed: int
    batch_interval: float = 0.5
    tokens: tuple[str, ...] = ()
    """Access tokens of several users: client ``i`` presents ``tokens[i % len(tokens)]``."""

    def query_of(self, index: int) -> str:
        """The query string client ``index`` connects with (its token added, if any)."""
        query = self.scenario.query
        if not self.tokens:
            return query
        token = f"token={quote(self.tokens[index % len(self.tokens)], safe='')}"
        return f"{query}&{token}" if query else token


class EditRecords:
    """Columns of ``(room, client_id, clock, monotonic time)`` rows: sends or deliveries."""

    __slots__ = ("clients", "clocks", "rooms", "times")

    def __init__(self) -> None:
        self.rooms = array("I")
        self.clients = array("Q")
        self.clocks = array("Q")
        self.times = array("d")

    def add(self, room: int, client: int, clock: int, when: float) -> None:
        self.rooms.append(room)
        self.clients.append(client)
        self.clocks.append(clock)
        self.times.append(when)

    def __len__(self) -> int:
        return len(self.times)

    def rows(self) -> zip[tuple[int, int, int, float]]:
        return zip(self.rooms, self.clients, self.clocks, self.times, strict=True)


class ReceivedRecords:
    """Deliveries grouped by edit: per ``(room, client_id, clock)``, every receipt time.

    Listeners of a big room receive the same edit hundreds of times; grouping the receipts
    by edit in the worker keeps the per-delivery work down to one list append there and one
    subtraction in the coordinator.
    """

    __slots__ = ("clients", "clocks", "counts", "rooms", "times")

    def __init__(self) -> None:
        self.rooms = array("I")
        self.clients = array("Q")
        self.clocks = array("Q")
        self.counts = array("I")
        self.times = array("d")

    @classmethod
    def of(cls, grouped: dict[tuple[int, int, int], list[float]]) -> ReceivedRecords:
        records = cls()
        for (room, client, clock), times in grouped.items():
            records.rooms.append(room)
            records.clients.append(client)
            records.clocks.append(clock)
            records.counts.append(len(times))
            records.times.extend(times)
        return records

    def __len__(self) -> int:
        return len(self.times)

    def groups(self) -> list[tuple[tuple[int, int, int], list[float]]]:
        out = []
        start = 0
        times = self.times
        for room, client, clock, count in zip(
            self.rooms, self.clients, self.clocks, self.counts, strict=True
        ):
            out.append(((room, client, clock), times[start : start + count].tolist()))
            start += count
        return out


# -- coordinator -> worker --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    t0: float


@dataclass(frozen=True, slots=True)
class Go:
    t_start: float
    t_end: float


@dataclass(frozen=True, slots=True)
class Drain:
    """Wait until every client saw ``expected[room][writer_client_id]``, then report texts."""

    expected: dict[int, dict[int, int]]
    fresh_rooms: dict[int, str]
    timeout: float


@dataclass(frozen=True, slots=True)
class Close:
    pass


Command = Connect | Go | Drain | Close


# -- worker -> coordinator --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    worker: int


@dataclass(frozen=True, slots=True)
class Connected:
    worker: int
    connected_by_room: dict[int, int]
    connect_seconds: list[float]
    handshake_seconds: list[float] = field(default_factory=list)
    """TCP connect + WebSocket upgrade, per connected client."""
    sync_seconds: list[float] = field(default_factory=list)
    """From sending sync step 1 to applying the server's sync step 2."""


@dataclass(slots=True)
class Batch:
    worker: int
    sent: float
    connected: int
    sends: EditRecords
    deliveries: EditRecords
    frames: int
    errors: dict[str, int] = field(default_factory=dict)
    received: ReceivedRecords = field(default_factory=ReceivedRecords)


@dataclass(frozen=True, slots=True)
class Stopped:
    """The writers are done. ``last_clocks[room][client_id]`` is each writer's last edit."""

    worker: int
    last_clocks: dict[int, dict[int, int]]
    cpu_seconds: float
    frames_in_window: int
    schedule_lag_seconds: list[float]
    reconnect: dict[str, Any] = field(default_factory=dict)
    """Reconnect storms: ``dropped``, ``returned`` and ``resync_seconds`` of this worker."""


@dataclass(frozen=True, slots=True)
class RoomText:
    """What one client ended with: a digest of the room's text and its length."""

    digest: str
    length: int


@dataclass(frozen=True, slots=True)
class Drained:
    worker: int
    texts: dict[int, list[RoomText]]
    fresh: dict[int, RoomText]
    not_caught_up: int


@dataclass(frozen=True, slots=True)
class Failed:
    worker: int
    error: str


Report = Ready | Connected | Batch | Stopped | Drained | Failed
