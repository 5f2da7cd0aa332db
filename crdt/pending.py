"""Which parts of an update a document still holds back, waiting for a missing dependency.

Yrs keeps the structs of an update whose dependencies have not arrived (another client's
earlier edit, the client's own earlier clock) in a pending store, and a delete set naming
items it does not know in a pending delete set; neither shows in the document's encoded
state nor in the effective update of the transaction. The server must keep such updates
itself, or an acknowledged edit would be lost with the next compaction.

The check is exact: :func:`still_pending` takes the part of the update the document's state
vector does not cover (yrs's own diff), which has structs exactly when some were not
integrated; its delete set is covered when every range lies below the state vector of its
client (both read by :mod:`protocol.yupdate`). The bytes come from pycrdt's own encoder,
so they are well formed.
"""

from __future__ import annotations

from protocol.yupdate import decode_state_vector, delete_set_ends


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
