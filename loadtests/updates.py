"""Identify the edits an update carries, on the wire, without applying it.

A Yjs v1 update (``writeStructs`` / ``Item.write`` in yjs/src/utils/encoding.js and
yjs/src/structs/Item.js; yrs writes the same bytes) starts with::

    varuint numClients
    then per client: varuint numStructs, varuint clientID, varuint clock, then the structs

A single insert made by one client produces an update with one client and one struct whose
clock is the client's clock before the edit, so ``(clientID, clock)`` names the edit:
:func:`update_header` reads just that. A server may also merge several updates into one frame
(one per recipient instead of one per update); :func:`update_ranges` then walks every struct,
skipping its content, and returns the clock range each client's structs cover.

Deletions carry no struct (only a delete set) and cannot be named this way, which is why the
load tool's writers only insert.
"""

from __future__ import annotations

from typing import Final

from protocol.errors import MalformedMessage
from protocol.varint import decode_varbytes, decode_varuint

EditId = tuple[int, int]
"""``(client_id, clock)`` of the first struct of an update."""

ClockRange = tuple[int, int, int]
"""``(client_id, first clock, end clock)``: the structs of one client, end excluded."""

_STRUCT_GC: Final = 0
_STRUCT_SKIP: Final = 10
_BITS5: Final = 0x1F
_HAS_ORIGIN: Final = 0x80
_HAS_RIGHT_ORIGIN: Final = 0x40
_HAS_PARENT_SUB: Final = 0x20
_XML_ELEMENT: Final = 3
_XML_HOOK: Final = 5
_MAX_DEPTH: Final = 64


def update_header(update: bytes) -> EditId | None:
    """Return ``(client_id, clock)`` of the update's first struct, or None if it has none.

    Pure; raises :class:`protocol.errors.MalformedMessage` when the bytes end inside the
    header. Only the header is read: the rest of the update is not validated.
    """
    num_clients, pos = decode_varuint(update, 0)
    if num_clients == 0:
        return None
    num_structs, pos = decode_varuint(update, pos)
    if num_structs == 0:
        return None
    client, pos = decode_varuint(update, pos)
    clock, _ = decode_varuint(update, pos)
    return client, clock


def update_ranges(update: bytes) -> list[ClockRange]:
    """Every run of structs in the update as ``(client, start, end)`` clock ranges.

    Skip structs (gaps of a merged update) split a client's run; GC structs (content
    deleted since) count as carried. The delete set is not read. Pure; raises
    MalformedMessage for bytes that are not a v1 update.
    """
    size = len(update)
    num_clients, pos = decode_varuint(update, 0)
    ranges: list[ClockRange] = []
    for _ in range(num_clients):
        num_structs, pos = decode_varuint(update, pos)
        client, pos = decode_varuint(update, pos)
        clock, pos = decode_varuint(update, pos)
        start = clock
        for _ in range(num_structs):
            if pos >= size:
                raise MalformedMessage("update ends inside its structs")
            info = update[pos]
            pos += 1
            if info == _STRUCT_SKIP:
                length, pos = decode_varuint(update, pos)
                if clock > start:
                    ranges.append((client, start, clock))
                clock += length
                start = clock
                continue
            if info == _STRUCT_GC:
                length, pos = decode_varuint(update, pos)
            else:
                length, pos = _skip_item(update, pos, info)
            clock += length
        if clock > start:
            ranges.append((client, start, clock))
    return ranges


def _skip_item(data: bytes, pos: int, info: int) -> tuple[int, int]:
    """Skip an Item after its info byte; return ``(clock length, next position)``."""
    size = len(data)
    if info & _HAS_ORIGIN:
        pos = _skip_varuints(data, pos, 2)
    if info & _HAS_RIGHT_ORIGIN:
        pos = _skip_varuints(data, pos, 2)
    if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):
        is_key, pos = decode_varuint(data, pos)
        if is_key:
            _, pos = decode_varbytes(data, pos, size)
        else:
            pos = _skip_varuints(data, pos, 2)
        if info & _HAS_PARENT_SUB:
            _, pos = decode_varbytes(data, pos, size)
    return _skip_content(data, pos, info & _BITS5)


def _skip_content(data: bytes, pos: int, ref: int) -> tuple[int, int]:
    size = len(data)
    if ref == 1:  # ContentDeleted: its length
        return decode_varuint(data, pos)
    if ref == 2:  # ContentJSON: count, then one JSON string each
        count, pos = decode_varuint(data, pos)
        for _ in range(count):
            _, pos = decode_varbytes(data, pos, size)
        return count, pos
    if ref in (3, 5):  # ContentBinary (bytes), ContentEmbed (JSON string)
        _, pos = decode_varbytes(data, pos, size)
        return 1, pos
    if ref == 4:  # ContentString: the clock counts UTF-16 code units, as JavaScript does
        raw, pos = decode_varbytes(data, pos, size)
        return _utf16_length(raw), pos
    if ref == 6:  # ContentFormat: key, JSON value
        _, pos = decode_varbytes(data, pos, size)
        _, pos = decode_varbytes(data, pos, size)
        return 1, pos
    if ref == 7:  # ContentType: type ref, and a node name for XML elements and hooks
        type_ref, pos = decode_varuint(data, pos)
        if type_ref in (_XML_ELEMENT, _XML_HOOK):
            _, pos = decode_varbytes(data, pos, size)
        return 1, pos
    if ref == 8:  # ContentAny: count, then one lib0 "any" value each
        count, pos = decode_varuint(data, pos)
        for _ in range(count):
            pos = _skip_any(data, pos, 0)
        return count, pos
    if ref == 9:  # ContentDoc: guid, options
        _, pos = decode_varbytes(data, pos, size)
        return 1, _skip_any(data, pos, 0)
    raise MalformedMessage(f"unknown struct content type {ref}")


def _utf16_length(raw: bytes) -> int:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage("string content is not valid UTF-8") from exc
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _skip_any(data: bytes, pos: int, depth: int) -> int:
    """Skip one lib0 ``writeAny`` value (lib0/encoding.js)."""
    if depth > _MAX_DEPTH:
        raise MalformedMessage("'any' value nested too deeply")
    if pos >= len(data):
        raise MalformedMessage("update ends inside an 'any' value")
    kind = data[pos]
    pos += 1
    if kind in (127, 126, 121, 120):  # undefined, null, false, true
        return pos
    if kind == 125:  # signed varint: ends at the first byte without the high bit
        return _skip_varuints(data, pos, 1)
    fixed = {124: 4, 123: 8, 122: 8}.get(kind)  # float32, float64, bigint64
    if fixed is not None:
        if pos + fixed > len(data):
            raise MalformedMessage("update ends inside a number")
        return pos + fixed
    if kind in (119, 116):  # string, Uint8Array
        _, pos = decode_varbytes(data, pos, len(data))
        return pos
    if kind == 118:  # object: count, then key and value pairs
        count, pos = decode_varuint(data, pos)
        for _ in range(count):
            _, pos = decode_varbytes(data, pos, len(data))
            pos = _skip_any(data, pos, depth + 1)
        return pos
    if kind == 117:  # array
        count, pos = decode_varuint(data, pos)
        for _ in range(count):
            pos = _skip_any(data, pos, depth + 1)
        return pos
    raise MalformedMessage(f"unknown 'any' type {kind}")


def _skip_varuints(data: bytes, pos: int, count: int) -> int:
    size = len(data)
    for _ in range(count):
        while True:
            if pos >= size:
                raise MalformedMessage("truncated varint")
            byte = data[pos]
            pos += 1
            if byte < 0x80:
                break
    return pos
