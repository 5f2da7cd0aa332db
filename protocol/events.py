"""Application events: versioned msgpack maps inside :class:`protocol.ysync.AppEventMessage`.

An event is a map with at least ``type`` (str) and ``v`` (int, the event schema version).
The other keys depend on the type and are documented in ``docs/protocol.md``. Decoding uses
msgpack's size limits and ``strict_map_key`` so a hostile peer cannot make us allocate
unboundedly or build maps with non-string keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from protocol.errors import MalformedMessage, MessageTooLarge

EVENT_VERSION: Final = 1
MAX_EVENT_BYTES: Final = 64 * 1024
# Arrays and maps nested deeper than this are refused: handlers (and json.dumps when a field
# is stored) walk the values recursively.
MAX_EVENT_DEPTH: Final = 32


@dataclass(frozen=True, slots=True)
class AppEvent:
    """One application event: its ``type``, schema version and the remaining fields."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    version: int = EVENT_VERSION

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


def _string_keyed_map(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    # strict_map_key still admits bytes keys; events are JSON-like, so only str keys.
    for key, _ in pairs:
        if not isinstance(key, str):
            raise ValueError(f"map key of type {type(key).__name__}")
    return dict(pairs)


def _check_depth(value: Any, max_depth: int) -> None:
    """MalformedMessage when arrays and maps nest deeper than ``max_depth``; iterative."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= max_depth:
            raise MalformedMessage(f"event nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def _no_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack ext type {code} is not allowed in events")


def encode_event(event: AppEvent) -> bytes:
    """Pack an event into msgpack bytes.

    Raises ValueError if ``fields`` uses the reserved keys ``type`` or ``v``, TypeError for
    values msgpack cannot pack.
    """
    if "type" in event.fields or "v" in event.fields:
        raise ValueError("event fields may not use the reserved keys 'type' and 'v'")
    body: dict[str, Any] = {"type": event.type, "v": event.version}
    body.update(event.fields)
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode_event(payload: bytes, max_bytes: int = MAX_EVENT_BYTES) -> AppEvent:
    """Unpack an event.

    Total: raises MessageTooLarge over ``max_bytes`` and MalformedMessage for anything that is
    not a msgpack map with a string ``type`` and an integer ``v``, or that nests arrays and
    maps deeper than ``MAX_EVENT_DEPTH``.
    """
    if len(payload) > max_bytes:
        raise MessageTooLarge(f"event of {len(payload)} bytes exceeds {max_bytes}")
    try:
        body = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            object_pairs_hook=_string_keyed_map,
            ext_hook=_no_ext,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=4096,
            max_map_len=1024,
            max_ext_len=0,
        )
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        RecursionError,
    ) as exc:
        raise MalformedMessage(f"event is not valid msgpack: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedMessage("event is not a msgpack map")
    _check_depth(body, MAX_EVENT_DEPTH)
    kind = body.pop("type", None)
    version = body.pop("v", None)
    if not isinstance(kind, str) or not kind:
        raise MalformedMessage("event has no string 'type'")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MalformedMessage("event has no integer 'v'")
    return AppEvent(kind, body, version)
