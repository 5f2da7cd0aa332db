"""Comment anchors: a range of a section's text that follows the text as it is edited.

An anchor is two CRDT sticky indexes (Yjs "relative positions") plus the text they enclosed
when the anchor was made. A sticky index names a character by its CRDT id (client, clock)
instead of by its offset, so the range keeps pointing at the same characters whatever is
inserted or deleted around them, on every replica, in whatever order updates arrive.

Associations (what happens to text typed exactly at an edge):

* ``start`` sticks to the first character of the range (``Assoc.AFTER``: the sticky index
  is "just before this character");
* ``end`` sticks to the last character of the range (``Assoc.BEFORE``: "just after this
  character").

Text typed just before the range lands before its first character, text typed just after it
lands after its last character: both stay outside. The range never grows at its edges (typing
next to a commented phrase does not drag the new words into the comment) and never loses its
own characters to an edit next to it; text typed strictly inside the range is inside it. The
resolved range is always "every live character from the first anchored character to the last
one, inclusive" (a deleted edge resolves to where its character was).

Orphans: each edge holds on to one character. An anchor is :class:`Orphaned` when both edge
characters are deleted (or the range is empty). Then what lies between the two deleted edges
is at most text typed there by someone else, or a remnant of the quoted text whose beginning
and end are gone, and the comment is shown as detached rather than pointing at it. Deletions
are permanent in a CRDT, so once orphaned an anchor stays orphaned, and replicas that have seen
the same updates agree on the result.

Index units: pycrdt's ``Text`` takes and returns UTF-8 byte offsets for ``len``, ``insert``
and ``del``. Its sticky indexes are worse: with the byte offsets pycrdt's documents use, Yrs
(0.14) mixes bytes (across items) with UTF-16 units (inside an item) both when it makes a
sticky index from an offset and when it turns one back into an offset, so
``Text.sticky_index(i).get_index()`` is wrong (or panics) as soon as a non-ASCII character
precedes ``i`` inside the same item. This module therefore never asks pycrdt to make a sticky
index from an offset, and never takes its ``get_index`` as an offset of a live character:

* the id of the character at an offset is read by deleting that character in a scratch copy
  of the document and decoding the delete set of that transaction (ids are exact there);
* the offset of a live character is found by bisection: ``get_index`` is wrong in its units
  but strictly increasing along the text, so comparing it with the values of probed
  characters finds the character (its id is then checked for an exact match);
* a deleted character's ``get_index`` counts only whole live items to its left, which is an
  exact UTF-8 byte offset.

The API takes and returns Python string offsets (code points) only. ``Text`` embeds
(``insert_embed``) are not supported: a section's ``content`` is plain markdown, and embeds do
not appear in ``str(text)``. Creating and resolving copy the document at most once per call (cheap
for a section, and never on a hot path); :func:`resolve_anchors` shares one copy among many.

Pure code: no I/O, and nothing is written to the document passed in. Decoding never lets
garbage reach the CRDT core (which panics on it): the bytes are parsed here first, and
whatever is not an anchor of this text raises :class:`InvalidAnchor` (a ``ValueError``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pycrdt import Assoc, Doc, StickyIndex, Subscription, Text, TransactionEvent

from crdt.errors import CrdtError

# Sticky index wire format (Yjs ``writeRelativePosition``): a varuint scope tag (0: a
# character id, 1: a root type's name, 2: a nested type's id), the scope, then the
# association as a lib0 signed varint (0: after, -1: before).
_ITEM_SCOPE = 0
_ROOT_SCOPE = 1
_AFTER = int(Assoc.AFTER)
_BEFORE = int(Assoc.BEFORE)
_MAX_VARINT_BYTES = 10

CharId = tuple[int, int]  # (client, clock) of one UTF-16 unit


class InvalidAnchor(CrdtError, ValueError):
    """Bytes that are not an anchor of this text: garbage, another doc's, another type's."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """A commented range, as stored: two encoded sticky indexes and the quoted text.

    ``start`` and ``end`` are opaque bytes (store them as they are); ``quote`` is the text the
    range held when the anchor was made.
    """

    start: bytes
    end: bytes
    quote: str

    def __post_init__(self) -> None:
        edges: tuple[object, ...] = (self.start, self.end)
        if not all(isinstance(edge, bytes) for edge in edges):
            raise TypeError("anchor start and end must be bytes")
        quote: object = self.quote
        if not isinstance(quote, str):
            raise TypeError("anchor quote must be a string")


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where an anchor lies now: ``str(text)[start:end]`` (code points) is ``content``."""

    start: int
    end: int
    content: str


@dataclass(frozen=True, slots=True)
class Orphaned:
    """The anchored text was deleted: the comment no longer points into the text."""

    quote: str


