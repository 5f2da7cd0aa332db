"""lib0 variable-length integers, byte arrays and strings (the framing of y-protocols).

lib0 writes an unsigned integer seven bits at a time, least significant group first, with the
high bit of each byte set when more bytes follow. JavaScript numbers are exact up to 2**53, so
lib0 refuses longer integers; so do we.
"""

from __future__ import annotations

from protocol.errors import MalformedMessage

MAX_VARUINT = (1 << 53) - 1
_MAX_VARUINT_BYTES = 8  # ceil(53 / 7)


def encode_varuint(value: int) -> bytes:
    """Encode ``0 <= value <= 2**53 - 1``; raises ValueError outside that range."""
    if not 0 <= value <= MAX_VARUINT:
        raise ValueError(f"varuint out of range: {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varuint(data: bytes, pos: int) -> tuple[int, int]:
    """Read a varuint at ``pos``; return ``(value, next_pos)``.

    Raises MalformedMessage when the buffer ends inside the integer or it exceeds 2**53 - 1.
    """
    value = 0
    shift = 0
    end = len(data)
    for _ in range(_MAX_VARUINT_BYTES):
        if pos >= end:
            raise MalformedMessage("truncated varuint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value > MAX_VARUINT:
                raise MalformedMessage("varuint exceeds 2**53 - 1")
            return value, pos
        shift += 7
    raise MalformedMessage("varuint longer than 8 bytes")


def encode_varbytes(payload: bytes) -> bytes:
    """Length-prefixed byte array (lib0 ``writeVarUint8Array``)."""
    return encode_varuint(len(payload)) + payload


def decode_varbytes(data: bytes, pos: int, max_bytes: int) -> tuple[bytes, int]:
    """Read a length-prefixed byte array; return ``(payload, next_pos)``.

    Raises MalformedMessage when truncated; MessageTooLarge is left to the caller's limits,
    so here a declared length over ``max_bytes`` is malformed (it cannot fit the frame).
    """
    length, pos = decode_varuint(data, pos)
    if length > max_bytes or pos + length > len(data):
        raise MalformedMessage("byte array length exceeds the message")
    return data[pos : pos + length], pos + length


def encode_varstring(text: str) -> bytes:
    """Length-prefixed UTF-8 string (lib0 ``writeVarString``)."""
    return encode_varbytes(text.encode("utf-8"))


def decode_varstring(data: bytes, pos: int, max_bytes: int) -> tuple[str, int]:
    """Read a length-prefixed UTF-8 string; invalid UTF-8 is malformed."""
    raw, pos = decode_varbytes(data, pos, max_bytes)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError as exc:
        raise MalformedMessage("string is not valid UTF-8") from exc
