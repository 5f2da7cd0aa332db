"""Decoding what Redis returns, for the modules of the Redis coordinator adapter.

Redis hands back bytes; anything that cannot be read as what the adapter wrote raises
StorageCorrupted (never a default value).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from persistence.coordinator.values import echo
from persistence.errors import StorageCorrupted


def text(value: object, what: str) -> str:
    """UTF-8 text of a reply; StorageCorrupted for anything else."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            pass
    elif isinstance(value, str):
        return value
    raise StorageCorrupted(f"stored {what} is not text: {echo(value)}")


def number(value: object, what: str) -> float:
    try:
        return float(text(value, what))
    except ValueError:
        raise StorageCorrupted(f"stored {what} is not a number: {echo(value)}") from None


def section_field(section_id: str | None) -> str:
    """How a section is stored: the outline room has no id and is stored as "" (ids are
    never empty)."""
    return section_id or ""


def pairs(flat: Sequence[Any]) -> Iterator[tuple[Any, Any]]:
    """``[k1, v1, k2, v2...]`` (HGETALL from a script) as pairs."""
    return zip(flat[::2], flat[1::2], strict=True)


def key_bytes(key: object) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()