def create_anchor(text: Text, start: int, end: int) -> Anchor:
    """An anchor on ``str(text)[start:end]`` (code-point offsets).

    ``text`` must be a root ``Text`` of an integrated document (a section's ``content``);
    nothing is written to it. Raises ValueError unless ``0 <= start < end <= len(str(text))``
    (an anchor needs at least one character to hold on to) with int offsets, or when
    ``text`` is not a root type.
    """
    value = str(text)
    for name, offset in (("start", start), ("end", end)):
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise ValueError(f"anchor {name} must be an int, not {type(offset).__name__}")
    if not 0 <= start < end <= len(value):
        raise ValueError(
            f"anchor range [{start}, {end}) must satisfy 0 <= start < end <= {len(value)}"
        )
    with _Probe(text, value) as probe:
        first_client, first_clock, _ = probe.char_at(start)
        last_client, last_clock, last_units = probe.char_at(end - 1)
    return Anchor(
        _encode(first_client, first_clock, _AFTER),
        _encode(last_client, last_clock + last_units - 1, _BEFORE),
        value[start:end],
    )


def resolve_anchor(text: Text, anchor: Anchor) -> Resolved | Orphaned:
    """Where ``anchor`` lies in ``text`` now, or :class:`Orphaned` (see the module docstring).

    Raises InvalidAnchor when ``anchor.start`` / ``anchor.end`` are not the sticky indexes
    :func:`create_anchor` makes, name a character this document does not hold (another
    document, or an update not received yet), or name a live character of another type.
    """
    return resolve_anchors(text, [anchor])[0]


def resolve_anchors(text: Text, anchors: Sequence[Anchor]) -> list[Resolved | Orphaned]:
    """:func:`resolve_anchor` for many anchors of one text, sharing one scratch copy."""
    value = str(text)
    known = _state_vector(text.doc.get_state())
    results: list[Resolved | Orphaned] = []
    with _Probe(text, value) as probe:
        for anchor in anchors:
            results.append(_resolve_one(text, probe, known, value, anchor))
    return results


def _resolve_one(
    text: Text, probe: _Probe, known: dict[int, int], value: str, anchor: Anchor
) -> Resolved | Orphaned:
    """One anchor of :func:`resolve_anchors`, with the shared probe and state vector."""
    first = _parse(anchor.start, "start", _AFTER)
    last = _parse(anchor.end, "end", _BEFORE)
    for name, (client, clock) in (("start", first), ("end", last)):
        if clock >= known.get(client, 0):
            raise InvalidAnchor(f"anchor {name} names a character this document does not hold")
    start, start_live = _locate(text, probe, first)
    end, end_live = _locate(text, probe, last)
    if end_live:
        end += 1  # the edge is just after its (last) character
    if not (start_live or end_live) or start >= end:
        return Orphaned(anchor.quote)
    return Resolved(start, end, value[start:end])


def _locate(text: Text, probe: _Probe, char: CharId) -> tuple[int, bool]:
    """The code-point offset of a character and whether it is live.

    Live: the offset of the character itself. Deleted: where it was (the offset of the first
    live character after it).
    """
    client, clock = char
    after = _raw_index(text, client, clock, _AFTER)
    before = _raw_index(text, client, clock, _BEFORE)
    if before == after:  # both associations collapse on a deleted character
        return probe.code_point_at_byte(after), False
    if before != after + 1:
        raise InvalidAnchor("the anchor does not name a character of this text")
    return probe.find(char, after), True


def _raw_index(text: Text, client: int, clock: int, assoc: int) -> int:
    data: dict[str, Any] = {"item": {"client": client, "clock": clock}, "assoc": assoc}
    return StickyIndex.from_json(data, text).get_index()


