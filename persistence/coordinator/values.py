"""The value types, limits and input checks of the coordinator port (:mod:`.coordinator`).

Shared by every adapter, so they cannot drift apart on what they accept and return. The
checks raise ValueError (``ValueTooLarge`` past a size limit) before any I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from crdt.ids import check_document_id, check_section_id
from persistence.errors import StorageCorrupted, ValueTooLarge

JsonObject = dict[str, Any]

MAX_TOKEN_LENGTH: Final = 128
MAX_TTL: Final = 30 * 86_400.0
MAX_COUNT: Final = 1000
MAX_TAIL_TIMEOUT: Final = 300.0
MAX_JSON_DEPTH: Final = 32
MAX_CURSOR_BYTES: Final = 4 * 1024
MAX_NOTIFICATION_BYTES: Final = 16 * 1024
MAX_SESSION_BYTES: Final = 64 * 1024
MAX_CACHE_BYTES: Final = 4 * 1024 * 1024
MAX_UPDATE_BYTES: Final = 8 * 1024 * 1024
MAX_NOTIFICATIONS: Final = 100
MAX_RATE_LIMIT: Final = 1_000_000_000
CACHE_TTL: Final = 3600.0
SESSION_TTL: Final = 86_400.0
STATS_TTL: Final = 3600.0
# How long a node's index of the documents it is present in outlives its last heartbeat:
# long enough for a node that stalled past its TTL to find and drop its stale entries.
NODE_INDEX_TTL: Final = 86_400.0
FIRST_ENTRY_ID: Final = "0-0"

_TOKEN: Final = re.compile(rf"[A-Za-z0-9_.@+=|~-]{{1,{MAX_TOKEN_LENGTH}}}")
_ENTRY_ID: Final = re.compile(r"(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")
_U64: Final = 2**64
_ECHO_CHARS: Final = 80


# -- value types -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlagRule:
    """A feature flag as stored: on or off, and for what percentage of users (None: all)."""

    enabled: bool
    rollout: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError("a flag is True or False")
        rollout: object = self.rollout
        if rollout is not None and (
            isinstance(rollout, bool) or not isinstance(rollout, int) or not 0 <= rollout <= 100
        ):
            raise ValueError("a rollout is a whole percentage, 0..100")

    def encode(self) -> bytes:
        """``1`` / ``0``, or ``1;37`` for a flag on for 37 % of users."""
        bit = b"1" if self.enabled else b"0"
        return bit if self.rollout is None else bit + b";" + str(self.rollout).encode()

    @classmethod
    def decode(cls, raw: bytes) -> FlagRule:
        """The inverse of :meth:`encode`; ValueError for anything else."""
        bit, sep, rest = raw.partition(b";")
        if bit not in (b"1", b"0") or (sep and not rest.isdigit()) or len(rest) > 3:
            raise ValueError("not a flag value")
        return cls(bit == b"1", int(rest) if sep else None)


@dataclass(frozen=True, slots=True)
class Presence:
    """One connection present in a document: in a section room, or the outline (None)."""

    document_id: str
    section_id: str | None
    user_id: str
    node_id: str
    connection_id: str
    joined_at: float


@dataclass(frozen=True, slots=True)
class Cursor:
    """A user's cursor and selection in a section (any JSON value the editor sends)."""

    document_id: str
    section_id: str | None
    user_id: str
    value: Any
    updated_at: float


@dataclass(frozen=True, slots=True)
class Lock:
    """A section lock as held. ``token`` is the fencing token: it strictly increases each
    time the lock key passes to a new holder (a renewal keeps it), so a store can refuse a
    write carrying an older token than one it has seen. ``expires_at`` is an estimate on the
    adapter's clock (Redis keeps the real deadline)."""

    document_id: str
    section_id: str
    owner: str
    token: int
    acquired_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One entry of a document's change stream. ``id`` is ``"<ms>-<seq>"`` (Redis stream
    ids); ids of one document strictly increase in append order."""

    id: str
    document_id: str
    section_id: str | None
    update: bytes
    origin: str | None


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one rate-limited action. ``retry_after`` is 0.0 when allowed."""

    allowed: bool
    remaining: int
    retry_after: float


@dataclass(frozen=True, slots=True)
class DurabilityReport:
    """What the backend says about keeping writes across a crash.

    ``durable`` is true only when every acknowledged write is on disk: AOF on with
    ``appendfsync always``. The server refuses durable service mode otherwise.
    """

    backend: str
    aof_enabled: bool
    appendfsync: str | None
    detail: str

    @property
    def durable(self) -> bool:
        return self.aof_enabled and self.appendfsync == "always"


