"""Structural validation of the Yjs v1 binary encodings the server hands to the CRDT core.

The CRDT core (yrs, behind pycrdt) sizes its buffers from the counts an encoding declares
before it reads the elements: a 10-byte state vector that claims 900 million entries makes it
allocate about a gigabyte and blocks the event loop for seconds. The functions here walk an
encoding once, without building anything, and refuse it unless every count and length fits in
the bytes that remain (each counted element takes at least one byte, so a count larger than
what is left is a lie) and every nesting depth is bounded. What passes decodes to structures
no larger than the bytes themselves; whether it also makes sense (known clients, valid UTF-8,
valid JSON) is left to the CRDT core, which reports that cheaply.

Layouts, as Yjs ``encoding.js`` / ``UpdateDecoderV1`` and yrs ``block.rs`` read them (every
integer a lib0 varuint unless said otherwise; ``ID`` is ``client, clock``)::

    state vector: count, count x (client, clock)
    update:       clients, clients x (structs, client, clock, structs x struct), delete set
    struct:       u8 info; info & 0x1F: 0 GC (len) | 10 Skip (len) | else an Item:
                  [ID origin if info & 0x80] [ID rightOrigin if info & 0x40]
                  [if neither: parentInfo (1: varstring root name | else ID parent),
                   varstring parentSub if info & 0x20]
                  content by info & 0x1F:
                    1 Deleted (len)          2 JSON (count, count + 1 x varstring: see below)
                    3 Binary (varbytes)      4 String (varstring)      5 Embed (varstring)
                    6 Format (varstring key, varstring JSON value)
                    7 Type (typeRef 0-6, 9 or 15; 3 XmlElement: varstring name)
                    8 Any (count, count x lib0 Any)
                    9 Doc (varstring guid, lib0 Any options)
    delete set:   clients, clients x (client, ranges, ranges x (clock, len))
    lib0 Any:     u8 tag: 127 undefined | 126 null | 125 signed varint | 124 float32 |
                  123 float64 | 122 int64 | 121 false | 120 true | 119 varstring |
                  118 object (count, count x (varstring key, Any)) |
                  117 array (count, count x Any) | 116 varbytes

Where Yjs and yrs read the same bytes differently, the validator reads them as yrs does, since
yrs is what allocates: were the two to disagree on where an element ends, a frame could carry a
count the validator never saw. yrs reads one more string in JSON content than the count says
(Yjs reads exactly the count; Yjs has written Any content instead since v13, so no current
client sends JSON content). Stricter than yrs where that is safe: what yrs knows only behind
features pycrdt does not enable (Move content 11, weak-link type 7), content kinds 12-31 (yrs
would read them modulo 16), parent info over 32 bits, and trailing bytes are refused: no Yjs
client writes them.

Every function is total and pure (no I/O, no pycrdt): it returns None or raises
:class:`protocol.errors.MalformedUpdate`, whatever the bytes, in time linear in their length.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from protocol.errors import MalformedUpdate
from protocol.varint import decode_varuint

MAX_ANY_DEPTH: Final = 64
"""Deepest nesting of lib0 ``Any`` objects and arrays accepted (the core recurses on it)."""

# yrs reads varints up to 64 bits: ten 7-bit groups.
_MAX_VARINT_BYTES: Final = 10
_MAX_UINT: Final = (1 << 64) - 1
_MAX_U32: Final = (1 << 32) - 1  # yrs reads parent info as a u32

# Skipping varints is most of the work (client ids take eight bytes each); the regular
# expression engine does it in C. A varint is up to nine bytes with the high bit set, then one
# without; ``match`` returns None when the bytes end first or the varint is too long.
_VARINT: Final = rb"[\x80-\xff]{0,9}[\x00-\x7f]"
_match_varint: Final = re.compile(_VARINT).match
_match_id: Final = re.compile(_VARINT * 2).match
_match_two_ids: Final = re.compile(_VARINT * 4).match

_REF_GC: Final = 0
_REF_SKIP: Final = 10
_HAS_ORIGIN: Final = 0x80
_HAS_RIGHT_ORIGIN: Final = 0x40
_HAS_PARENT_SUB: Final = 0x20
_HAS_ORIGINS: Final = _HAS_ORIGIN | _HAS_RIGHT_ORIGIN
_REF_STRING: Final = 4

_TYPE_XML_ELEMENT: Final = 3
_KNOWN_TYPE_REFS: Final = frozenset({0, 1, 2, 3, 4, 5, 6, 9, 15})


def validate_state_vector(state_vector: bytes) -> None:
    """Check that ``state_vector`` is one well-formed v1 state vector and nothing more.

    Raises MalformedUpdate when it is truncated, has trailing bytes, or declares more
    entries than its bytes can hold.
    """
    try:
        end = len(state_vector)
        count, pos = _uint(state_vector, 0)
        _bound(count, 2, end - pos, "state vector entries")
        for _ in range(count):
            pos = _skip_id(state_vector, pos)
        _finish(pos, end, "state vector")
    except IndexError:
        raise MalformedUpdate("truncated state vector") from None


def validate_update(update: bytes) -> None:
    """Check that ``update`` is one well-formed v1 update (structs, then a delete set).

    Raises MalformedUpdate when it is truncated, has trailing bytes, uses an unknown struct,
    content, type or ``Any`` kind, nests ``Any`` values deeper than :data:`MAX_ANY_DEPTH`,
    or declares a count or length its bytes cannot hold.
    """
    try:
        end = len(update)
        pos = _structs(update, 0, end)
        pos = _delete_set(update, pos, end)
        _finish(pos, end, "update")
    except IndexError:
        raise MalformedUpdate("truncated update") from None


def validate_delete_set(delete_set: bytes) -> None:
    """Check that ``delete_set`` is one well-formed v1 delete set and nothing more.

    Raises MalformedUpdate when it is truncated, has trailing bytes, or declares more
    clients or ranges than its bytes can hold.
    """
    try:
        end = len(delete_set)
        _finish(_delete_set(delete_set, 0, end), end, "delete set")
    except IndexError:
        raise MalformedUpdate("truncated delete set") from None


# -- primitives: each takes the position to read at and returns the position after ---------
# Reading past the end raises IndexError, which the public functions turn into
# MalformedUpdate: the hot path needs no bounds check of its own.


def _uint(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    for index in range(pos + 1, pos + _MAX_VARINT_BYTES):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > _MAX_UINT:
                raise MalformedUpdate("varuint exceeds 64 bits")
            return value, index + 1
        shift += 7
    raise MalformedUpdate(f"varint longer than {_MAX_VARINT_BYTES} bytes")


def _skip(data: bytes, pos: int) -> int:
    """Skip one varuint or signed varint (both end at the first byte below 0x80)."""
    if data[pos] < 0x80:
        return pos + 1
    return _skipped(_match_varint(data, pos))


def _skip_id(data: bytes, pos: int) -> int:
    return _skipped(_match_id(data, pos))


def _skipped(match: re.Match[bytes] | None) -> int:
    if match is None:
        raise MalformedUpdate(f"truncated varint or varint longer than {_MAX_VARINT_BYTES} bytes")
    return match.end()


def _bytes(data: bytes, pos: int) -> int:
    """Skip a length-prefixed byte array or string."""
    length, pos = _uint(data, pos)
    if length > len(data) - pos:
        raise MalformedUpdate(f"length {length} exceeds the {len(data) - pos} bytes left")
    return pos + length


def _fixed(data: bytes, pos: int, size: int) -> int:
    if size > len(data) - pos:
        raise MalformedUpdate("truncated fixed-size number")
    return pos + size


def _bound(count: int, min_bytes: int, left: int, what: str) -> None:
    """A count of elements of at least ``min_bytes`` each must fit in the ``left`` bytes."""
    if count * min_bytes > left:
        raise MalformedUpdate(f"{count} {what} cannot fit in the {max(left, 0)} bytes left")


def _finish(pos: int, end: int, what: str) -> None:
    if pos != end:
        raise MalformedUpdate(f"{end - pos} trailing bytes after the {what}")


# -- structs ------------------------------------------------------------------------------


def _structs(data: bytes, pos: int, end: int) -> int:
    clients, pos = _uint(data, pos)
    # A client section is at least three varuints: struct count, client, clock.
    _bound(clients, 3, end - pos, "clients")
    for _ in range(clients):
        count, pos = _uint(data, pos)
        pos = _skip_id(data, pos)
        # A struct is at least an info byte and one more byte.
        _bound(count, 2, end - pos, "structs")
        pos = _struct_run(data, pos, count)
    return pos


def _struct_run(data: bytes, pos: int, count: int) -> int:
    match_one_id, match_two_ids = _match_id, _match_two_ids
    for _ in range(count):
        info = data[pos]
        if info & 0x1F == _REF_STRING and info & _HAS_ORIGINS:
            # Typed text: a string after its origins, most of the structs of a document.
            match = (match_two_ids if info & _HAS_ORIGINS == _HAS_ORIGINS else match_one_id)(
                data, pos + 1
            )
            if match is None:
                raise MalformedUpdate("truncated or overlong origin id")
            pos = match.end()
            length = data[pos]
            if length < 0x80 and pos + 1 + length <= len(data):
                pos += 1 + length
            else:
                pos = _bytes(data, pos)
            continue
        ref = info & 0x1F
        if ref in (_REF_GC, _REF_SKIP):
            pos = _skip(data, pos + 1)
        else:
            pos = _item(data, pos + 1, info, ref)
    return pos


def _item(data: bytes, pos: int, info: int, ref: int) -> int:
    origins = info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN)
    if origins == _HAS_ORIGIN | _HAS_RIGHT_ORIGIN:
        pos = _skipped(_match_two_ids(data, pos))
    elif origins:
        pos = _skip_id(data, pos)
    else:
        # 1: the name of a root type follows; anything else (Yjs writes 0): a parent's ID.
        parent_info, pos = _uint(data, pos)
        if parent_info > _MAX_U32:
            raise MalformedUpdate("parent info exceeds 32 bits")
        pos = _bytes(data, pos) if parent_info == 1 else _skip_id(data, pos)
        if info & _HAS_PARENT_SUB:
            pos = _bytes(data, pos)
    content = _CONTENT[ref]
    if content is None:
        raise MalformedUpdate(f"unknown content kind {ref}")
    return content(data, pos)


def _content_json(data: bytes, pos: int) -> int:
    count, pos = _uint(data, pos)
    # yrs reads count + 1 strings (see the module docstring).
    _bound(count + 1, 1, len(data) - pos, "JSON values")
    for _ in range(count + 1):
        pos = _bytes(data, pos)
    return pos


def _content_format(data: bytes, pos: int) -> int:
    return _bytes(data, _bytes(data, pos))


def _content_type(data: bytes, pos: int) -> int:
    type_ref, pos = _uint(data, pos)
    if type_ref not in _KNOWN_TYPE_REFS:
        raise MalformedUpdate(f"unknown shared type {type_ref}")
    return _bytes(data, pos) if type_ref == _TYPE_XML_ELEMENT else pos


def _content_any(data: bytes, pos: int) -> int:
    count, pos = _uint(data, pos)
    _bound(count, 1, len(data) - pos, "values")
    for _ in range(count):
        pos = _any(data, pos, 0)
    return pos


def _content_doc(data: bytes, pos: int) -> int:
    return _any(data, _bytes(data, pos), 0)


_CONTENT: Final[tuple[Callable[[bytes, int], int] | None, ...]] = (
    None,  # 0: GC, handled by the caller
    _skip,  # 1: Deleted (len)
    _content_json,  # 2: JSON
    _bytes,  # 3: Binary
    _bytes,  # 4: String
    _bytes,  # 5: Embed
    _content_format,  # 6: Format
    _content_type,  # 7: Type
    _content_any,  # 8: Any
    _content_doc,  # 9: Doc
    None,  # 10: Skip, handled by the caller
    *((None,) * 21),  # 11-31: unknown (11 is yrs's Move: see the module docstring)
)


# -- lib0 Any -----------------------------------------------------------------------------

_ANY_EMPTY: Final = frozenset({127, 126, 121, 120})  # undefined, null, false, true
_ANY_FIXED: Final = {124: 4, 123: 8, 122: 8}  # float32, float64, int64
_ANY_SIGNED: Final = 125
_ANY_STRING: Final = 119
_ANY_OBJECT: Final = 118
_ANY_ARRAY: Final = 117
_ANY_BYTES: Final = 116


def _any(data: bytes, pos: int, depth: int) -> int:
    tag = data[pos]
    pos += 1
    if tag in _ANY_EMPTY:
        return pos
    if tag in (_ANY_STRING, _ANY_BYTES):
        return _bytes(data, pos)
    if tag == _ANY_SIGNED:
        return _skip(data, pos)
    size = _ANY_FIXED.get(tag)
    if size is not None:
        return _fixed(data, pos, size)
    if tag in (_ANY_ARRAY, _ANY_OBJECT):
        if depth >= MAX_ANY_DEPTH:
            raise MalformedUpdate(f"values nested deeper than {MAX_ANY_DEPTH}")
        return _any_container(data, pos, depth + 1, tag == _ANY_OBJECT)
    raise MalformedUpdate(f"unknown value tag {tag}")


def _any_container(data: bytes, pos: int, depth: int, is_object: bool) -> int:
    count, pos = _uint(data, pos)
    # An array element is at least its tag; an object entry adds at least a key length.
    _bound(count, 2 if is_object else 1, len(data) - pos, "entries")
    for _ in range(count):
        if is_object:
            pos = _bytes(data, pos)
        pos = _any(data, pos, depth)
    return pos


def _delete_set(data: bytes, pos: int, end: int) -> int:
    clients, pos = _uint(data, pos)
    # A client is at least its id and its range count; a range its clock and its length.
    _bound(clients, 2, end - pos, "delete set clients")
    for _ in range(clients):
        ranges, pos = _uint(data, _skip(data, pos))
        _bound(ranges, 2, end - pos, "deleted ranges")
        for _ in range(ranges):
            pos = _skip_id(data, pos)
    return pos


# -- readings the server needs of encodings yrs wrote (already well formed) ------------------


def decode_state_vector(data: bytes) -> dict[int, int]:
    """A y-protocols state vector: client id -> next expected clock.

    Raises MalformedMessage for bytes that are not one.
    """
    count, pos = decode_varuint(data, 0)
    clocks: dict[int, int] = {}
    for _ in range(min(count, len(data))):
        client, pos = decode_varuint(data, pos)
        clocks[client], pos = decode_varuint(data, pos)
    return clocks


def delete_set_ends(data: bytes, pos: int) -> dict[int, int]:
    """The delete set starting at ``pos``: client id -> end of its last deleted range.

    Ranges of one client are written in increasing clock order, so the last one ends
    furthest. Raises MalformedUpdate (a MalformedMessage) for bytes that are not a delete set.
    """
    clients, pos = decode_varuint(data, pos)
    ends: dict[int, int] = {}
    for _ in range(min(clients, len(data))):
        client, pos = decode_varuint(data, pos)
        ranges, pos = decode_varuint(data, pos)
        if ranges > len(data):
            raise MalformedUpdate("delete set claims more ranges than it has bytes")
        end = 0
        for _ in range(ranges):
            clock, pos = decode_varuint(data, pos)
            length, pos = decode_varuint(data, pos)
            end = max(end, clock + length)
        ends[client] = max(ends.get(client, 0), end)
    return ends
