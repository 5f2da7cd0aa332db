"""Which parts of an update a document still holds back, waiting for a missing dependency.

Yrs keeps the structs of an update whose dependencies have not arrived (another client's
earlier edit, the client's own earlier clock) in a pending store, and a delete set naming
items it does not know in a pending delete set; neither shows in the document's encoded
state nor in the effective update of the transaction. The server must keep such updates
itself, or an acknowledged edit would be lost with the next compaction.

The check is exact: :func:`still_pending` takes the part of the update the document's state
vector does not cover (yrs's own diff), which has structs exactly when some were not
integrated; its delete set is covered when every range lies below the state vector of its
client. The bytes come from pycrdt's own encoder, so they are well formed.
"""

from __future__ import annotations

from protocol.errors import MalformedMessage
from protocol.varint import decode_varuint


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
    furthest. Raises MalformedMessage for bytes that are not a delete set.
    """
    clients, pos = decode_varuint(data, pos)
    ends: dict[int, int] = {}
    for _ in range(min(clients, len(data))):
        client, pos = decode_varuint(data, pos)
        ranges, pos = decode_varuint(data, pos)
        if ranges > len(data):
            raise MalformedMessage("delete set claims more ranges than it has bytes")
        end = 0
        for _ in range(ranges):
            clock, pos = decode_varuint(data, pos)
            length, pos = decode_varuint(data, pos)
            end = max(end, clock + length)
        ends[client] = max(ends.get(client, 0), end)
    return ends


def still_pending(uncovered: bytes, state_vector: bytes) -> bool:
    """Whether an update's ``uncovered`` part (yrs's diff of it against ``state_vector``,
    the document's state after applying it) names anything the document does not hold.

    Raises MalformedMessage if either is not what yrs encodes.
    """
    if uncovered[:1] != b"\x00":
        return True  # struct blocks the state vector does not cover: not integrated
    ends = delete_set_ends(uncovered, 1)
    if not ends:
        return False
    clocks = decode_state_vector(state_vector)
    return any(end > clocks.get(client, 0) for client, end in ends.items())