# -- validation shared by the adapters -------------------------------------------------------


def echo(value: object) -> str:
    """A bounded ``repr`` of untrusted input for error messages."""
    text = repr(value)
    return text if len(text) <= _ECHO_CHARS else f"{text[:_ECHO_CHARS]}... ({len(text)} chars)"


def check_token(value: object, what: str) -> str:
    """Return ``value`` if it is a token (see the module docstring); ValueError otherwise."""
    if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
        raise ValueError(
            f"{what} must be 1..{MAX_TOKEN_LENGTH} characters of [A-Za-z0-9_.@+=|~-], "
            f"not {echo(value)}"
        )
    return value


def check_section(value: object) -> str | None:
    """A section id, or None for the outline room."""
    return None if value is None else check_section_id(value)


def check_ttl(value: object, what: str = "ttl") -> float:
    """Float seconds in (0, MAX_TTL]; ValueError otherwise (bools and NaN included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds, not {echo(value)}")
    if not (math.isfinite(value) and 0 < value <= MAX_TTL):
        raise ValueError(f"{what} must be in (0, {MAX_TTL:g}] seconds, not {value!r}")
    return float(value)


def check_timeout(value: object) -> float:
    """A wait in [0, MAX_TAIL_TIMEOUT] seconds (0: do not wait); ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"timeout must be a number of seconds, not {echo(value)}")
    if not (math.isfinite(value) and 0 <= value <= MAX_TAIL_TIMEOUT):
        raise ValueError(f"timeout must be in [0, {MAX_TAIL_TIMEOUT:g}] seconds, not {value!r}")
    return float(value)


def ttl_ms(ttl: float) -> int:
    """A checked TTL in whole milliseconds, at least 1 (Redis ``PX``)."""
    return max(1, math.ceil(ttl * 1000))


def check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an int in {low}..{high}, not {echo(value)}")
    return value


def check_count(value: object) -> int:
    return check_int(value, "count", 1, MAX_COUNT)


def parse_entry_id(value: object) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a pair of ints; ValueError for anything else."""
    match = _ENTRY_ID.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match[1]) >= _U64 or int(match[2]) >= _U64:
        raise ValueError(f"entry id must be '<ms>-<seq>', not {echo(value)}")
    return int(match[1]), int(match[2])


def check_update(value: object) -> bytes:
    if not isinstance(value, bytes) or not value:
        raise ValueError("an update must be non-empty bytes")
    if len(value) > MAX_UPDATE_BYTES:
        raise ValueTooLarge(f"update of {len(value)} bytes exceeds {MAX_UPDATE_BYTES}")
    return value


def _check_json(value: object, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON value nested deeper than {MAX_JSON_DEPTH}")
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("JSON values cannot hold NaN or infinity")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"JSON object keys must be strings, not {echo(key)}")
            _check_json(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_json(item, depth + 1)
    else:
        raise ValueError(f"not a JSON value: {type(value).__name__}")


def encode_json(value: object, what: str, max_bytes: int, *, object_only: bool = True) -> bytes:
    """Compact UTF-8 JSON of a plain JSON value (an object unless ``object_only`` is false).

    ValueError for anything else; ValueTooLarge past ``max_bytes``.
    """
    if object_only and not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object (a mapping), not {type(value).__name__}")
    _check_json(value, 0)
    data = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    if len(data) > max_bytes:
        raise ValueTooLarge(f"{what} of {len(data)} bytes exceeds {max_bytes}")
    return data


def decode_json(data: bytes | str, what: str) -> Any:
    """Parse JSON an adapter stored; StorageCorrupted if it is not JSON."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StorageCorrupted(f"stored {what} is not JSON: {exc}") from exc


def decode_object(data: bytes | str, what: str) -> JsonObject:
    """Parse a JSON object an adapter stored; StorageCorrupted if it is anything else."""
    value = decode_json(data, what)
    if not isinstance(value, dict):
        raise StorageCorrupted(f"stored {what} is not a JSON object")
    return value


def check_join(
    document_id: str,
    section_id: str | None,
    user_id: str,
    node_id: str,
    connection_id: str,
    ttl: float,
) -> float:
    """Check the arguments of ``presence.join`` (every adapter); returns the checked ttl."""
    check_document_id(document_id)
    check_section(section_id)
    check_token(user_id, "user id")
    check_connection(node_id, connection_id)
    return check_ttl(ttl)


def check_connection(node_id: str, connection_id: str) -> None:
    """Check a (node, connection) pair, the key of a presence entry."""
    check_token(node_id, "node id")
    check_token(connection_id, "connection id")
