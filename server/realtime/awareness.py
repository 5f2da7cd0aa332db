"""Who may publish which awareness client id, and the verified identity in every state.

y-protocols awareness is a map from client ids to JSON states, and any client can send any
client id with any state. The server narrows that (docs/protocol.md, "Awareness"):

* Every accepted state must be a JSON object within :data:`MAX_STATE_DEPTH` levels and
  :data:`MAX_STATE_BYTES`; anything else is malformed (the connection closes with 1002, or
  1009 for the size) or refused (not an object: a non-fatal error event).
* The server writes the field :data:`IDENTITY_FIELD` into every state it accepts:
  ``{"userId": ..., "name": ...}`` of the connection's verified principal. Whatever the
  client put there is replaced, so peers can trust it; everything else stays client-controlled.
* A client id belongs to the user who first published it in the room, for as long as the
  room remembers it (:class:`ClientIdOwners`), not only while that connection is open: no
  other user can take over an id whose owner disconnected.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from protocol.errors import ProtocolError
from protocol.jsontext import parse_json

if TYPE_CHECKING:
    from server.identity.authentication import Principal

IDENTITY_FIELD: Final = "collab"
MAX_STATE_DEPTH: Final = 16
MAX_STATE_BYTES: Final = 64 * 1024
# Client ids a room remembers the owner of, in all and per user (the least recently used
# are forgotten first; a user's own flood only evicts that user's ids).
MAX_REMEMBERED_IDS: Final = 4096
MAX_IDS_PER_USER: Final = 64


class AwarenessRefused(Exception):
    """A well-formed awareness entry the server will not keep nor relay (a non-fatal
    ``error`` event with ``code`` tells the client why: 4400 for a state that is not an
    object, 4403 for one claiming another user)."""

    def __init__(self, message: str, code: int = 4403) -> None:
        super().__init__(message)
        self.code = code


@lru_cache(maxsize=4096)
def _identity_json(user_id: str, name: str) -> str:
    return json.dumps({"userId": user_id, "name": name}, ensure_ascii=False, separators=(",", ":"))


def identity_json(principal: Principal | None) -> str:
    """The JSON text of the verified identity field for ``principal`` (``null`` without
    one); cached, so a cursor storm does not re-encode it."""
    if principal is None:
        return "null"
    return _identity_json(principal.user_id, principal.name or principal.email)


def _claims_other_user(user: Any, principal: Principal) -> bool:
    """Whether a state's ``user`` object names (by ``id``, ``userId`` or ``email``) a user
    other than ``principal``. A name and a colour, as y-websocket demos send, claim nothing."""
    if not isinstance(user, dict):
        return False
    for key in ("id", "userId"):
        claimed = user.get(key)
        if claimed is not None and claimed != principal.user_id:
            return True
    email = user.get("email")
    return email is not None and email != principal.email


def stamp_state(state: str, principal: Principal | None) -> str:
    """``state`` with the verified identity field set (a removal, ``null``, is returned as
    is).

    Raises MessageTooLarge past :data:`MAX_STATE_BYTES`, MalformedJson (JsonTooDeep past
    :data:`MAX_STATE_DEPTH`) for text that is not bounded JSON, AwarenessRefused for a
    state that is not a JSON object or whose ``user`` claims another user. No I/O.
    """
    value = parse_json(state, max_depth=MAX_STATE_DEPTH, max_bytes=MAX_STATE_BYTES)
    if value is None:
        return state
    if not isinstance(value, dict):
        raise AwarenessRefused("an awareness state must be a JSON object", 4400)
    if principal is not None and _claims_other_user(value.get("user"), principal):
        raise AwarenessRefused("awareness may not claim another user's identity")
    identity = identity_json(principal)
    if IDENTITY_FIELD in value:
        # A client-sent value: replaced (re-encoding also drops duplicate keys).
        value[IDENTITY_FIELD] = json.loads(identity)
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # The common case, without re-encoding: the text is a valid JSON object, so it ends
    # with "}" once trailing JSON whitespace is stripped.
    body = state.rstrip(" \t\r\n")[:-1]
    return f'{body}{"," if value else ""}"{IDENTITY_FIELD}":{identity}}}'


def identity_of_state(state: str) -> str | None:
    """The verified user id in a state this server or another node stamped (None when it
    has none). Never raises."""
    if f'"{IDENTITY_FIELD}"' not in state:
        return None
    try:
        value = parse_json(state, max_depth=MAX_STATE_DEPTH, max_bytes=MAX_STATE_BYTES)
    except ProtocolError:  # a peer node's bad state: it simply names no one
        return None
    identity = value.get(IDENTITY_FIELD) if isinstance(value, dict) else None
    user_id = identity.get("userId") if isinstance(identity, dict) else None
    return user_id if isinstance(user_id, str) else None


class ClientIdOwners:
    """Bounded memory of which user owns which awareness client id in one room.

    An id is claimed by the first user who publishes it and stays theirs until forgotten:
    the least recently used ids go first past ``max_ids``, and a user's oldest ids past
    ``max_per_user`` (so one user cycling through ids cannot push out another's).
    """

    def __init__(self, max_ids: int = MAX_REMEMBERED_IDS, max_per_user: int = MAX_IDS_PER_USER):
        self._max_ids = max_ids
        self._max_per_user = max_per_user
        self._owner: OrderedDict[int, str] = OrderedDict()
        self._by_user: dict[str, OrderedDict[int, None]] = {}

    def __len__(self) -> int:
        return len(self._owner)

    def owner(self, client_id: int) -> str | None:
        """The user who owns ``client_id``, None when no one does (or it was forgotten)."""
        return self._owner.get(client_id)

    def claim(self, client_id: int, user: str) -> None:
        """Record (or refresh) ``user`` as the owner of ``client_id``. The caller checked
        that no other user owns it."""
        ids = self._by_user.get(user)
        if ids is None:
            ids = self._by_user[user] = OrderedDict()
        if client_id in ids:
            ids.move_to_end(client_id)
            self._owner.move_to_end(client_id)
            return
        previous = self._owner.pop(client_id, None)
        if previous is not None:
            self._drop(client_id, previous)
        if len(ids) >= self._max_per_user:
            oldest, _ = ids.popitem(last=False)
            self._owner.pop(oldest, None)
        elif len(self._owner) >= self._max_ids:
            oldest, oldest_user = self._owner.popitem(last=False)
            self._drop(oldest, oldest_user)
        ids[client_id] = None
        self._by_user[user] = ids  # again: evicting the user's last other id dropped it
        self._owner[client_id] = user

    def _drop(self, client_id: int, user: str) -> None:
        ids = self._by_user.get(user)
        if ids is not None:
            ids.pop(client_id, None)
            if not ids:
                del self._by_user[user]
