"""The y-protocols awareness update: the presence states a client publishes.

Layout (``encodeAwarenessUpdate`` in y-protocols/awareness.js)::

    varuint count, then count times: varuint clientID, varuint clock, varstring JSON state

A JSON state of ``null`` means the client went away. States stay opaque JSON text here;
the server never needs to understand them, only who owns which client id.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.errors import MalformedMessage, MessageTooLarge
from protocol.varint import decode_varstring, decode_varuint, encode_varstring, encode_varuint

REMOVED_STATE = "null"


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state at a given clock; ``state == "null"`` means removed."""

    client_id: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        return self.state == REMOVED_STATE


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    entries: tuple[AwarenessEntry, ...]


def encode(update: AwarenessUpdate) -> bytes:
    """Encode an awareness update payload (the inside of an AwarenessMessage)."""
    parts = [encode_varuint(len(update.entries))]
    for entry in update.entries:
        parts.append(encode_varuint(entry.client_id))
        parts.append(encode_varuint(entry.clock))
        parts.append(encode_varstring(entry.state))
    return b"".join(parts)


def decode(payload: bytes, max_entries: int = 1024) -> AwarenessUpdate:
    """Decode an awareness update payload.

    Total: raises MalformedMessage on bad framing or trailing bytes, MessageTooLarge when it
    declares more than ``max_entries`` entries. The JSON text itself is not parsed.
    """
    count, pos = decode_varuint(payload, 0)
    if count > max_entries:
        raise MessageTooLarge(f"awareness update with {count} entries exceeds {max_entries}")
    size = len(payload)
    entries = []
    for _ in range(count):
        client_id, pos = decode_varuint(payload, pos)
        clock, pos = decode_varuint(payload, pos)
        state, pos = decode_varstring(payload, pos, size)
        entries.append(AwarenessEntry(client_id, clock, state))
    if pos != size:
        raise MalformedMessage(f"{size - pos} trailing bytes after the awareness update")
    return AwarenessUpdate(tuple(entries))
