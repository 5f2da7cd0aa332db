"""Journal positions of :class:`persistence.rooms.service.ServiceRoomStore`: Redis stream ids
and the int ``journal_seq`` the content store keeps with a saved state.

A stream id ``"<ms>-<seq>"`` is an :data:`EntryKey` ``(ms, seq)`` here (tuples compare in
stream order). :func:`journal_seq` maps an id to ``ms << 20 | seq``: exact and
order-preserving for every id with ``ms < 2**43`` (until the year 2248) and ``seq < 2**20``
(a million entries in one millisecond), and beyond that a lower bound (the seq, then the ms,
saturate). :func:`covered_position` maps it back. A lower bound is sound both ways: a state
claimed to cover less than it does only makes ``load`` replay entries it already holds
(harmless, CRDT updates are idempotent) and the trim keep a few more.
"""

from __future__ import annotations

from typing import Final

from crdt.ids import RoomName
from persistence.coordinator.values import JournalEntry, parse_entry_id
from persistence.errors import StorageCorrupted

EntryKey = tuple[int, int]
"""A stream id as ``(ms, seq)``: tuples compare in stream order."""

SEQ_BITS: Final = 20
MS_BITS: Final = 63 - SEQ_BITS
MAX_JOURNAL_SEQ: Final = 2**63 - 1
ORIGIN: Final[EntryKey] = (0, 0)
"""Before every entry: the position of a room with no saved state."""
_SEQ_MASK: Final = (1 << SEQ_BITS) - 1


def journal_seq(entry_id: str) -> int:
    """The ``journal_seq`` saved with a state covering the entries up to ``entry_id``.

    ``ms << 20 | seq``: exact and order-preserving while ``ms < 2**43`` and ``seq < 2**20``;
    past either limit the result saturates to a lower bound (still order-preserving, no
    longer strictly), which is sound (see the module docstring). ValueError for an id that
    is not ``"<ms>-<seq>"``.
    """
    ms, seq = parse_entry_id(entry_id)
    if ms >> MS_BITS:
        return MAX_JOURNAL_SEQ
    return ms << SEQ_BITS | min(seq, _SEQ_MASK)


def covered_position(seq: int) -> EntryKey:
    """The newest stream id ``(ms, seq)`` a state saved with ``journal_seq`` ``seq`` covers.

    StorageCorrupted for a value :func:`journal_seq` cannot have produced.
    """
    if not 0 <= seq <= MAX_JOURNAL_SEQ:
        raise StorageCorrupted(f"stored journal position {seq!r} is not a journal_seq")
    return seq >> SEQ_BITS, seq & _SEQ_MASK


def entry_text(key: EntryKey) -> str:
    """The stream id ``"<ms>-<seq>"`` of ``key``."""
    return f"{key[0]}-{key[1]}"


def room_of(entry: JournalEntry) -> str:
    """The room (``D`` or ``D/S``) a journal entry belongs to."""
    return str(RoomName(entry.document_id, entry.section_id))


__all__ = [
    "MAX_JOURNAL_SEQ",
    "MS_BITS",
    "ORIGIN",
    "SEQ_BITS",
    "EntryKey",
    "covered_position",
    "entry_text",
    "journal_seq",
    "room_of",
]
