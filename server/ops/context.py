"""The context a log line carries: request id, connection id, user, document, room, node.

Context variables, set where a request or a socket begins (the request-id middleware, the
opening of a WebSocket session) and read by the log filter of :mod:`server.ops.logs`, so
that every line logged while serving it names it. Setting them costs one ``ContextVar.set``
per request or per socket, never per frame.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from typing import Final

REQUEST_ID_HEADER: Final = "x-request-id"
MAX_REQUEST_ID: Final = 128
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=@-]{1,128}$")

request_id: ContextVar[str | None] = ContextVar("collab_request_id", default=None)
connection_id: ContextVar[str | None] = ContextVar("collab_connection_id", default=None)
user_id: ContextVar[str | None] = ContextVar("collab_user_id", default=None)
document: ContextVar[str | None] = ContextVar("collab_document", default=None)
room: ContextVar[str | None] = ContextVar("collab_room", default=None)

# The node's name, the same for every line of the process once the app is made.
_node: list[str | None] = [None]

FIELDS: Final = {
    "request_id": request_id,
    "connection_id": connection_id,
    "user_id": user_id,
    "document": document,
    "room": room,
}


def set_node(name: str) -> None:
    _node[0] = name


def node() -> str | None:
    return _node[0]


def accept_request_id(value: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a sane token (letters, digits, ``._:/+=@-``,
    at most 128 characters), else a new one: a header never makes a request fail, and a
    log line never carries a client's control characters."""
    if value is not None and _REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def current() -> dict[str, str]:
    """The context set now, without the unset fields."""
    values = {name: var.get() for name, var in FIELDS.items()}
    found = {name: value for name, value in values.items() if value is not None}
    name = _node[0]
    if name is not None:
        found["node"] = name
    return found


def bind_socket(request: str | None, connection: int | str, room_name: str) -> None:
    """Set the context of a WebSocket session being opened (in the task that opens it)."""
    request_id.set(request)
    connection_id.set(str(connection))
    room.set(room_name)
    document.set(room_name.partition("/")[0])