class _Probe:
    """Character ids by offset, read from a scratch copy of the document (made on demand).

    Deleting one character in the copy yields a transaction whose update is just a delete
    set naming that character's units: its exact id. Each character is probed at most once;
    offsets stay those of the original text.
    """

    __slots__ = (
        "_bytes",
        "_deleted",
        "_ids",
        "_root",
        "_scratch",
        "_subscription",
        "_text",
        "_updates",
        "_value",
    )

    def __init__(self, text: Text, value: str) -> None:
        self._text = text
        self._value = value
        self._bytes = value.encode("utf-8", "surrogatepass")
        self._root = _root_name(text)
        self._scratch: Text | None = None
        self._updates: list[bytes] = []
        self._deleted: list[int] = []  # offsets (in the original) deleted in the copy
        self._ids: dict[int, tuple[int, int, int]] = {}
        self._subscription: tuple[Doc[Any], Subscription] | None = None

    def __enter__(self) -> _Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the scratch copy (a pycrdt Doc with an observer is never freed while the
        subscription lives). Idempotent."""
        if self._subscription is not None:
            doc, subscription = self._subscription
            self._subscription = None
            doc.unobserve(subscription)

    def _copy(self) -> Text:
        if self._scratch is None:
            doc: Doc[Any] = Doc()
            doc.apply_update(self._text.doc.get_update())
            self._subscription = (doc, doc.observe(self._on_transaction))
            self._scratch = doc.get(self._root, type=Text)
        return self._scratch

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._updates.append(event.update)

    def char_at(self, offset: int) -> tuple[int, int, int]:
        """``(client, clock, units)`` of the character at ``offset`` (code points)."""
        cached = self._ids.get(offset)
        if cached is not None:
            return cached
        scratch = self._copy()
        local = offset - bisect.bisect_left(self._deleted, offset)
        current = str(scratch)
        begin = len(current[:local].encode("utf-8", "surrogatepass"))
        size = len(current[local].encode("utf-8", "surrogatepass"))
        self._updates.clear()
        del scratch[begin : begin + size]
        bisect.insort(self._deleted, offset)
        if len(self._updates) != 1:
            raise CrdtError("deleting one character made no single transaction")
        found = _deleted_units(self._updates[0])
        self._ids[offset] = found
        return found

    def find(self, char: CharId, raw: int) -> int:
        """The offset of the live character holding unit ``char``, whose raw index is ``raw``.

        Raw indexes increase strictly along the text and never exceed the character's UTF-8
        offset, so the search starts at the character that byte offset falls in.
        """
        client, clock = char
        low, high = self.code_point_at_byte(min(raw, len(self._bytes))), len(self._value)
        while low < high:
            middle = (low + high) // 2
            other_client, other_clock, units = self.char_at(middle)
            if other_client == client and other_clock <= clock < other_clock + units:
                return middle
            if _raw_index(self._text, other_client, other_clock, _AFTER) < raw:
                low = middle + 1
            else:
                high = middle
        raise InvalidAnchor("the anchor names a character of another shared type")

    def code_point_at_byte(self, offset: int) -> int:
        """The code-point offset of a UTF-8 byte offset; InvalidAnchor if it is not one."""
        if not 0 <= offset <= len(self._bytes):
            raise InvalidAnchor("the anchor does not name a character of this text")
        return len(self._bytes[:offset].decode("utf-8", "ignore"))


def _root_name(text: Text) -> str:
    """The name of a root text (read from a type-scoped sticky index); ValueError otherwise."""
    # BEFORE at offset 0 is always scoped to the type itself: safe for any text, even empty.
    reader = _Reader(text.sticky_index(0, Assoc.BEFORE).encode(), "scope")
    if reader.varuint() != _ROOT_SCOPE:
        raise ValueError("anchors are made on a root text (a section's content)")
    return reader.string()


# -- encodings -------------------------------------------------------------------------------


def _encode(client: int, clock: int, assoc: int) -> bytes:
    data: dict[str, Any] = {"item": {"client": client, "clock": clock}, "assoc": assoc}
    encoded: bytes = StickyIndex.from_json(data).encode()
    return encoded


def _parse(data: object, name: str, assoc: int) -> CharId:
    """The character id of an encoded anchor edge; InvalidAnchor for anything else."""
    if not isinstance(data, bytes):
        raise InvalidAnchor(f"anchor {name} must be bytes")
    reader = _Reader(data, f"anchor {name}")
    if reader.varuint() != _ITEM_SCOPE:
        raise InvalidAnchor(f"anchor {name} does not name a character")
    client, clock = reader.varuint(), reader.varuint()
    if reader.varint() != assoc:
        raise InvalidAnchor(f"anchor {name} has the wrong association")
    if not reader.at_end():
        raise InvalidAnchor(f"anchor {name} has trailing bytes")
    return client, clock


def _state_vector(data: bytes) -> dict[int, int]:
    reader = _Reader(data, "state vector")
    return {reader.varuint(): reader.varuint() for _ in range(reader.varuint())}


def _deleted_units(update: bytes) -> tuple[int, int, int]:
    """``(client, clock, units)`` of the one range an update of a lone deletion holds."""
    reader = _Reader(update, "deletion")
    structs = reader.varuint()
    clients = reader.varuint()
    client = reader.varuint()
    ranges = reader.varuint()
    clock, units = reader.varuint(), reader.varuint()
    if (structs, clients, ranges) != (0, 1, 1) or not reader.at_end() or units < 1:
        raise CrdtError("a one-character deletion did not delete one range")
    return client, clock, units


class _Reader:
    """lib0 varints and strings over bytes; InvalidAnchor when they run out or overflow."""

    __slots__ = ("_data", "_name", "_position")

    def __init__(self, data: bytes, name: str) -> None:
        self._data = data
        self._name = name
        self._position = 0

    def _byte(self) -> int:
        if self._position >= len(self._data):
            raise InvalidAnchor(f"{self._name} is truncated")
        byte = self._data[self._position]
        self._position += 1
        return byte

    def varuint(self) -> int:
        value = shift = 0
        for _ in range(_MAX_VARINT_BYTES):
            byte = self._byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise InvalidAnchor(f"{self._name} holds an overlong number")

    def varint(self) -> int:
        byte = self._byte()
        negative, value, shift = bool(byte & 0x40), byte & 0x3F, 6
        for _ in range(_MAX_VARINT_BYTES):
            if byte < 0x80:
                return -value if negative else value
            byte = self._byte()
            value |= (byte & 0x7F) << shift
            shift += 7
        raise InvalidAnchor(f"{self._name} holds an overlong number")

    def string(self) -> str:
        size = self.varuint()
        if self._position + size > len(self._data):
            raise InvalidAnchor(f"{self._name} is truncated")
        chunk = self._data[self._position : self._position + size]
        self._position += size
        return chunk.decode("utf-8", "replace")

    def at_end(self) -> bool:
        return self._position == len(self._data)
