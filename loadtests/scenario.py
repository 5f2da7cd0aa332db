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

SCENARIO_DIR: Final = Path(__file__).parent / "scenarios"

Listeners = Literal["passive", "applying"]

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
        return dataclasses.asdict(self)


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
    if problems:
        raise ScenarioError(f"{source}: invalid scenario:\n  - " + "\n  - ".join(problems))
    if values.get("idle"):
        values.setdefault("writers_per_room", 0)
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
