"""Bounded JSON parsing for text a client sent (awareness states, REST bodies).

``json.loads`` recurses once per nesting level: a few thousand ``[`` raise ``RecursionError``
(a ``BaseException`` path nobody expects from a parser), and so does anything that walks
the result later (``json.dumps``, pydantic). :func:`parse_json` checks the size and the
nesting depth first, without recursing and in linear time, and only then parses.

The depth check works on the bytes, all at C speed: it drops the escaped backslashes and
quotes, splits on the remaining quotes (the odd pieces are string contents, whose brackets
are not structure), keeps only the brackets of the even pieces, and takes the maximum of
their running sum (+1 for ``[``/``{``, -1 for ``]``/``}``). Up to the first syntax error this
sees the strings exactly as the JSON scanner does, and the scanner never nests past an error,
so every level ``json.loads`` could enter is counted.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any, Final

from protocol.errors import MalformedMessage, MessageTooLarge

MAX_JSON_DEPTH: Final = 32
MAX_JSON_BYTES: Final = 1024 * 1024

_NOT_SHAPE: Final = bytes(set(range(256)) - set(b'[]{}"'))  # deleted: all but structure
# Openers become 1 and closers 255 (-1 as a signed byte); everything else is deleted first.
_SIGNS: Final = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


class MalformedJson(MalformedMessage):
    """The text is not JSON (or not UTF-8)."""


class JsonTooDeep(MalformedJson):
    """The JSON nests arrays and objects deeper than allowed."""


def check_depth(data: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise JsonTooDeep when ``data`` nests arrays and objects deeper than ``max_depth``
    (brackets inside string literals do not count). Never recurses; linear time. Validates
    nothing else."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return  # the common case: too few brackets to be too deep, whatever the strings
    if b'"' in raw:
        # Escaped backslashes first, then escaped quotes: left to right, as JSON reads them.
        shape = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_SHAPE)
        brackets = b"".join(shape.split(b'"')[::2])  # the even pieces are outside strings
    else:
        brackets = raw.translate(None, _NOT_SHAPE)
    if brackets.count(b"[") + brackets.count(b"{") <= max_depth:
        return
    signs = brackets.translate(_SIGNS)
    if b"\x01" * (max_depth + 1) in signs:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")  # the usual bomb
    depth = max(accumulate(memoryview(signs).cast("b")))
    if depth > max_depth:
        raise JsonTooDeep(f"JSON nested deeper than {max_depth} levels")


def parse_json(
    data: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES
) -> Any:
    """Parse JSON a client sent, within bounds.

    Raises MessageTooLarge when ``data`` is longer than ``max_bytes`` (bytes, or characters
    for text), JsonTooDeep past ``max_depth`` levels of arrays and objects, MalformedJson
    when it is not JSON: bytes must be UTF-8 (RFC 8259 section 8.1), and NaN and Infinity
    are not JSON either. Never raises RecursionError.
    """
    if len(data) > max_bytes:
        raise MessageTooLarge(f"JSON of {len(data)} bytes exceeds {max_bytes}")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise MalformedJson(f"not UTF-8: {exc}") from exc
    check_depth(data, max_depth)
    try:
        return _DECODER.decode(text)
    except ValueError as exc:
        raise MalformedJson(f"not JSON: {exc}") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every call: json.loads with any keyword argument builds a new one.
_DECODER: Final = json.JSONDecoder(parse_constant=_no_constant)
