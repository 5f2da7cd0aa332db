"""Identifiers of documents and sections, and the room names that carry them on the wire.

A business document `D` is edited through one outline room named `D` and one room per section
named `D/S`. The room name is the path a y-websocket client passes as its room
(`new WebsocketProvider('ws://host/ws', 'D/S', ydoc)`), so it arrives from the network and must
be checked before it is used as a key anywhere: an id is 1 to 64 characters of
`[A-Za-z0-9_-]`, the same rule for documents and sections. The rule keeps ids safe in URLs,
Redis keys (`collab:{documentId}:changes`), file names and log lines without escaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeGuard

from crdt.errors import CrdtError

MAX_ID_LENGTH: Final = 64
ROOM_SEPARATOR: Final = "/"

# ASCII only on purpose: `\w` would admit Unicode letters, which are not URL- or key-safe.
_ID_PATTERN: Final = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}")
# Bad input is echoed in error messages; cap it so a hostile name cannot flood the logs.
_ECHO_CHARS: Final = 80


class InvalidIdError(CrdtError, ValueError):
    """A document id, section id or room name breaks the id rules."""


class InvalidRoomName(InvalidIdError):
    """A room name is not `D` or `D/S` with valid ids.

    Named without the `Error` suffix because the name is part of the agreed API.
    """


def _is_valid_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _ID_PATTERN.fullmatch(value) is not None


def is_valid_document_id(value: object) -> TypeGuard[str]:
    """Tell whether `value` is a string of 1 to 64 characters of `[A-Za-z0-9_-]`.

    Never raises, whatever `value` is, so it can vet untrusted JSON directly.
    """
    return _is_valid_id(value)


def is_valid_section_id(value: object) -> TypeGuard[str]:
    """Tell whether `value` is a valid section id (same rule as document ids).

    Never raises, whatever `value` is.
    """
    return _is_valid_id(value)


def check_document_id(value: object) -> str:
    """Return `value` unchanged if it is a valid document id.

    Raises `InvalidIdError` otherwise.
    """
    if not is_valid_document_id(value):
        raise InvalidIdError(f"invalid document id: {_echo(value)}")
    return value


def check_section_id(value: object) -> str:
    """Return `value` unchanged if it is a valid section id.

    Raises `InvalidIdError` otherwise.
    """
    if not is_valid_section_id(value):
        raise InvalidIdError(f"invalid section id: {_echo(value)}")
    return value


@dataclass(frozen=True, slots=True)
class RoomName:
    """The parsed name of a room: the outline room `D` or the section room `D/S`.

    Constructing one validates both ids and raises `InvalidRoomName` when either is invalid, so
    every `RoomName` in the program is well formed and `str()` gives back its wire name.
    """

    document_id: str
    section_id: str | None = None

    def __post_init__(self) -> None:
        if not is_valid_document_id(self.document_id):
            raise InvalidRoomName(f"invalid document id in room name: {_echo(self.document_id)}")
        if self.section_id is not None and not is_valid_section_id(self.section_id):
            raise InvalidRoomName(f"invalid section id in room name: {_echo(self.section_id)}")

    @property
    def is_outline(self) -> bool:
        """True for the outline room `D`, false for a section room `D/S`."""
        return self.section_id is None

    def outline(self) -> RoomName:
        """The outline room of the same document (itself when already the outline)."""
        return self if self.section_id is None else RoomName(self.document_id)

    def __str__(self) -> str:
        if self.section_id is None:
            return self.document_id
        return f"{self.document_id}{ROOM_SEPARATOR}{self.section_id}"


RESERVED_PREFIX: Final = "__"


def is_reserved_id(value: str) -> bool:
    """Ids starting with ``__`` name things of the server's own (a channel for user events,
    the snapshot claim): clients may not open rooms or create documents with them."""
    return value.startswith(RESERVED_PREFIX)


def parse_room_name(name: str) -> RoomName:
    """Split a wire room name into its document id and optional section id.

    `"D"` gives `RoomName("D", None)` and `"D/S"` gives `RoomName("D", "S")`. Anything else
    (empty, an empty part, more than one slash, a character outside `[A-Za-z0-9_-]`, a part
    longer than 64 characters, an id starting with `__`) raises `InvalidRoomName`. Pure: no
    normalisation, so `str(parse_room_name(n)) == n` for every accepted `n`.
    """
    parts = name.split(ROOM_SEPARATOR)
    if any(is_reserved_id(part) for part in parts):
        raise InvalidRoomName(f"ids starting with '__' are reserved: {_echo(name)}")
    if len(parts) > 2:
        raise InvalidRoomName(f"room name has more than one '/': {_echo(name)}")
    if len(parts) == 1:
        return RoomName(parts[0])
    return RoomName(parts[0], parts[1])


def _echo(value: object) -> str:
    """A bounded `repr` of untrusted input for error messages."""
    text = repr(value)
    if len(text) <= _ECHO_CHARS:
        return text
    return f"{text[:_ECHO_CHARS]}... ({len(text)} chars)"
