"""Scenario files: what a load run does, read from TOML and checked before anything starts.

A scenario is one flat TOML table (see ``docs/loadtests.md`` and ``loadtests/scenarios/``).
Every key is checked: unknown keys, wrong types and out-of-range values are refused with one
error that lists every problem, and ``duration`` must be given explicitly. Caps keep every run
bounded in clients, rate and time. The target URL is checked separately by
:func:`check_target`: only loopback hosts unless the caller allows remote targets.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import string
import tomllib
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

MAX_CLIENTS: Final = 5_000
MAX_DURATION: Final = 600.0
MAX_RAMP_UP: Final = 300.0
MAX_EDITS_PER_SECOND: Final = 100.0
MAX_TOTAL_EDITS_PER_SECOND: Final = 20_000.0
MAX_DRAIN_TIMEOUT: Final = 120.0
MAX_CONNECT_TIMEOUT: Final = 60.0
MAX_HISTORY_EDITS: Final = 100_000
MAX_LATE_JOINERS: Final = 100
MAX_STAGES: Final = 20
MAX_RECONNECT_DELAY: Final = 30.0

KINDS: Final = ("editing", "presence", "reconnect", "herd", "saturation", "cold_load")
"""What a scenario does (``kind``); see docs/loadtests.md. ``editing`` is the default."""

# Keys that only mean something for one kind: giving them to another kind is an error.
_KIND_KEYS: Final = {
    "reconnect": ("reconnect_at", "reconnect_fraction", "reconnect_delay"),
    "saturation": ("stage_rates", "p99_limit_ms"),
    "cold_load": ("history_edits", "late_joiners", "ingest_window", "reload"),
}

SCENARIO_DIR: Final = Path(__file__).parent / "scenarios"

Listeners = Literal["passive", "applying"]
Kind = Literal["editing", "presence", "reconnect", "herd", "saturation", "cold_load"]

_ROOM_CHARS: Final = re.compile(r"[A-Za-z0-9_/-]{1,129}")
_TEMPLATE_FIELDS: Final = {"run", "room"}


class LoadConfigError(ValueError):
    """The run as asked for cannot be started (the caller's fault); the message says why."""


class ScenarioError(LoadConfigError):
    """A scenario file or override is invalid: unknown key, bad value, missing duration."""


class TargetError(LoadConfigError):
    """The target URL is malformed or not on the loopback interface (without allow_remote)."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario. Build it with :func:`load_scenario` or :func:`parse_scenario`."""

    duration: float
    name: str = "scenario"
    description: str = ""
    rooms: int = 1
    clients_per_room: int = 2
    writers_per_room: int = 1
    edits_per_second: float = 5.0
    ramp_up: float = 0.0
    listeners: Listeners = "passive"
    cursor: bool = False
    idle: bool = False
    room_template: str = "load-{run}/r{room}"
    query: str = ""
    connect_timeout: float = 10.0
    drain_timeout: float = 10.0
    kind: Kind = "editing"
    writers_apply: bool = True
    reconnect_at: float = 2.0
    reconnect_fraction: float = 0.5
    reconnect_delay: float = 1.0
    stage_rates: tuple[float, ...] = ()
    p99_limit_ms: float = 100.0
    history_edits: int = 20_000
    late_joiners: int = 5
    ingest_window: int = 1_000
    reload: bool = False

    @property
    def total_clients(self) -> int:
        return self.rooms * self.clients_per_room

    @property
    def total_writers(self) -> int:
        return 0 if self.idle else self.rooms * self.writers_per_room

    @property
    def planned_edits_per_second(self) -> float:
        return self.total_writers * self.edits_per_second

    def room_name(self, run_id: str, index: int) -> str:
        return self.room_template.format(run=run_id, room=index)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["stage_rates"] = list(self.stage_rates)
        return values

    def stage(self, rate: float) -> Scenario:
        """One stage of a saturation run: an editing scenario at ``rate`` edits/s per writer."""
        return dataclasses.replace(
            self, kind="editing", edits_per_second=rate, name=f"{self.name}@{rate:g}"
        )


_FIELDS: Final = {field.name: field for field in dataclasses.fields(Scenario)}


def load_scenario(path: Path, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file; ``overrides`` replace keys of the file.

    A bare name (``smoke``) is looked up in ``loadtests/scenarios/``. Raises ScenarioError
    (also for an unreadable file or invalid TOML).
    """
    if not path.exists() and path.suffix == "" and (SCENARIO_DIR / f"{path}.toml").exists():
        path = SCENARIO_DIR / f"{path}.toml"
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the scenario file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: invalid TOML: {exc}") from exc
    data.setdefault("name", path.stem)
    data.update(overrides or {})
    return parse_scenario(data, source=str(path))


def parse_scenario(data: Mapping[str, Any], source: str = "scenario") -> Scenario:
    """Validate a mapping of scenario keys; raise ScenarioError listing every problem."""
    problems: list[str] = []
    unknown = sorted(set(data) - set(_FIELDS))
    for key in unknown:
        problems.append(f"unknown key {key!r} (known keys: {', '.join(sorted(_FIELDS))})")
    if "duration" not in data:
        problems.append(
            "missing 'duration': give the measured time in seconds explicitly "
            f"(at most {MAX_DURATION:g}); a load run never runs unbounded"
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _FIELDS:
            checked = _check_type(key, value, problems)
            if checked is not None:
                values[key] = checked
    if not problems:
        problems.extend(_check_values(values))
        problems.extend(_check_kind(values))
    if problems:
        raise ScenarioError(f"{source}: invalid scenario:\n  - " + "\n  - ".join(problems))
    if values.get("idle"):
        values.setdefault("writers_per_room", 0)
    if values.get("kind") == "cold_load":
        values.setdefault("rooms", 1)
    return Scenario(**values)


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings from the command line; values are TOML (bare words: strings)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ScenarioError(f"override {pair!r} is not KEY=VALUE")
        try:
            overrides[key] = tomllib.loads(f"value = {raw}")["value"]
        except tomllib.TOMLDecodeError:
            overrides[key] = raw.strip()
    return overrides


def _check_type(key: str, value: Any, problems: list[str]) -> Any:
    expected = _FIELDS[key].type
    if expected == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key!r} must be a number of seconds or a rate, not {value!r}")
            return None
        return float(value)
    if expected == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key!r} must be an integer, not {value!r}")
            return None
        return value
    if expected == "tuple[float, ...]":
        if not isinstance(value, list | tuple) or not all(
            isinstance(item, int | float) and not isinstance(item, bool) for item in value
        ):
            problems.append(f"{key!r} must be a list of numbers, not {value!r}")
            return None
        return tuple(float(item) for item in value)
    if expected == "bool":
        if not isinstance(value, bool):
            problems.append(f"{key!r} must be true or false, not {value!r}")
            return None
        return value
    if not isinstance(value, str):
        problems.append(f"{key!r} must be a string, not {value!r}")
        return None
    return value


def _check_values(values: dict[str, Any]) -> list[str]:
    scenario = Scenario(**{"duration": 1.0, **values})
    problems = _check_times(scenario) + _check_sizes(scenario, values) + _check_rates(scenario)
    if scenario.listeners not in ("passive", "applying"):
        problems.append(f"'listeners' must be 'passive' or 'applying', not {scenario.listeners!r}")
    problems.extend(_check_template(scenario.room_template))
    if any(char in scenario.query for char in "#/ "):
        problems.append("'query' must be a URL query string without '#', '/' or spaces")
    return problems


def _check_kind(values: dict[str, Any]) -> list[str]:
    """The keys and bounds that depend on ``kind``."""
    kind = values.get("kind", "editing")
    if kind not in KINDS:
        return [f"'kind' must be one of {', '.join(KINDS)}, not {kind!r}"]
    problems = [
        f"{key!r} only applies to kind {owner!r}"
        for owner, keys in _KIND_KEYS.items()
        if owner != kind
        for key in keys
        if key in values
    ]
    scenario = Scenario(**{"duration": 1.0, **values})
    if scenario.idle and kind != "editing":
        problems.append("'idle' only applies to kind 'editing'")
    if kind in ("presence", "reconnect", "saturation") and scenario.writers_per_room < 1:
        problems.append(f"kind {kind!r} needs 'writers_per_room' of at least 1")
    if kind == "herd" and scenario.ramp_up != 0:
        problems.append("a herd joins at one instant: leave out 'ramp_up' (it must be 0)")
    if kind == "reconnect":
        problems.extend(_check_reconnect(scenario))
    elif kind == "saturation":
        problems.extend(_check_stages(scenario))
    elif kind == "cold_load":
        problems.extend(_check_cold_load(scenario))
    return problems


def _check_reconnect(scenario: Scenario) -> list[str]:
    problems = []
    if not 0 <= scenario.reconnect_at < scenario.duration:
        problems.append("'reconnect_at' must be >= 0 and before the end of 'duration'")
    if not 0 < scenario.reconnect_fraction <= 1:
        problems.append("'reconnect_fraction' must be > 0 and <= 1")
    if not 0 <= scenario.reconnect_delay <= MAX_RECONNECT_DELAY:
        problems.append(f"'reconnect_delay' must be between 0 and {MAX_RECONNECT_DELAY:g} s")
    return problems


def _check_stages(scenario: Scenario) -> list[str]:
    rates = scenario.stage_rates
    problems = []
    if not 1 <= len(rates) <= MAX_STAGES:
        problems.append(f"'stage_rates' must list 1 to {MAX_STAGES} rates (edits/s per writer)")
    elif any(not 0 < rate <= MAX_EDITS_PER_SECOND for rate in rates):
        problems.append(f"every rate of 'stage_rates' must be > 0 and <= {MAX_EDITS_PER_SECOND:g}")
    elif list(rates) != sorted(set(rates)):
        problems.append("'stage_rates' must increase")
    elif max(rates) * scenario.total_writers > MAX_TOTAL_EDITS_PER_SECOND:
        problems.append(f"the last stage exceeds {MAX_TOTAL_EDITS_PER_SECOND:g} edits/s in total")
    if len(rates) * scenario.duration > MAX_DURATION:
        problems.append(f"stages x duration must be <= {MAX_DURATION:g} s")
    if not 0 < scenario.p99_limit_ms <= 10_000:
        problems.append("'p99_limit_ms' must be > 0 and <= 10000")
    return problems


def _check_cold_load(scenario: Scenario) -> list[str]:
    problems = []
    if not 1 <= scenario.history_edits <= MAX_HISTORY_EDITS:
        problems.append(f"'history_edits' must be between 1 and {MAX_HISTORY_EDITS}")
    if not 0 <= scenario.late_joiners <= MAX_LATE_JOINERS:
        problems.append(f"'late_joiners' must be between 0 and {MAX_LATE_JOINERS}")
    if not 1 <= scenario.ingest_window <= MAX_HISTORY_EDITS:
        problems.append(f"'ingest_window' must be between 1 and {MAX_HISTORY_EDITS}")
    if scenario.rooms > 10:
        problems.append("a cold load uses at most 10 rooms (one after the other)")
    return problems


def _check_times(scenario: Scenario) -> list[str]:
    problems = []
    if not 0 < scenario.duration <= MAX_DURATION:
        problems.append(f"'duration' must be > 0 and <= {MAX_DURATION:g} s")
    if not 0 <= scenario.ramp_up <= MAX_RAMP_UP:
        problems.append(f"'ramp_up' must be between 0 and {MAX_RAMP_UP:g} s")
    if not 0 < scenario.connect_timeout <= MAX_CONNECT_TIMEOUT:
        problems.append(f"'connect_timeout' must be > 0 and <= {MAX_CONNECT_TIMEOUT:g} s")
    if not 0 < scenario.drain_timeout <= MAX_DRAIN_TIMEOUT:
        problems.append(f"'drain_timeout' must be > 0 and <= {MAX_DRAIN_TIMEOUT:g} s")
    return problems


def _check_sizes(scenario: Scenario, values: dict[str, Any]) -> list[str]:
    problems = []
    if scenario.rooms < 1:
        problems.append("'rooms' must be at least 1")
    if scenario.clients_per_room < 1:
        problems.append("'clients_per_room' must be at least 1")
    if scenario.total_clients > MAX_CLIENTS:
        problems.append(
            f"rooms x clients_per_room = {scenario.total_clients} exceeds the cap of "
            f"{MAX_CLIENTS} clients"
        )
    if not 0 <= scenario.writers_per_room <= scenario.clients_per_room:
        problems.append("'writers_per_room' must be between 0 and clients_per_room")
    if scenario.idle and values.get("writers_per_room", 0) != 0:
        problems.append("an idle scenario makes no edits: leave out 'writers_per_room'")
    return problems


def _check_rates(scenario: Scenario) -> list[str]:
    problems = []
    if not 0 < scenario.edits_per_second <= MAX_EDITS_PER_SECOND:
        problems.append(f"'edits_per_second' must be > 0 and <= {MAX_EDITS_PER_SECOND:g}")
    elif scenario.planned_edits_per_second > MAX_TOTAL_EDITS_PER_SECOND:
        problems.append(
            f"{scenario.planned_edits_per_second:g} edits/s in total exceeds the cap of "
            f"{MAX_TOTAL_EDITS_PER_SECOND:g}"
        )
    return problems


def _check_template(template: str) -> list[str]:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        return [f"'room_template' is not a valid template: {exc}"]
    if fields - _TEMPLATE_FIELDS:
        unknown = ", ".join(sorted(fields - _TEMPLATE_FIELDS))
        return [f"'room_template' may only use {{run}} and {{room}}, not {unknown}"]
    try:
        sample = template.format(run="abcdef01", room=999)
    except (ValueError, IndexError) as exc:
        return [f"'room_template' is not a valid template: {exc}"]
    problems = []
    if "room" not in fields:
        problems.append("'room_template' must contain {room} so that rooms differ")
    if not _ROOM_CHARS.fullmatch(sample):
        problems.append("'room_template' must give names of [A-Za-z0-9_/-] characters")
    return problems


def check_target(url: str, *, allow_remote: bool = False) -> str:
    """Return the base WebSocket URL (``ws://host:port/path``, rooms are appended).

    Raises TargetError for a non-ws(s) URL, a URL with a query or fragment, or a host that is
    not loopback (``localhost``, 127.0.0.0/8, ::1) unless ``allow_remote``. No DNS lookup.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise TargetError(f"target {url!r} must be a ws:// or wss:// URL")
    if parts.query or parts.fragment:
        raise TargetError(f"target {url!r}: put the query in the scenario's 'query' key")
    host = parts.hostname
    if not host:
        raise TargetError(f"target {url!r} has no host")
    if not allow_remote and not _is_loopback(host):
        raise TargetError(
            f"refusing to send load to {host!r}: only loopback targets (localhost, "
            "127.0.0.0/8, ::1) are allowed without --allow-remote"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
